"""Symbolic derivation: from a cell's equations to primitive forward steps and their adjoints.

Three passes, each a pure function:

1. `lift`: every activation gets an equation of its own (`f = sigmoid(f_pre)`,
   `tanh_c = tanh(c)`), so that its output is saved and its derivative can be written from it.
2. `levels`: which matrix products must wait for which equations (GRU's U_h @ (r * h_prev)
   waits for r); the kernel runs one pointwise stage per level.
3. `adjoints`: reverse mode over the named primitive equations. The adjoint of each
   intermediate accumulates the contributions of the equations that use it, exactly as one
   derives by hand; nothing is expanded, so c_t's adjoint is computed once, not once per gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .activations import Activation
from .cell import CellSpec, Equation, prev_name
from .names import NameRegistry


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


class AdjointNames:
    """The names of the backward's symbols, made unique against every forward name.

    Looked up by what they are the adjoint of, never built from strings and parsed back:
    `of(s)` is the adjoint of symbol s (preferably d_s); `incoming(state)` the adjoint of a
    state's new value arriving from outside the step (the loss at t and step t + 1);
    `through_products(v)` what an intermediate v receives through the products that multiply it.
    """

    def __init__(self, cell: CellSpec, forward: tuple[Primitive, ...]) -> None:
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

    def _make(self, kind: str, symbol: str, base: str) -> None:
        name = self._registry.make((kind, symbol), base)
        self._owner[name] = (kind, symbol)

    def of(self, symbol: str) -> str:
        return self._registry[("adjoint", symbol)]

    def incoming(self, state: str) -> str:
        return self._registry[("incoming", state)]

    def through_products(self, operand: str) -> str:
        return self._registry[("products", operand)]

    def owner(self, name: str) -> tuple[str, str] | None:
        """What a backward name stands for: ("adjoint" | "incoming" | "products", symbol)."""
        return self._owner.get(name)


@dataclass(frozen=True)
class Derivation:
    """Everything the kernels compute, in the order they compute it, for one time step."""

    cell: CellSpec
    forward: tuple[Primitive, ...]
    level: dict[str, int]  # primitive or matmul name -> pointwise stage
    backward: tuple[Adjoint, ...]
    names: AdjointNames

    @property
    def max_level(self) -> int:
        return max(self.level.values(), default=0)


def derive(cell: CellSpec) -> Derivation:
    forward = lift(cell)
    level = levels(cell, forward)
    names = AdjointNames(cell, forward)
    return Derivation(cell, forward, level, adjoints(cell, forward, names), names)


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
            if isinstance(eq.expr, Activation):
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


def levels(cell: CellSpec, forward: tuple[Primitive, ...]) -> dict[str, int]:
    """Stage of each primitive and product: a product waits for its operand's stage."""
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
        level[prim.name] = max((of(s.name) for s in prim.expr.free_symbols), default=0)
    for m in cell.matmuls:
        of(m.name)
    return level


# pass 3 ------------------------------------------------------------------------------------


def local_derivative(prim: Primitive, wrt: sympy.Symbol) -> sympy.Expr:
    """d prim / d wrt, with an activation's derivative from its rule (codegen/activations.py),
    which reads the saved output or, for a few activations, the saved input."""
    if isinstance(prim.expr, Activation):
        (arg,) = prim.expr.args
        outer = type(prim.expr).derivative(arg, sympy.Symbol(prim.name))
        return outer * sympy.diff(arg, wrt)
    return sympy.diff(prim.expr, wrt)


def adjoints(
    cell: CellSpec, forward: tuple[Primitive, ...], names: AdjointNames
) -> tuple[Adjoint, ...]:
    """Reverse-mode adjoints of one step, in evaluation order (last equation first)."""
    contributions: dict[str, list[sympy.Expr]] = {}
    operands = {m.operand for m in cell.matmuls}
    out: list[Adjoint] = []

    for prim in reversed(forward):
        terms = list(contributions.pop(prim.name, []))
        if prim.state or prim.name == cell.output:
            terms.insert(0, sympy.Symbol(names.incoming(prim.state or prim.name)))
        if prim.name in operands:
            terms.insert(0, sympy.Symbol(names.through_products(prim.name)))
        total = sympy.Add(*terms)
        out.append(Adjoint(prim.name, names.of(prim.name), total))
        if total == 0:
            continue
        d = sympy.Symbol(names.of(prim.name))
        for sym in sorted(prim.expr.free_symbols, key=lambda s: s.name):
            partial = local_derivative(prim, sym)
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
