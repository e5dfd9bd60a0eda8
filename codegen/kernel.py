"""The backend-neutral kernel description: what each time step computes, in which order.

A step is a sequence of matrix products (`Gemm`) and pointwise stages (`Block`). The forward
runs level 0 products, level 0 pointwise stage, level 1 products, ...; the backward runs the
reverse. Each block lists the symbols it reads and writes; every symbol has a `Role` that tells a
backend where it lives (a parameter, a saved sequence, a buffer for one step, ...). The printers
and templates in backends/ turn this into code; nothing here knows a language.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import sympy

from .cell import CellSpec, prev_name
from .derive import Adjoint, Derivation, adjoint_name, derive, gemm_name, incoming_name
from .text import equation_text


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


@dataclass(frozen=True)
class Assign:
    name: str
    expr: sympy.Expr
    comment: str = ""  # the equation this line starts, if any


@dataclass(frozen=True)
class Block:
    """Elementwise assignments over (B, H); `reads` come from outside, `writes` leave it."""

    level: int
    assignments: tuple[Assign, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class Gemm:
    """products[k] = operand @ matrices[k].T, for all k at once: one fused product."""

    operand: str
    matrices: tuple[str, ...]
    products: tuple[str, ...]
    level: int
    operand_role: Role  # INPUT (hoisted over all steps), STATE_PREV, or SAVED

    @property
    def hoisted(self) -> bool:
        return self.operand_role is Role.INPUT


@dataclass(frozen=True)
class Kernel:
    """One cell's kernels: the per-step forward and backward, and what connects them."""

    cell: CellSpec
    derivation: Derivation
    gemms: tuple[Gemm, ...]  # grouped by operand, in order of level
    forward: tuple[Gemm | Block, ...]  # one step
    backward: tuple[Gemm | Block, ...]  # one step; a Gemm here means its transpose
    saved: tuple[str, ...]  # intermediates and products kept at every step for the backward
    roles: dict[str, Role]

    @property
    def states(self) -> tuple[str, ...]:
        return self.cell.states

    def role(self, name: str) -> Role:
        return self.roles[name]

    @property
    def functions(self) -> set[str]:
        """The activations and indicators the kernels call, by name."""
        used: set[str] = set()
        for step in self.forward + self.backward:
            if isinstance(step, Block):
                for a in step.assignments:
                    used |= {type(f).__name__ for f in a.expr.atoms(sympy.Function)}
        return used


def adjoint_copies(kernel: Kernel) -> dict[str, str]:
    """Product adjoints that are plain copies of another value: `d_W_f_x = d_f_pre` gives
    {"d_W_f_x": "d_f_pre"}. Products whose adjoints copy the same value can share one buffer
    (the LSTM's W_f x and U_f h_prev both receive d_f_pre)."""
    out = {}
    for step in kernel.backward:
        if isinstance(step, Block):
            for a in step.assignments:
                copy = isinstance(a.expr, sympy.Symbol)
                if copy and kernel.roles.get(a.name) is Role.ADJ_PRODUCT:
                    out[a.name] = a.expr.name
    return out


def build_kernel(cell: CellSpec, derivation: Derivation | None = None) -> Kernel:
    """Schedule a derivation into per-step forward and backward sequences."""
    d = derivation or derive(cell)
    gemms = _group_products(cell, d)
    saved = _saved(cell, d, gemms)
    roles = _roles(cell, d, saved)

    forward: list[Gemm | Block] = []
    for level in range(d.max_level + 1):
        forward += [g for g in gemms if g.level == level and not g.hoisted]
        forward.append(_forward_block(cell, d, level))
    backward_blocks = _backward_blocks(cell, d)
    backward: list[Gemm | Block] = []
    for level in reversed(range(d.max_level + 1)):
        backward.append(backward_blocks[level])
        backward += [g for g in gemms if g.level == level]
    forward = [_cse(s, roles) if isinstance(s, Block) else s for s in forward]
    backward = [_cse(s, roles) if isinstance(s, Block) else s for s in backward]
    steps = _with_reads_and_writes(forward, roles), _with_reads_and_writes(backward, roles)
    return Kernel(cell, d, tuple(gemms), steps[0], steps[1], saved, roles)


def _group_products(cell: CellSpec, d: Derivation) -> list[Gemm]:
    """One fused product per (level, operand): all the gates that multiply h_prev together."""
    groups: dict[tuple[int, str], list] = {}
    for m in cell.matmuls:
        groups.setdefault((d.level[m.name], m.operand), []).append(m)
    out = []
    for (level, operand), ms in groups.items():
        kind = cell.kind(operand)
        role = {"input": Role.INPUT, "state_prev": Role.STATE_PREV}.get(kind, Role.SAVED)
        out.append(
            Gemm(
                operand,
                tuple(m.matrix for m in ms),
                tuple(m.name for m in ms),
                level,
                role,
            )
        )
    return sorted(out, key=lambda g: (g.level, not g.hoisted))


def _saved(cell: CellSpec, d: Derivation, gemms: list[Gemm]) -> tuple[str, ...]:
    """Forward values the backward reads, besides states (whose sequences are always kept)."""
    needed: set[str] = set()
    for adj in d.backward:
        needed |= {s.name for s in adj.expr.free_symbols}
    needed |= {g.operand for g in gemms}  # weight gradients multiply by the operand
    keep = [p.name for p in d.forward if p.state is None and p.name in needed]
    keep += [m.name for m in cell.matmuls if m.name in needed]
    return tuple(keep)


def _roles(cell: CellSpec, d: Derivation, saved: tuple[str, ...]) -> dict[str, Role]:
    roles: dict[str, Role] = {cell.input: Role.INPUT}
    for p in cell.params:
        if p.kind == "vector":
            roles[p.name] = Role.PARAM
            roles[adjoint_name(p.name)] = Role.ADJ_PARAM
    for s in cell.states:
        roles[s] = Role.STATE
        roles[prev_name(s)] = Role.STATE_PREV
        roles[incoming_name(s)] = Role.ADJ_IN
        roles[adjoint_name(s)] = Role.ADJ
        roles[adjoint_name(prev_name(s))] = Role.ADJ_STATE_PREV
    for m in cell.matmuls:
        roles[m.name] = Role.PRODUCT
        roles[adjoint_name(m.name)] = Role.ADJ_PRODUCT
        roles[gemm_name(m.operand)] = Role.ADJ_MM
    for p in d.forward:
        if p.state is None:
            roles[p.name] = Role.SAVED if p.name in saved else Role.TEMP
            roles[adjoint_name(p.name)] = Role.ADJ
    return roles


def _forward_block(cell: CellSpec, d: Derivation, level: int) -> Block:
    equations = {eq.name: eq for eq in cell.equations}
    assigns, commented = [], set()
    for p in d.forward:
        if d.level[p.name] != level:
            continue
        comment = ""
        if p.source not in commented:
            commented.add(p.source)
            comment = equation_text(cell, equations[p.source])
        assigns.append(Assign(p.name, p.expr, comment))
    return Block(level, tuple(assigns), (), ())


def _backward_blocks(cell: CellSpec, d: Derivation) -> dict[int, Block]:
    """Place each adjoint in the stage of its forward symbol, leaves with their last reader."""
    docs = {eq.name: eq.doc for eq in cell.equations}
    sources = {p.name: p.source for p in d.forward}
    level_of: dict[str, int] = {}
    per_level: dict[int, list[Assign]] = {lv: [] for lv in range(d.max_level + 1)}
    for adj in d.backward:
        if (adj.target in d.level and adj.target in sources) or adj.target in d.level:
            level = d.level[adj.target]
        else:  # a parameter or a previous state: once every adjoint it reads exists
            reads = [level_of[s.name] for s in adj.expr.free_symbols if s.name in level_of]
            level = min(reads, default=0)
        level_of[adj.name] = level
        if adj.expr == 0 and adj.target not in d.level:
            continue
        per_level[level].append(Assign(adj.name, adj.expr, _adjoint_comment(adj, sources, docs)))
    return {lv: Block(lv, tuple(a), (), ()) for lv, a in per_level.items()}


def _cse(block: Block, roles: dict[str, Role]) -> Block:
    """Common subexpressions of a block as `cse<k>` temporaries, each placed before first use."""
    prefix = f"cse{block.level}_" if block.level else "cse"
    exprs = [a.expr for a in block.assignments]
    replacements, reduced = sympy.cse(
        exprs, symbols=sympy.numbered_symbols(prefix), optimizations=None, order="none"
    )
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
                assigns.append(Assign(sym.name, value, original.comment))
                original = Assign(original.name, original.expr, "")
        assigns.append(Assign(original.name, expr, original.comment))
    return Block(block.level, tuple(assigns), block.reads, block.writes)


def _adjoint_comment(adj: Adjoint, sources: dict[str, str], docs: dict[str, str]) -> str:
    if sources.get(adj.target) == adj.target and docs.get(adj.target):
        return f"adjoint of {adj.target} ({docs[adj.target]})"
    return ""


def _with_reads_and_writes(steps: list[Gemm | Block], roles: dict[str, Role]) -> tuple:
    """Fill in each block's reads (defined elsewhere) and writes (used elsewhere or kept)."""
    kept = {Role.SAVED, Role.STATE, Role.PRODUCT, Role.ADJ_PRODUCT, Role.ADJ_PARAM}
    kept |= {Role.ADJ_STATE_PREV}
    out: list[Gemm | Block] = []
    for k, step in enumerate(steps):
        if isinstance(step, Gemm):
            out.append(step)
            continue
        defined = {a.name for a in step.assignments}
        reads: set[str] = set()
        for a in step.assignments:
            reads |= {s.name for s in a.expr.free_symbols if s.name not in defined}
        used_later: set[str] = set()
        for later in steps[k + 1 :]:
            if isinstance(later, Block):
                for a in later.assignments:
                    used_later |= {s.name for s in a.expr.free_symbols}
            else:
                used_later |= {later.operand}
        writes = [
            a.name for a in step.assignments if a.name in used_later or roles.get(a.name) in kept
        ]
        out.append(Block(step.level, step.assignments, tuple(sorted(reads)), tuple(writes)))
    return tuple(out)
