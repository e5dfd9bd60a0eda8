"""Symbolic derivation: from a cell's equations to primitive forward steps and their adjoints.

Three passes, each a pure function:

1. `lift`: every activation gets an equation of its own (`f = sigmoid(f_pre)`,
   `tanh_c = tanh(c)`), so that its output is saved and its derivative can be written from it.
   A reduction's operands become symbols of their own (`<result>_in`) where they are not
   already an intermediate or a product.
2. `levels`: which matrix products and reductions must wait for which equations (GRU's
   U_h @ (r * h_prev) waits for r); the kernel runs one pointwise stage per level. A vector
   that reads a per-row scalar (a reduction's result) waits one stage more, so that the
   backward can sum its contributions to the scalar's adjoint over the units in between.
3. `adjoints`: reverse mode over the named primitive equations. The adjoint of each
   intermediate accumulates the contributions of the equations that use it, exactly as one
   derives by hand; nothing is expanded, so c_t's adjoint is computed once, not once per gate.
   A reduction's operands receive its adjoint broadcast (over the count, for a mean); a
   per-row scalar receives the sum over the units of what vectors contribute to it: an
   adjoint `d_s_each` (a vector), its reduction `d_s_sum` = sum(d_s_each), and then d_s.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .activations import Activation
from .cell import CellSpec, Equation, elementwise_size, prev_name, size_symbol
from .names import NameRegistry
from .reductions import Reduction, units, units_size
from .reductions import sum as sum_units


@dataclass(frozen=True)
class Primitive:
    """A forward equation after lifting: either `name = act(symbol)` or activation-free."""

    name: str
    expr: sympy.Expr
    doc: str
    source: str  # the equation of the cell this comes from
    state: str | None = None


@dataclass(frozen=True)
class Adjoint:
    """`name = expr`: the adjoint of the forward symbol `target` within one step."""

    target: str
    name: str
    expr: sympy.Expr
    # "" the adjoint of target; "each" what vectors contribute to a scalar target's adjoint,
    # per unit; "sum" its sum over the units (a reduction in the backward)
    kind: str = ""


class AdjointNames:
    """The names of the backward's symbols, made unique against every forward name.

    Looked up by what they are the adjoint of, never built from strings and parsed back:
    `of(s)` is the adjoint of symbol s (preferably d_s); `incoming(state)` the adjoint of a
    state's new value arriving from outside the step (the loss at t and step t + 1);
    `through_products(v)` what an intermediate v receives through the products that multiply it.
    """

    def __init__(
        self, cell: CellSpec, forward: tuple[Primitive, ...], scalars: frozenset[str] = frozenset()
    ) -> None:
        symbols = [name for name, _ in cell.kinds] + [p.name for p in cell.params]
        symbols += [p.name for p in forward] + list(cell.states)
        self._registry = NameRegistry(symbols)
        self._owner: dict[str, tuple[str, str]] = {}
        # made in a fixed order, so that generation is deterministic
        for name in sorted(set(symbols)):
            self._make("adjoint", name, f"d_{name}")
        for state in cell.states:
            self._make("incoming", state, f"d_{state}_in")
        if cell.output not in cell.states:  # an equation: its adjoint arrives from dys alone
            self._make("incoming", cell.output, f"d_{cell.output}_in")
        for operand in sorted({m.operand for m in cell.matmuls}):
            self._make("products", operand, f"d_{operand}_mm")
        for scalar in sorted(scalars):
            self._make("each", scalar, f"d_{scalar}_each")
            self._make("sum", scalar, f"d_{scalar}_sum")

    def _make(self, kind: str, symbol: str, base: str) -> None:
        name = self._registry.make((kind, symbol), base)
        self._owner[name] = (kind, symbol)

    def of(self, symbol: str) -> str:
        return self._registry[("adjoint", symbol)]

    def incoming(self, state: str) -> str:
        return self._registry[("incoming", state)]

    def through_products(self, operand: str) -> str:
        return self._registry[("products", operand)]

    def each(self, scalar: str) -> str:
        """What vectors contribute to a per-row scalar's adjoint, unit by unit."""
        return self._registry[("each", scalar)]

    def summed(self, scalar: str) -> str:
        """That contribution summed over the units."""
        return self._registry[("sum", scalar)]

    def owner(self, name: str) -> tuple[str, str] | None:
        """What a backward name stands for: ("adjoint" | "incoming" | "products" | "each" |
        "sum", symbol)."""
        return self._owner.get(name)


@dataclass(frozen=True)
class Derivation:
    """Everything the kernels compute, in the order they compute it, for one time step."""

    cell: CellSpec
    forward: tuple[Primitive, ...]
    level: dict[str, int]  # primitive or matmul name -> pointwise stage
    backward: tuple[Adjoint, ...]
    names: AdjointNames
    sizes: dict[str, str]  # size names of the forward's symbols (see unit_sizes)

    @property
    def max_level(self) -> int:
        return max(self.level.values(), default=0)

    @property
    def scalars(self) -> frozenset[str]:
        """The forward's per-row scalars (size 1): reductions and arithmetic on them only."""
        return per_row_scalars(self.sizes)

    def size(self, name: str) -> sympy.Expr:
        """Units per batch row of a forward or backward symbol: that of what an adjoint is the
        adjoint of; a sum over units is a per-row scalar, what it sums a vector."""
        owner = self.names.owner(name)
        if owner is not None:
            kind, symbol = owner
            if kind == "sum":
                return sympy.S.One
            if kind == "each":
                (each,) = (a for a in self.backward if a.name == name)
                return size_symbol(self.expr_size(each.expr))
            name = symbol
        return size_symbol(self.sizes.get(name, "H"))

    def expr_size(self, expr: sympy.Expr) -> str:
        """The size name of an expression of the step's symbols (a per-row scalar broadcasts)."""
        size = "1"
        for s in expr.free_symbols:
            if units_size(s) is None:
                size = elementwise_size(size, str(self.size(s.name))) or size
        return size

    @property
    def reductions(self) -> tuple[Primitive, ...]:
        return tuple(p for p in self.forward if isinstance(p.expr, Reduction))


def derive(cell: CellSpec) -> Derivation:
    forward = lift(cell)
    sizes = unit_sizes(cell, forward)
    scalars = per_row_scalars(sizes)
    level = levels(cell, forward, scalars)
    names = AdjointNames(cell, forward, scalars)
    backward = adjoints(cell, forward, names, sizes)
    return Derivation(cell, forward, level, backward, names, sizes)


def per_row_scalars(sizes: dict[str, str]) -> frozenset[str]:
    """The symbols of size 1 among `sizes`: reductions, and arithmetic on them only."""
    return frozenset(n for n, size in sizes.items() if size == "1")


def unit_sizes(cell: CellSpec, forward: tuple[Primitive, ...]) -> dict[str, str]:
    """The size name of every symbol of the forward: the cell's own, a reduction's 1, and a
    lifted primitive's the elementwise size of its operands (cell.elementwise_size: a per-row
    scalar broadcasts); a constant (sigmoid(0)) takes its equation's."""
    sizes = dict(cell.symbol_sizes)
    for p in forward:
        if p.name in sizes:
            continue
        if isinstance(p.expr, Reduction):
            sizes[p.name] = "1"
            continue
        size = None
        for s in sorted(p.expr.free_symbols, key=str):
            other = sizes[s.name]
            size = other if size is None else elementwise_size(size, other) or size
        sizes[p.name] = size or sizes[p.source]
    return sizes


# pass 1 ------------------------------------------------------------------------------------


def lift(cell: CellSpec) -> tuple[Primitive, ...]:
    """Give every activation call, and every compound activation argument, its own equation."""
    return _Lifter(cell).run()


class _Lifter:
    def __init__(self, cell: CellSpec) -> None:
        self.cell = cell
        self.taken = {name for name, _ in cell.kinds} | {p.name for p in cell.params}
        self.out: list[Primitive] = []

    def run(self) -> tuple[Primitive, ...]:
        for eq in self.cell.equations:
            if isinstance(eq.expr, Reduction):
                self.reduction(eq.expr, eq)
            elif isinstance(eq.expr, Activation):
                self.call(eq.expr, eq, target=eq.name)
            else:
                self.out.append(
                    Primitive(eq.name, self.inner(eq.expr, eq), eq.doc, eq.name, eq.state)
                )
        return tuple(self.out)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}{k}"
        self.taken.add(name)
        return name

    def reduction(self, call: Reduction, eq: Equation) -> None:
        """`result = mean(a, b, ...)` over intermediates and products: other operands (a state,
        a parameter, an expression) get an equation of their own."""
        intermediates = {p.name for p in self.out if p.state is None}
        intermediates |= {m.name for m in self.cell.matmuls}
        operands = []
        for arg in call.args:
            arg = self.inner(arg, eq)
            if not (isinstance(arg, sympy.Symbol) and arg.name in intermediates):
                name = self.fresh(f"{eq.name}_in")
                self.out.append(Primitive(name, arg, eq.doc, eq.name))
                arg = sympy.Symbol(name)
            operands.append(arg)
        self.out.append(Primitive(eq.name, type(call)(*operands), eq.doc, eq.name))

    def call(self, call: Activation, eq: Equation, target: str | None) -> sympy.Symbol:
        """`target = act(arg)`, with a compound argument named `<target>_pre` first."""
        (arg,) = call.args
        arg = self.inner(arg, eq)
        if not isinstance(arg, sympy.Symbol):
            pre = self.fresh(f"{target or eq.name}_pre")
            self.out.append(Primitive(pre, arg, eq.doc, eq.name))
            arg = sympy.Symbol(pre)
        if target is None:
            target = self.fresh(f"{type(call).__name__}_{arg.name}")
            self.out.append(Primitive(target, type(call)(arg), eq.doc, eq.name))
        else:
            self.out.append(Primitive(target, type(call)(arg), eq.doc, eq.name, eq.state))
        return sympy.Symbol(target)

    def inner(self, expr: sympy.Expr, eq: Equation) -> sympy.Expr:
        """Replace each activation call inside expr by the symbol of its own equation."""
        calls = sorted(expr.atoms(Activation), key=lambda c: (sympy.count_ops(c), str(c)))
        for call in calls:  # innermost first: an argument may itself contain an activation
            if call in expr.atoms(Activation):
                expr = expr.xreplace({call: self.call(call, eq, None)})
        return expr


# pass 2 ------------------------------------------------------------------------------------


def levels(
    cell: CellSpec, forward: tuple[Primitive, ...], scalars: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Stage of each primitive and product: a product or a reduction waits for its operands'
    stage, and so does a vector for the per-row scalars it reads."""
    level: dict[str, int] = {}
    matmul_of = {m.name: m for m in cell.matmuls}

    def of(symbol: str) -> int:
        if symbol in level:
            return level[symbol]
        if symbol in matmul_of:
            operand = matmul_of[symbol].operand
            level[symbol] = level[operand] + 1 if operand in level else 0
            return level[symbol]
        return 0  # input, previous state, parameter

    for prim in forward:
        level[prim.name] = max(
            (of(s.name) + _waits(prim, s.name, scalars) for s in prim.expr.free_symbols),
            default=0,
        )
    for m in cell.matmuls:
        of(m.name)
    return level


def _waits(prim: Primitive, symbol: str, scalars: frozenset[str]) -> int:
    """1 where prim's stage must follow symbol's: a reduction's operands, and a per-row scalar
    that a vector reads."""
    reduction = isinstance(prim.expr, Reduction)
    return int(reduction or (symbol in scalars and prim.name not in scalars))


# pass 3 ------------------------------------------------------------------------------------


def local_derivative(
    prim: Primitive, wrt: sympy.Symbol, sizes: dict[str, str] | None = None
) -> sympy.Expr:
    """d prim / d wrt, with an activation's derivative from its rule (codegen/activations.py),
    which reads the saved output or, for a few activations, the saved input."""
    if isinstance(prim.expr, Reduction):
        count = sympy.Add(*(units((sizes or {}).get(a.name, "H")) for a in prim.expr.args))
        return type(prim.expr).scale(count) if wrt in prim.expr.args else sympy.S.Zero
    if isinstance(prim.expr, Activation):
        (arg,) = prim.expr.args
        outer = type(prim.expr).derivative(arg, sympy.Symbol(prim.name))
        return outer * sympy.diff(arg, wrt)
    return sympy.diff(prim.expr, wrt)


def adjoints(
    cell: CellSpec,
    forward: tuple[Primitive, ...],
    names: AdjointNames,
    sizes: dict[str, str] | None = None,
) -> tuple[Adjoint, ...]:
    """Reverse-mode adjoints of one step, in evaluation order (last equation first)."""
    sizes = sizes or {}
    scalars = per_row_scalars(sizes)

    def is_vector(term: sympy.Expr) -> bool:
        """Whether a term has units (else it is a per-row scalar, broadcast)."""
        for s in term.free_symbols:
            kind, symbol = names.owner(s.name) or ("", s.name)
            if kind == "each":
                return True
            if kind != "sum" and units_size(s) is None and symbol not in scalars:
                return True
        return False

    contributions: dict[str, list[sympy.Expr]] = {}
    operands = {m.operand for m in cell.matmuls}
    out: list[Adjoint] = []

    for prim in reversed(forward):
        terms = list(contributions.pop(prim.name, []))
        if prim.state or prim.name == cell.output:
            terms.insert(0, sympy.Symbol(names.incoming(prim.state or prim.name)))
        if prim.name in operands:
            terms.insert(0, sympy.Symbol(names.through_products(prim.name)))
        if prim.name in scalars and any(is_vector(t) for t in terms):
            each = [t for t in terms if is_vector(t)]
            out.append(Adjoint(prim.name, names.each(prim.name), sympy.Add(*each), "each"))
            summed = sum_units(sympy.Symbol(names.each(prim.name)))
            out.append(Adjoint(prim.name, names.summed(prim.name), summed, "sum"))
            terms = [t for t in terms if not is_vector(t)] + [sympy.Symbol(names.summed(prim.name))]
        total = sympy.Add(*terms)
        out.append(Adjoint(prim.name, names.of(prim.name), total))
        if total == 0:
            continue
        d = sympy.Symbol(names.of(prim.name))
        for sym in sorted(prim.expr.free_symbols, key=lambda s: s.name):
            partial = local_derivative(prim, sym, sizes)
            if partial != 0:
                contributions.setdefault(sym.name, []).append(d * partial)

    # leaves: products, vector parameters and previous states, in a fixed order
    leaves = [m.name for m in cell.matmuls]
    leaves += [p.name for p in cell.params if p.kind == "vector"]
    leaves += [prev_name(s) for s in cell.states]
    leaves += [cell.input] if cell.input in contributions else []  # used elementwise (I = H)
    for leaf in leaves:
        out.append(Adjoint(leaf, names.of(leaf), sympy.Add(*contributions.pop(leaf, []))))
    assert not contributions, f"adjoints left over: {sorted(contributions)}"
    return tuple(out)
