"""The backend-neutral kernel description: what each time step computes, in which order.

A step is a sequence of matrix products (`Gemm`), reductions over units (`Reduce`) and
pointwise stages (`Block`). The forward runs level 0 products, level 0 pointwise stage, level 1
products and reductions, ...; the backward runs the reverse, with its own reductions (the sums
over units that the adjoints of per-row scalars need). Each block lists the symbols it reads
and writes; every symbol has a `Role` that tells a backend where it lives (a parameter, a saved
sequence, a buffer for one step, ...). The printers and templates in backends/ turn this into
code; nothing here knows a language.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from enum import Enum

import sympy

from .cell import CellSpec, prev_name, size_symbol
from .derive import Adjoint, AdjointNames, Derivation, derive
from .names import NameRegistry
from .reductions import Reduction
from .text import equation_text

_HIDDEN = size_symbol("H")  # the size of a block or product unless the plan says otherwise


class Role(Enum):
    INPUT = "input"  # x_t
    PARAM = "param"  # a vector parameter, indexed by the hidden unit
    STATE_PREV = "state_prev"  # previous value of a state: state0 or the state's sequence at t-1
    STATE = "state"  # new value of a state: its sequence at t
    PRODUCT = "product"  # a matrix product's result
    SAVED = "saved"  # an intermediate the forward keeps for the backward, at t
    TEMP = "temp"  # an intermediate of one step only, or a common subexpression
    ADJ_IN = "adj_in"  # adjoint of a new state arriving from the loss and the next step
    ADJ_MM = "adj_mm"  # adjoint arriving through the matrix products that use an intermediate
    ADJ = "adj"  # adjoint of an intermediate, of one step only
    ADJ_PRODUCT = "adj_product"  # adjoint of a product: feeds the backward matrix products
    ADJ_PARAM = "adj_param"  # adjoint of a vector parameter at one step: summed over batch and time
    ADJ_STATE_PREV = "adj_state_prev"  # adjoint of a previous state: carried to step t-1
    ADJ_INPUT = "adj_input"  # adjoint of a hidden-sized input used elementwise: into dxs[t]


@dataclass(frozen=True)
class Assign:
    name: str
    expr: sympy.Expr
    comment: str = ""  # the equation this line starts, if any


@dataclass(frozen=True)
class Block:
    """Elementwise assignments over (B, size); `reads` come from outside, `writes` leave it.
    A stage whose values have several sizes is one block per size, independent of each other
    (elementwise arithmetic needs equal sizes)."""

    level: int
    assignments: tuple[Assign, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    size: sympy.Expr = _HIDDEN


@dataclass(frozen=True)
class Gemm:
    """products[k] = operand @ matrices[k].T, for all k at once: one fused product.
    Every product has `size` units; the operand has `operand_size` (K)."""

    operand: str
    matrices: tuple[str, ...]
    products: tuple[str, ...]
    level: int
    operand_role: Role  # INPUT (hoisted over all steps), STATE_PREV, or SAVED
    size: sympy.Expr = _HIDDEN
    operand_size: sympy.Expr = _HIDDEN

    @property
    def width(self) -> sympy.Expr:
        """Numbers per row of the products side by side: len(products) * size."""
        return len(self.products) * self.size

    @property
    def hoisted(self) -> bool:
        return self.operand_role is Role.INPUT


@dataclass(frozen=True)
class Reduce:
    """result[b] = `kind` over the units of operands[0][b, :], operands[1][b, :], ..., stacked:
    a per-row scalar. Like a product, a stage boundary: it needs every unit of its operands.
    `count` is the number of units (len(operands) H); a mean divides by it."""

    result: str
    kind: str  # "mean" or "sum"
    operands: tuple[str, ...]
    count: sympy.Expr
    level: int


@dataclass(frozen=True)
class FusedBlock:
    """One gate's columns in inference's fused product: W x beside U h. `value` (together)
    names their sum with `bias` (or "": none folded in); apart, U h keeps a buffer of its own."""

    x_matrix: str
    x_product: str
    h_matrix: str
    h_product: str
    value: str = ""
    bias: str = ""


@dataclass(frozen=True)
class FusedProduct:
    """Inference's products of the input and of the previous state as one product per step.

    The input's matrices are stacked over the recurrent ones (rows 0..I-1, then K rows of
    h_prev), so that a step streams its weights once. A gate whose pre-activation is
    W x + U h + b (+ other terms) is `together`: the product returns b + W x + U h (its bias
    as the initial value) and the pointwise stage reads that one value. A gate that uses U h
    otherwise (GRU's n gate: W x + b + r * (U h + b')) is `apart`: the product writes W x in
    its columns and U h to a buffer of its own. Together gates come first. Planned only when
    the two groups pair gate for gate, each pair read by one assignment and nothing else."""

    input: Gemm
    recurrent: Gemm
    together: tuple[FusedBlock, ...]
    apart: tuple[FusedBlock, ...]

    @property
    def blocks(self) -> tuple[FusedBlock, ...]:
        return self.together + self.apart

    @property
    def size(self) -> sympy.Expr:
        """Units of each gate."""
        return self.input.size

    @property
    def rows(self) -> sympy.Expr:
        """Rows of the stacked weights: I + K."""
        return self.input.operand_size + self.recurrent.operand_size


Step = Gemm | Reduce | Block | FusedProduct


@dataclass(frozen=True)
class StateRecurrence:
    """How a state's adjoint crosses the boundary between steps, backwards in time.

    At step t the adjoint of the state's new value, `incoming`, is what was carried from step
    t + 1 (dL/dfinal at the last step), plus dys[t] when the state is the cell's output; the
    step computes `prev_adjoint`, the adjoint of the state's previous value, which is carried to
    step t - 1 and, after step 0, is dL/dstate0. Backends keep two buffers per state and swap.
    """

    state: str
    incoming: str
    prev_adjoint: str
    from_output: bool


@dataclass(frozen=True)
class Segment:
    """Rows of a weight gradient's operand, over all steps: dM += adjoint[rows].T @ operand[rows].

    `source` says where the operand's rows are: the inputs xs (Role.INPUT), the initial state
    (Role.STATE_PREV: the state's value before step 0), or a sequence the forward kept
    (Role.STATE or Role.SAVED, `symbol`'s (T, B, H) array). The adjoint's rows start at step
    `first_step` (a previous state at t >= 1 is the state's sequence at t - 1).
    """

    rows: sympy.Expr
    source: Role
    symbol: str
    first_step: int


@dataclass(frozen=True)
class WeightGradient:
    """dM for one matrix: the product adjoints of all steps times the operand, summed."""

    matrix: str
    product: str
    adjoint: str  # the buffer holding the product's adjoint at every step
    size: str  # the operand's length: "I", "H" or a declared size (the matrix's columns)
    segments: tuple[Segment, ...]
    rows: str = "H"  # the product's length (the matrix's rows)


@dataclass(frozen=True)
class Buffer:
    """Scratch memory a pass needs, in numbers: `kind` says what it holds, for which symbol.

    kinds: "packed" (the matrices of a fused product, side by side), "products" (their results:
    every step for the input, else one step), "step" (a value one stage hands a later one),
    "adjoints" (a product's adjoint at every step), "through_products" (an intermediate's
    adjoint through the products that multiply it, one step), "carried" (a state's adjoint
    carried between steps; two each, swapped), "loop_order" and "loop_order_step" (the
    output's sequence and one step of its adjoint in loop order, for the reverse direction),
    "input_adjoints" (the adjoint of an input used elementwise, at every step),
    "fused_products" and "apart_products" (inference's fused product: each gate's value, and
    the U h of gates kept apart).
    """

    kind: str
    symbol: str
    size: sympy.Expr
    part: str = ""  # tells apart the two buffers of a carried adjoint
    doc: str = ""


@dataclass(frozen=True)
class PackedPart:
    """A piece of the inference weights, rearranged once by `pack`: the matrices of a product
    (kind "matrices", for operand `symbol`) transposed side by side in `columns` (padded)
    columns; inference's fused product (kind "fused": the input's matrices, then the recurrent
    ones, stacked over k) and its initial values (kind "init": each gate's folded bias, "" for
    zeros); or a vector parameter."""

    kind: str
    symbol: str
    size: sympy.Expr
    matrices: tuple[str, ...] = ()
    columns: sympy.Expr = sympy.S.Zero


T, B = sympy.symbols("T B", integer=True, positive=True)
I, H = size_symbol("I"), size_symbol("H")
LOOP_STEP, LENGTH = sympy.symbols("t L", integer=True, nonnegative=True)


@dataclass(frozen=True)
class Sequencing:
    """What per-row `lengths` and `reverse` mean, for every backend and every cell.

    Row b has length L = lengths[b] (T without lengths). At loop index t (0, 1, ..., T - 1 in
    the forward; backwards in the backward) the row is `active` when t < L; an active row reads
    xs and writes ys at time step `forward_step` or, reversed, `reverse_step`, so ys stays
    aligned with xs. An inactive row computes nothing: its states are carried unchanged (`final`
    is the state after its last active step), its ys, dxs and product adjoints are zero there,
    and its state adjoints are carried unchanged backwards (dfinal reaches its last active
    step). Rows only ever stop: a row active at t is active at every earlier t, so a kernel may
    keep a row's steps in loop order, stop the loop over rows at finished ones, and turn the
    time order of xs, ys and dxs into loop order and back by reversing each row's first L steps.
    """

    loop: sympy.Symbol = LOOP_STEP
    length: sympy.Symbol = LENGTH
    active: sympy.Expr = LOOP_STEP < LENGTH
    forward_step: sympy.Expr = LOOP_STEP
    reverse_step: sympy.Expr = LENGTH - 1 - LOOP_STEP

    def step(self, reverse: bool) -> sympy.Expr:
        """The time step an active row reads and writes at loop index t."""
        return self.reverse_step if reverse else self.forward_step


SEQUENCING = Sequencing()
SIZES = {"T": T, "B": B, "I": I, "H": H}


# Inference pads every row of size H (or of a declared size such as P) to Hp (Pp), the size
# rounded up to a multiple of 16 (whole vectors of 16 floats, two of 8 doubles): the pointwise
# stages then run over whole vectors whatever the size, and the columns and lanes past it (zero
# weights, zero biases) are computed and never read.
def padded(size: sympy.Expr) -> sympy.Expr:
    """A size as inference lays rows out: H as Hp, P as Pp; I, T and B as they are."""
    return size.subs(
        {
            s: sympy.Symbol(f"{s.name}p", integer=True, positive=True)
            for s in size.free_symbols
            if s not in (I, T, B)
        }
    )


HP = padded(H)
# Inference computes the input products of this many steps at once: one product serves them
# all, and the work memory does not depend on T.
INFER_CHUNK = 16


@dataclass(frozen=True)
class Kernel:
    """One cell's kernel plan: every decision that holds for every backend, as data.

    The per-step forward and backward (matrix products and pointwise blocks, each block with the
    symbols it reads and writes), what the forward saves, how state adjoints recur between steps,
    which buffer holds each product's adjoint, the weight-gradient products, and the buffers each
    pass needs with their sizes. Backends print this; none of them decides any of it.
    """

    cell: CellSpec
    derivation: Derivation
    gemms: tuple[Gemm, ...]  # grouped by operand, in order of level
    forward: tuple[Step, ...]  # one step
    backward: tuple[Step, ...]  # one step; a Gemm here means its transpose
    saved: tuple[str, ...]  # intermediates and products kept at every step for the backward
    roles: dict[str, Role]
    series: tuple[str, ...]  # the (T, B, size) sequences in `saved`: non-output states, then saved
    recurrences: tuple[StateRecurrence, ...]
    adjoint_buffer: dict[
        str, str
    ]  # a product's adjoint -> the product adjoint whose buffer holds it
    weight_gradients: tuple[WeightGradient, ...]
    forward_buffers: tuple[Buffer, ...]
    backward_buffers: tuple[Buffer, ...]
    packed: tuple[PackedPart, ...]  # the inference weights, in order
    infer_buffers: tuple[Buffer, ...]  # scratch of the inference pass, independent of T
    infer_steps: tuple[Step, ...] = ()  # the forward's steps as inference runs them
    fused: FusedProduct | None = None  # inference's one product of x and h_prev, if planned
    sequencing: Sequencing = SEQUENCING  # what lengths and reverse mean
    sizes: dict[str, sympy.Expr] = dataclasses.field(default_factory=dict)  # every symbol's

    def size(self, name: str) -> sympy.Expr:
        """Units per batch row of any symbol of the plan: the cell's symbols, the primitives
        and common subexpressions, and every adjoint (the size of what it is the adjoint of)."""
        return self.sizes[name]

    def series_offset(self, name: str) -> sympy.Expr:
        """Where a sequence of `series` starts in `saved`: the sizes of those before it."""
        k = self.series.index(name)
        return sum((T * B * self.size(v) for v in self.series[:k]), sympy.S.Zero)

    @property
    def states(self) -> tuple[str, ...]:
        return self.cell.states

    @property
    def names(self) -> AdjointNames:
        return self.derivation.names

    @property
    def output_incoming(self) -> str | None:
        """The adjoint arriving at an output that is an equation, not a state: dys[t] alone
        (a state's arrives through `recurrences`)."""
        output = self.cell.output
        return None if output in self.cell.states else self.names.incoming(output)

    @property
    def input_elementwise(self) -> bool:
        """Whether a pointwise stage reads the input (hidden-sized, I = H): each pass then
        gathers the rows of x_t, and the backward adds the input's adjoint into dxs."""
        return any(
            self.cell.input in {s.name for a in step.assignments for s in a.expr.free_symbols}
            for step in self.forward
            if isinstance(step, Block)
        )

    def role(self, name: str) -> Role:
        return self.roles[name]

    @property
    def reductions(self) -> tuple[Reduce, ...]:
        """The forward's and the backward's reductions."""
        return tuple(s for s in self.forward + self.backward if isinstance(s, Reduce))

    @property
    def functions(self) -> set[str]:
        """The activations and indicators the kernels call, by name."""
        return _functions(self.forward + self.backward)

    @property
    def forward_functions(self) -> set[str]:
        """The activations the forward pass (and so inference) calls, by name."""
        return _functions(self.forward)

    @property
    def saved_size(self) -> sympy.Expr:
        """Numbers the forward keeps for the backward, besides ys."""
        return sum((T * B * self.size(v) for v in self.series), sympy.S.Zero)

    @property
    def forward_work_size(self) -> sympy.Expr:
        """Scratch numbers the forward needs."""
        return sum((b.size for b in self.forward_buffers), sympy.S.Zero)

    @property
    def backward_work_size(self) -> sympy.Expr:
        """Scratch numbers the backward needs."""
        return sum((b.size for b in self.backward_buffers), sympy.S.Zero)

    def step_values(self, steps: tuple[Step, ...]) -> list[str]:
        """Values one block or reduction of a step hands to a later one of the same step."""
        out = []
        for k, step in enumerate(steps):
            if isinstance(step, Block):
                out += [n for n in step.writes if self.role(n) in (Role.TEMP, Role.ADJ)]
            elif (
                isinstance(step, Reduce)
                and self.role(step.result) in (Role.TEMP, Role.ADJ)
                and any(step.result in _reads(later) for later in steps[k + 1 :])
            ):
                out.append(step.result)
        return out

    @property
    def infer_step_values(self) -> list[str]:
        """Values of one inference step that a later stage reads or multiplies: what the
        forward would read back from `saved`, inference keeps for the step only."""
        out = []
        for k, step in enumerate(self.infer_steps):
            if not isinstance(step, Block):
                continue
            later: set[str] = set()
            for other in self.infer_steps[k + 1 :]:
                later |= _reads(other)
            out += [
                a.name
                for a in step.assignments
                if (a.name in later or a.name == self.cell.output)  # ys copies the output
                and self.role(a.name) in (Role.SAVED, Role.TEMP)
            ]
        for k, step in enumerate(self.infer_steps):  # the reductions' results a later stage reads
            if isinstance(step, Reduce) and any(
                step.result in _reads(other) for other in self.infer_steps[k + 1 :]
            ):
                out.append(step.result)
        return out

    @property
    def infer_in_place(self) -> bool:
        """Whether inference may write each state's new value over its old one: every stage
        that reads a state's old value runs no later than the block that writes the new one,
        which reads it unit by unit before writing. (A block's state writes come after its
        assignments; a later stage or a reduction over units would read overwritten values.)"""
        for state in self.states:
            writer = [
                k
                for k, step in enumerate(self.infer_steps)
                if isinstance(step, Block) and any(a.name == state for a in step.assignments)
            ]
            readers = [k for k, s in enumerate(self.infer_steps) if prev_name(state) in _reads(s)]
            if len(writer) != 1 or any(k > writer[0] for k in readers):
                return False
        return True

    @property
    def packed_size(self) -> sympy.Expr:
        return sum((p.size for p in self.packed), sympy.S.Zero)

    @property
    def infer_work_size(self) -> sympy.Expr:
        return sum((b.size for b in self.infer_buffers), sympy.S.Zero)

    @property
    def adjoint_buffers(self) -> list[str]:
        """The product adjoints that own a buffer, in order."""
        return list(dict.fromkeys(self.adjoint_buffer.values()))


def _functions(steps: tuple) -> set[str]:
    """The functions the blocks among `steps` call, by name."""
    used: set[str] = set()
    for step in steps:
        if isinstance(step, Block):
            for a in step.assignments:
                used |= {type(f).__name__ for f in a.expr.atoms(sympy.Function)}
    return used


def adjoint_copies(kernel: Kernel) -> dict[str, str]:
    """Product adjoints that are plain copies of another value: `d_W_f_x = d_f_pre` gives
    {"d_W_f_x": "d_f_pre"}. Products whose adjoints copy the same value can share one buffer
    (the LSTM's W_f x and U_f h_prev both receive d_f_pre)."""
    return _adjoint_copies(kernel.backward, kernel.roles)


def _adjoint_copies(backward, roles: dict[str, Role]) -> dict[str, str]:
    out = {}
    for step in backward:
        if isinstance(step, Block):
            for a in step.assignments:
                copy = isinstance(a.expr, sympy.Symbol)
                if copy and roles.get(a.name) is Role.ADJ_PRODUCT:
                    out[a.name] = a.expr.name
    return out


def build_kernel(cell: CellSpec, derivation: Derivation | None = None) -> Kernel:
    """Schedule a derivation into per-step forward and backward sequences."""
    d = derivation or derive(cell)
    sizes = _sizes(cell, d)
    gemms = _group_products(cell, d, sizes)
    saved = _saved(cell, d, gemms)
    roles = _roles(cell, d, saved)

    forward: list[Step] = []
    reductions = _forward_reductions(d)
    for level in range(d.max_level + 1):
        forward += [g for g in gemms if g.level == level and not g.hoisted]
        forward += [r for r in reductions if r.level == level]
        forward += _forward_blocks(cell, d, level, sizes)
    backward_blocks, sums = _backward_blocks(cell, d, sizes)
    backward: list[Step] = []
    for level in reversed(range(d.max_level + 1)):
        backward += backward_blocks[level]
        backward += [g for g in gemms if g.level == level]
        backward += [r for r in sums if r.level == level]
    taken = set(roles) | {name for name, _ in cell.kinds}
    forward = _with_cse(forward, roles, taken, sizes)
    backward = _with_cse(backward, roles, taken, sizes)
    forward = _with_reads_and_writes(forward, roles)
    backward = _with_reads_and_writes(_without_unread(backward, roles), roles)
    adjoint_buffer = _adjoint_buffers(gemms, d.names, _adjoint_copies(backward, roles))
    taken |= {a.name for s in forward + backward if isinstance(s, Block) for a in s.assignments}
    fused, infer_steps = _fused_product(forward, gemms, roles, sizes, taken)
    plan = Kernel(
        cell, d, tuple(gemms), forward, backward, saved, roles,
        series=tuple(s for s in cell.states if s != cell.output)
        + tuple(v for v in saved if v != cell.output),
        recurrences=tuple(
            StateRecurrence(s, d.names.incoming(s), d.names.of(prev_name(s)), s == cell.output)
            for s in cell.states
        ),
        adjoint_buffer=adjoint_buffer,
        weight_gradients=_weight_gradients(cell, gemms, d.names, adjoint_buffer, saved),
        forward_buffers=(), backward_buffers=(), packed=(), infer_buffers=(), sizes=sizes,
        infer_steps=infer_steps, fused=fused,
    )  # fmt: skip
    return dataclasses.replace(
        plan,
        forward_buffers=_forward_buffers(plan),
        backward_buffers=_backward_buffers(plan),
        packed=_packed(plan),
        infer_buffers=_infer_buffers(plan),
    )


def _fused_product(
    forward: tuple[Step, ...], gemms: list[Gemm], roles: dict, sizes: dict, taken: set[str]
) -> tuple[FusedProduct | None, tuple[Step, ...]]:
    """Inference's steps: the forward's, with the input's products and the first recurrent
    ones as one FusedProduct where they pair gate for gate (see FusedProduct), the pointwise
    stages reading each together gate's sum; otherwise the forward's steps unchanged."""
    inputs = [g for g in gemms if g.hoisted]
    first = forward[0] if forward else None
    if len(inputs) != 1 or not isinstance(first, Gemm):
        return None, forward
    gx, gh = inputs[0], first
    if gh.operand_role is not Role.STATE_PREV or gx.size != gh.size:
        return None, forward
    if len(gx.products) != len(gh.products):
        return None, forward
    readers: dict[str, list[tuple[int, int]]] = {p: [] for p in gx.products + gh.products}
    for i, step in enumerate(forward):
        if not isinstance(step, Block):
            if _reads(step) & readers.keys():  # multiplied or reduced: not a gate's sum
                return None, forward
            continue
        for j, a in enumerate(step.assignments):
            for name in {sym.name for sym in a.expr.free_symbols} & readers.keys():
                readers[name].append((i, j))
    if any(len(r) != 1 for r in readers.values()):
        return None, forward
    h_of = {readers[p][0]: (m, p) for m, p in zip(gh.matrices, gh.products, strict=True)}
    if len(h_of) != len(gh.products):
        return None, forward
    names = NameRegistry(taken)
    together, apart, rewrites = [], [], {}
    for x_matrix, x_product in zip(gx.matrices, gx.products, strict=True):
        at = readers[x_product][0]
        if at not in h_of:
            return None, forward
        h_matrix, h_product = h_of[at]
        a = forward[at[0]].assignments[at[1]]
        terms = list(sympy.Add.make_args(a.expr))
        product_terms = [t for t in terms if getattr(t, "name", None) in (x_product, h_product)]
        if len(product_terms) != 2:
            apart.append(FusedBlock(x_matrix, x_product, h_matrix, h_product))
            continue
        biases = [
            t for t in terms
            if roles.get(getattr(t, "name", None)) is Role.PARAM and sizes[t.name] == gx.size
        ]  # fmt: skip
        bias = biases[0] if len(biases) == 1 else None
        value = names.make(("fused", a.name), f"{a.name}_sum")
        roles[value], sizes[value] = Role.PRODUCT, gx.size
        rest = [t for t in terms if t not in product_terms and t is not bias]
        rewrites[at] = sympy.Add(sympy.Symbol(value), *rest)
        together.append(
            FusedBlock(x_matrix, x_product, h_matrix, h_product, value, bias.name if bias else "")
        )
    fused = FusedProduct(gx, gh, tuple(together), tuple(apart))
    steps: list[Step] = [fused]
    for i, step in enumerate(forward[1:], start=1):
        if isinstance(step, Block):
            assigns = tuple(
                dataclasses.replace(a, expr=rewrites.get((i, j), a.expr))
                for j, a in enumerate(step.assignments)
            )
            step = dataclasses.replace(step, assignments=assigns)
        steps.append(step)
    return fused, _with_reads_and_writes(steps, roles)


def _sizes(cell: CellSpec, d: Derivation) -> dict[str, sympy.Expr]:
    """The size of every symbol: the cell's, each primitive's (that of its operands), and each
    adjoint's (that of what it is the adjoint of)."""
    sizes = {name: cell.size(name) for name, _ in cell.symbol_sizes}
    for p in d.forward:  # with a reduction's 1 and broadcasting (derive.unit_sizes)
        sizes[p.name] = d.size(p.name)
    for name in list(sizes):
        sizes[d.names.of(name)] = sizes[name]
    for adj in d.backward:  # a scalar's adjoint from vectors (a vector) and its sum (a scalar)
        if adj.kind:
            sizes[adj.name] = d.size(adj.name)
    for s in cell.states:
        sizes[d.names.incoming(s)] = sizes[s]
    for m in cell.matmuls:
        sizes[d.names.through_products(m.operand)] = sizes[m.operand]
    return sizes


def _by_size(level: int, assigns: list[Assign], sizes: dict[str, sympy.Expr]) -> list[Block]:
    """One block per size, in order of first appearance: values of different sizes do not
    combine elementwise, so the blocks of one stage are independent."""
    groups: dict[sympy.Expr, list[Assign]] = {}
    for a in assigns:
        groups.setdefault(sizes[a.name], []).append(a)
    if not groups:
        return [Block(level, (), (), ())]
    return [Block(level, tuple(a), (), (), size) for size, a in groups.items()]


def _with_cse(steps: list, roles: dict[str, Role], taken: set[str], sizes: dict) -> list:
    """Common subexpressions of each block; a stage's further blocks take their own prefix."""
    out, seen = [], {}
    for step in steps:
        if isinstance(step, Block):
            k = seen[step.level] = seen.get(step.level, -1) + 1
            step = _cse(step, roles, taken, sizes, k)
        out.append(step)
    return out


def _adjoint_buffers(
    gemms: list[Gemm], names: AdjointNames, copies: dict[str, str]
) -> dict[str, str]:
    """Where each product's adjoint lives: adjoints that copy one value share one buffer."""
    first: dict[str, str] = {}
    owner: dict[str, str] = {}
    for g in gemms:
        for p in g.products:
            d = names.of(p)
            source = copies.get(d)
            if source is not None and source in first:
                owner[d] = first[source]
            else:
                owner[d] = d
                if source is not None:
                    first[source] = d
    return owner


def _weight_gradients(
    cell: CellSpec,
    gemms: list[Gemm],
    names: AdjointNames,
    adjoint_buffer: dict[str, str],
    saved: tuple[str, ...],
) -> tuple[WeightGradient, ...]:
    """One product over all steps per matrix; a previous state splits into step 0 and the rest."""
    state_of_prev = {prev_name(s): s for s in cell.states}
    out = []
    for g in gemms:
        if g.operand_role is Role.INPUT:
            segments = (Segment(T * B, Role.INPUT, g.operand, 0),)
        elif g.operand_role is Role.STATE_PREV:
            state = state_of_prev[g.operand]
            segments = (
                Segment(B, Role.STATE_PREV, state, 0),
                Segment((T - 1) * B, Role.STATE, state, 1),
            )
        else:
            role = Role.STATE if g.operand in cell.states else Role.SAVED
            assert g.operand in saved or role is Role.STATE, g.operand
            segments = (Segment(T * B, role, g.operand, 0),)
        for m, p in zip(g.matrices, g.products, strict=True):
            size = "I" if g.hoisted else str(g.operand_size)  # xs's rows, also when I = H
            rows = str(g.size)
            out.append(WeightGradient(m, p, adjoint_buffer[names.of(p)], size, segments, rows))
    return tuple(out)


def _forward_buffers(plan: Kernel) -> tuple[Buffer, ...]:
    out = []
    for g in plan.gemms:
        G, K, S = len(g.products), g.operand_size, g.size
        doc = f"{', '.join(g.matrices)} transposed side by side, ({K}, {G} {S})"
        out.append(Buffer("packed", g.operand, K * g.width, doc=doc))
    for g in plan.gemms:
        G, S, products = len(g.products), g.size, ", ".join(g.products)
        doc = (
            f"{products} at every step, (T, B, {G} {S})"
            if g.hoisted
            else (f"{products} of one step, (B, {G} {S})")
        )
        out.append(Buffer("products", g.operand, (T * B if g.hoisted else B) * g.width, doc=doc))
    out += [
        Buffer("step", v, B * plan.size(v), doc=f"{v} of one step, for a later stage")
        for v in plan.step_values(plan.forward)
    ]
    return tuple(out + _input_step(plan))


def _input_step(plan: Kernel, infer: bool = False) -> list[Buffer]:
    """The rows of x_t, gathered at each step for the pointwise stages that read the input
    (in inference, each row padded)."""
    x = plan.cell.input
    if not plan.input_elementwise:
        return []
    size = padded(plan.size(x)) if infer else plan.size(x)
    return [Buffer("step", x, B * size, doc=f"{x} of one step, each row's")]


def _backward_buffers(plan: Kernel) -> tuple[Buffer, ...]:
    output = plan.cell.output
    Y = plan.size(output)
    out = [  # reversed: ys and dys of time order read in loop order (Sequencing)
        Buffer("loop_order", output, T * B * Y, doc=f"ys in loop order, (T, B, {Y}), reversed"),
        Buffer("loop_order_step", output, B * Y, doc="dys of one loop step, reversed"),
    ]
    out += [
        Buffer(
            "adjoints", d, T * B * plan.size(d), doc=f"{d} at every step, (T, B, {plan.size(d)})"
        )
        for d in plan.adjoint_buffers
    ]
    for g in plan.gemms:
        if g.operand_role is Role.SAVED:
            d = plan.names.through_products(g.operand)
            doc = f"the adjoint of {g.operand} through its products, one step"
            out.append(Buffer("through_products", d, B * plan.size(d), doc=doc))
    out += [
        Buffer("step", v, B * plan.size(v), doc=f"{v} of one step, for a later stage")
        for v in plan.step_values(plan.backward)
    ]
    out += _input_step(plan)
    d_x = plan.names.of(plan.cell.input)
    if plan.input_elementwise:
        doc = f"{d_x} (elementwise) at every step, added to dxs"
        out.append(Buffer("input_adjoints", d_x, T * B * plan.size(d_x), doc=doc))
    for r in plan.recurrences:
        for part in "ab":
            doc = f"the adjoint of {r.state} carried from step to step ({part})"
            out.append(Buffer("carried", r.state, B * plan.size(r.state), part, doc))
    return tuple(out)


def _group_products(cell: CellSpec, d: Derivation, sizes: dict) -> list[Gemm]:
    """One fused product per (level, operand): all the gates that multiply h_prev together."""
    groups: dict[tuple[int, str, sympy.Expr], list] = {}
    for m in cell.matmuls:
        groups.setdefault((d.level[m.name], m.operand, sizes[m.name]), []).append(m)
    out = []
    for (level, operand, size), ms in groups.items():
        assert sum(key[1] == operand for key in groups) == 1, operand  # cell.py refuses it
        kind = cell.kind(operand)
        role = {"input": Role.INPUT, "state_prev": Role.STATE_PREV}.get(kind, Role.SAVED)
        out.append(
            Gemm(
                operand,
                tuple(m.matrix for m in ms),
                tuple(m.name for m in ms),
                level,
                role,
                size,
                sizes[operand],
            )
        )
    return sorted(out, key=lambda g: (g.level, not g.hoisted))


def _saved(cell: CellSpec, d: Derivation, gemms: list[Gemm]) -> tuple[str, ...]:
    """Forward values the backward reads, besides states (whose sequences are always kept)."""
    needed: set[str] = set()
    for adj in d.backward:
        needed |= {s.name for s in adj.expr.free_symbols}
    needed |= {g.operand for g in gemms}  # weight gradients multiply by the operand
    needed.add(cell.output)  # an output equation is kept in ys
    keep = [p.name for p in d.forward if p.state is None and p.name in needed]
    keep += [m.name for m in cell.matmuls if m.name in needed]
    return tuple(keep)


def _roles(cell: CellSpec, d: Derivation, saved: tuple[str, ...]) -> dict[str, Role]:
    adjoint = d.names.of
    roles: dict[str, Role] = {cell.input: Role.INPUT}
    for p in cell.params:
        if p.kind == "vector":
            roles[p.name] = Role.PARAM
            roles[adjoint(p.name)] = Role.ADJ_PARAM
    for s in cell.states:
        roles[s] = Role.STATE
        roles[prev_name(s)] = Role.STATE_PREV
        roles[d.names.incoming(s)] = Role.ADJ_IN
        roles[adjoint(s)] = Role.ADJ
        roles[adjoint(prev_name(s))] = Role.ADJ_STATE_PREV
    if cell.output not in cell.states:
        roles[d.names.incoming(cell.output)] = Role.ADJ_IN
    roles[adjoint(cell.input)] = Role.ADJ_INPUT
    for m in cell.matmuls:
        roles[m.name] = Role.PRODUCT
        roles[adjoint(m.name)] = Role.ADJ_PRODUCT
        roles[d.names.through_products(m.operand)] = Role.ADJ_MM
    for p in d.forward:
        if p.state is None:
            roles[p.name] = Role.SAVED if p.name in saved else Role.TEMP
            roles[adjoint(p.name)] = Role.ADJ
    for scalar in sorted(d.scalars):  # a per-row scalar's adjoint from vectors, and its sum
        roles[d.names.each(scalar)] = Role.ADJ
        roles[d.names.summed(scalar)] = Role.ADJ
    return roles


def _forward_reductions(d: Derivation) -> list[Reduce]:
    out = []
    for p in d.reductions:
        operands = tuple(a.name for a in p.expr.args)
        count = sum((d.size(a) for a in operands), sympy.S.Zero)
        out.append(Reduce(p.name, type(p.expr).__name__, operands, count, d.level[p.name]))
    return out


def _forward_blocks(cell: CellSpec, d: Derivation, level: int, sizes: dict) -> list[Block]:
    equations = {eq.name: eq for eq in cell.equations}
    assigns, commented = [], set()
    for p in d.forward:
        if d.level[p.name] != level or isinstance(p.expr, Reduction):
            continue
        comment = ""
        if p.source not in commented:
            commented.add(p.source)
            comment = equation_text(cell, equations[p.source])
        assigns.append(Assign(p.name, p.expr, comment))
    return _by_size(level, assigns, sizes)


def _backward_blocks(
    cell: CellSpec, d: Derivation, sizes: dict
) -> tuple[dict[int, list[Block]], list[Reduce]]:
    """Place each adjoint in the stage of its forward symbol, leaves with their last reader; a
    per-row scalar's sum over units runs after the stage above it, whose vectors read it."""
    docs = {eq.name: eq.doc for eq in cell.equations}
    sources = {p.name: p.source for p in d.forward}
    level_of: dict[str, int] = {}
    per_level: dict[int, list[Assign]] = {lv: [] for lv in range(d.max_level + 1)}
    sums: list[Reduce] = []
    for adj in d.backward:
        if adj.kind == "sum":
            (each,) = (a.name for a in adj.expr.args)
            level = d.level[adj.target] + 1
            sums.append(Reduce(adj.name, "sum", (each,), d.size(each), level))
            level_of[adj.name] = level
            continue
        if adj.kind == "each":
            level = d.level[adj.target] + 1
        elif adj.target in d.level:
            level = d.level[adj.target]
        else:  # a parameter or a previous state: once every adjoint it reads exists
            reads = [level_of[s.name] for s in adj.expr.free_symbols if s.name in level_of]
            level = min(reads, default=0)
        level_of[adj.name] = level
        if adj.expr == 0 and adj.target not in d.level:
            continue
        per_level[level].append(Assign(adj.name, adj.expr, _adjoint_comment(adj, sources, docs)))
    return {lv: _by_size(lv, a, sizes) for lv, a in per_level.items()}, sums


def _cse(
    block: Block, roles: dict[str, Role], taken: set[str], sizes: dict, part: int = 0
) -> Block:
    """Common subexpressions of a block as `cse<k>` temporaries, each placed before first use."""
    prefix = f"cse{block.level}_" if block.level else "cse"
    prefix = f"{prefix.rstrip('_')}s{part}_" if part else prefix
    exprs = [a.expr for a in block.assignments]
    fresh = (sympy.Symbol(f"{prefix}{k}") for k in itertools.count() if f"{prefix}{k}" not in taken)
    replacements, reduced = sympy.cse(exprs, symbols=fresh, optimizations=None, order="none")
    if not replacements:
        return block
    # a temporary goes right before the first assignment that needs it, directly or not
    uses = [{s.name for s in e.free_symbols} for e in reduced]
    first_use: dict[str, int] = {}
    for sym, _ in reversed(replacements):
        consumers = [k for k, u in enumerate(uses) if sym.name in u]
        consumers += [first_use[t.name] for t, e in replacements if sym in e.free_symbols]
        first_use[sym.name] = min(consumers)
    assigns: list[Assign] = []
    for k, (original, expr) in enumerate(zip(block.assignments, reduced, strict=True)):
        for sym, value in replacements:
            if first_use[sym.name] == k:
                roles[sym.name] = Role.TEMP
                sizes[sym.name] = block.size
                assigns.append(Assign(sym.name, value, original.comment))
                original = Assign(original.name, original.expr, "")
        assigns.append(Assign(original.name, expr, original.comment))
    return Block(block.level, tuple(assigns), block.reads, block.writes, block.size)


def _reads(step: Step) -> set[str]:
    """The symbols a step reads."""
    if isinstance(step, Gemm):
        return {step.operand}
    if isinstance(step, FusedProduct):
        return {step.input.operand, step.recurrent.operand}
    if isinstance(step, Reduce):
        return set(step.operands)
    return {s.name for a in step.assignments for s in a.expr.free_symbols}


def _without_unread(steps: list[Step], roles: dict[str, Role]) -> list[Step]:
    """Drop the backward's adjoints that nothing reads (that of an activation of a constant,
    sigmoid(h_prev - h_prev)), until none is left: C would reject an unused variable."""
    local = {Role.ADJ, Role.TEMP, Role.ADJ_IN}
    while True:
        read: set[str] = set()
        for step in steps:
            read |= _reads(step)
        unread = {
            a.name
            for step in steps
            if isinstance(step, Block)
            for a in step.assignments
            if a.name not in read and roles.get(a.name) in local
        }
        if not unread:
            return steps
        steps = [
            dataclasses.replace(s, assignments=tuple(a for a in s.assignments
                                                     if a.name not in unread))
            if isinstance(s, Block) else s
            for s in steps
        ]  # fmt: skip


def _adjoint_comment(adj: Adjoint, sources: dict[str, str], docs: dict[str, str]) -> str:
    if sources.get(adj.target) == adj.target and docs.get(adj.target):
        return f"adjoint of {adj.target} ({docs[adj.target]})"
    return ""


def _with_reads_and_writes(steps: list[Step], roles: dict[str, Role]) -> tuple:
    """Fill in each block's reads (defined elsewhere) and writes (used elsewhere or kept)."""
    kept = {Role.SAVED, Role.STATE, Role.PRODUCT, Role.ADJ_PRODUCT, Role.ADJ_PARAM}
    kept |= {Role.ADJ_STATE_PREV, Role.ADJ_INPUT}
    out: list[Step] = []
    for k, step in enumerate(steps):
        if not isinstance(step, Block):
            out.append(step)
            continue
        defined = {a.name for a in step.assignments}
        reads: set[str] = set()
        for a in step.assignments:
            reads |= {s.name for s in a.expr.free_symbols if s.name not in defined}
        used_later: set[str] = set()
        for later in steps[k + 1 :]:
            used_later |= _reads(later)
        writes = [
            a.name for a in step.assignments if a.name in used_later or roles.get(a.name) in kept
        ]
        out.append(dataclasses.replace(step, reads=tuple(sorted(reads)), writes=tuple(writes)))
    return tuple(out)


def _packed(plan: Kernel) -> tuple[PackedPart, ...]:
    """The inference weights: each product's matrices transposed side by side, so that a
    product runs with unit stride (the fused product's stacked, with its initial values), then
    the vector parameters."""
    f = plan.fused
    out = []
    if f:
        columns = padded(len(f.blocks) * f.size)
        matrices = tuple(b.x_matrix for b in f.blocks) + tuple(b.h_matrix for b in f.blocks)
        out.append(PackedPart("fused", "", f.rows * columns, matrices, columns))
        biases = tuple(b.bias for b in f.blocks)
        out.append(PackedPart("init", "", columns, biases, columns))
    out += [
        PackedPart("matrices", g.operand, g.operand_size * padded(g.width), g.matrices,
                   padded(g.width))
        for g in plan.gemms
        if not (f and g in (f.input, f.recurrent))
    ]  # fmt: skip
    read: set[str] = set()  # a bias folded into the fused product's initial values is not
    for step in plan.infer_steps:
        read |= _reads(step)
    vectors = [p.name for p in plan.cell.params if p.kind == "vector" and p.name in read]
    out += [PackedPart("vector", p, padded(plan.size(p))) for p in vectors]
    return tuple(out)


def _infer_buffers(plan: Kernel) -> tuple[Buffer, ...]:
    """Inference keeps nothing between steps but the states: the products of a step (the input
    products of INFER_CHUNK steps), values handed between stages, and each state's current and
    new value (swapped after a step); every row padded to Hp."""
    out = []
    f = plan.fused
    if f:
        values = ", ".join(b.value or b.x_product for b in f.blocks)
        doc = f"{values} of up to {INFER_CHUNK} steps"
        rows = INFER_CHUNK * B * padded(len(f.blocks) * f.size)
        out.append(Buffer("fused_products", "", rows, doc=doc))
        if f.apart:
            doc = f"{', '.join(b.h_product for b in f.apart)}, one step"
            out.append(Buffer("apart_products", "", B * padded(len(f.apart) * f.size), doc=doc))
    for g in plan.gemms:
        if f and g in (f.input, f.recurrent):
            continue
        products = ", ".join(g.products)
        rows = INFER_CHUNK * B if g.hoisted else B
        doc = f"{products} of up to {INFER_CHUNK} steps" if g.hoisted else f"{products}, one step"
        out.append(Buffer("products", g.operand, rows * padded(g.width), doc=doc))
    out += [
        Buffer("step", v, B * padded(plan.size(v)), doc=f"{v} of one step, for a later stage")
        for v in plan.infer_step_values
    ]
    for s in plan.cell.states:
        Sp = padded(plan.size(s))
        out.append(Buffer("state", s, B * Sp, doc=f"{s} before the step"))
        out.append(Buffer("new_state", s, B * Sp, doc=f"the new {s} of one step"))
    return tuple(out + _input_step(plan, infer=True))
