"""The derived backward of one step, arranged as a textbook writes backpropagation through time.

Presentation only: the rows say what the kernels compute (`codegen.derive`), in the forward's
column-vector convention, each adjoint defined before it is used. Rows that only rename an
adjoint (δ(W_f x_t) = δa_{f,t}) are folded into their uses, a lifted intermediate used once is
inlined, the adjoints that reach an operand through matrix products become one sum of
transposed products, and the weight gradients are written once, as sums over t.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy

from .activations import Activation
from .cell import CellSpec, MatMul, prev_name
from .derive import Derivation, derive


class Transposed(sympy.Function):
    """`M^T v`: an adjoint carried back through the product `M v`."""

    nargs = 2


class Outer(sympy.Function):
    """`u v^T`: one step's contribution to a weight matrix's gradient."""

    nargs = 2


class SumOverSteps(sympy.Function):
    """`sum_t e`: a parameter gradient gathers every step's share."""

    nargs = 1


class SumOverUnits(sympy.Function):
    """`sum_j [e]_j`: a per-row scalar's adjoint gathers what each unit of a vector gives it."""

    nargs = 1


@dataclass(frozen=True)
class Row:
    """`lhs = rhs`; lhs is an adjoint symbol `d_<name>`."""

    lhs: sympy.Symbol
    rhs: sympy.Expr


@dataclass(frozen=True)
class Math:
    """Inline math given as LaTeX."""

    latex: str


@dataclass(frozen=True)
class Note:
    """A sentence between rows: plain text (str) and inline math (Math, SymPy expressions)."""

    parts: tuple[str | Math | sympy.Basic, ...]


@dataclass(frozen=True)
class Bptt:
    """The backward of one step: rows and notes in reading order; `incoming` says which states
    keep a separate δs_t^in (those that the step itself also uses)."""

    cell: CellSpec
    derivation: Derivation
    items: tuple[Row | Note, ...]
    incoming: dict[str, bool]  # state -> the rows name δs_t^in (False: it is δs_t itself)

    @property
    def rows(self) -> tuple[Row, ...]:
        return tuple(i for i in self.items if isinstance(i, Row))


def bptt(cell: CellSpec, derivation: Derivation | None = None) -> Bptt:
    """The rows and notes of the backward of one step, for printing."""
    derivation = derivation or derive(cell)
    return _Arranger(cell, derivation).run()


def saved_values(cell: CellSpec, derivation: Derivation) -> list[str]:
    """Forward values the backward equations read, besides the states and the input."""
    needed: set[str] = {m.operand for m in cell.matmuls}
    for adj in derivation.backward:
        needed |= {s.name for s in adj.expr.free_symbols}
    keep = [p.name for p in derivation.forward if p.state is None and p.name in needed]
    return keep + [m.name for m in cell.matmuls if m.name in needed]


class _Arranger:
    def __init__(self, cell: CellSpec, derivation: Derivation) -> None:
        self.cell = cell
        self.d = derivation
        self.by_operand: dict[str, list[MatMul]] = {}
        for m in cell.matmuls:
            self.by_operand.setdefault(m.operand, []).append(m)
        self.user = {e.name for e in cell.equations if not e.auto}
        self.leaves = {m.name for m in cell.matmuls}
        self.leaves |= {p.name for p in cell.params} | {prev_name(s) for s in cell.states}
        self.leaves.add(cell.input)  # used elementwise too when hidden-sized
        # what a gradient reaches from outside the step: the states, and an output equation
        self.outside = [*cell.states] + [cell.output] * (cell.output not in cell.states)

    def adj(self, name: str) -> sympy.Symbol:
        """The symbol of name's adjoint in the derivation."""
        return sympy.Symbol(self.d.names.of(name))

    def carried(self, operand: str) -> sympy.Expr:
        """Σ_m M^T δ(M v) over the products of one operand, in the order they were declared."""
        terms = [
            Transposed(sympy.Symbol(m.matrix), self.adj(m.name)) for m in self.by_operand[operand]
        ]
        return sympy.Add(*terms)

    def run(self) -> Bptt:
        each = {a.target: a.expr for a in self.d.backward if a.kind == "each"}
        sums = {
            sympy.Symbol(a.name): SumOverUnits(each[a.target])
            for a in self.d.backward
            if a.kind == "sum"
        }
        adj = {a.target: a.expr.xreplace(sums) for a in self.d.backward if not a.kind}
        mm = {
            sympy.Symbol(self.d.names.through_products(v)): self.carried(v) for v in self.by_operand
        }
        step = [
            (t, adj[t].xreplace(mm))
            for t in (a.target for a in self.d.backward if not a.kind)
            if t not in self.leaves and adj[t] != 0
        ]
        products = [(m.name, adj[m.name]) for m in self.cell.matmuls]
        x = self.cell.input
        passed = [(x, sympy.Add(self.carried(x), adj.get(x, sympy.S.Zero)))]
        for s in self.cell.states:
            p = prev_name(s)
            passed.append((p, sympy.Add(self.carried(p) if p in self.by_operand else 0, adj[p])))
        params = [(p.name, self.param_gradient(p.name, adj)) for p in self.cell.params]

        # fold renamings and products into their uses; inline what is used once
        subs: dict[sympy.Symbol, sympy.Expr] = {}
        incoming: dict[str, bool] = {s: True for s in self.outside}
        state_in = {sympy.Symbol(self.d.names.incoming(s)): s for s in self.outside}
        kept: list[tuple[str, sympy.Expr]] = []
        for target, expr in step:
            expr = expr.xreplace(subs)
            if expr in state_in:  # δh_t = δh_t^in: the notes call it δh_t
                incoming[state_in[expr]] = False
                subs[expr] = self.adj(target)
            elif isinstance(expr, sympy.Symbol):  # δ(W_f x_t) = δa_{f,t}: a renaming
                subs[self.adj(target)] = expr
            else:
                kept.append((target, expr))
        for name, expr in products:
            subs[self.adj(name)] = expr.xreplace(subs)
        kept = [(t, e.xreplace(subs)) for t, e in kept]
        passed = [(t, e.xreplace(subs)) for t, e in passed]
        params = [(t, e.xreplace(subs)) for t, e in params]
        kept, passed, params = self.inline_once(kept, passed, params)

        items: list[Row | Note] = [*self.opening(incoming)]
        items += [Row(self.adj(t), e) for t, e in kept]
        items.append(
            Note(
                (
                    "What step ",
                    Math("t"),
                    " passes to the input and back to step ",
                    Math("t - 1"),
                    ":",
                )
            )
        )
        items += [Row(self.adj(t), e) for t, e in passed if e != 0]
        items.append(Note(("The parameter gradients add up the shares of all steps:",)))
        items += [Row(self.adj(t), e) for t, e in params]
        return Bptt(self.cell, self.d, tuple(items), incoming)

    def param_gradient(self, name: str, adj: dict[str, sympy.Expr]) -> sympy.Expr:
        if name in adj:  # a vector parameter
            return SumOverSteps(adj[name])
        terms = [
            Outer(self.adj(m.name), sympy.Symbol(m.operand))
            for m in self.cell.matmuls
            if m.matrix == name
        ]
        return SumOverSteps(sympy.Add(*terms))

    def inline_once(self, kept: list, passed: list, params: list) -> tuple[list, list, list]:
        """Replace the adjoint of a lifted intermediate (tanh(c_t)) used in one row by its value."""
        while True:
            rows = kept + passed + params
            for target, expr in kept:
                if target in self.user or is_pre(target) or target in self.by_operand:
                    continue
                users = [t for t, e in rows if self.adj(target) in e.free_symbols]
                if len(users) == 1:
                    value = {self.adj(target): expr}
                    kept = [(t, e.xreplace(value)) for t, e in kept if t != target]
                    passed = [(t, e.xreplace(value)) for t, e in passed]
                    params = [(t, e.xreplace(value)) for t, e in params]
                    break
            else:
                return kept, passed, params

    def opening(self, incoming: dict[str, bool]) -> list[Note]:
        t, step_after = Math("t"), Math("t + 1")
        notes = [
            Note(
                (
                    "Backpropagation through time runs the steps backward, ",
                    Math(r"t = T, \ldots, 1"),
                    ". Here ",
                    Math(r"\delta q"),
                    " is the gradient ",
                    Math(r"\partial L / \partial q"),
                    " of the loss ",
                    Math("L"),
                    " of the whole sequence, a column vector like ",
                    Math("q"),
                    ", and ",
                    Math(r"\odot"),
                    " is the elementwise product.",
                )
            )
        ]
        for s in self.cell.states:
            name = sympy.Symbol(self.d.names.incoming(s)) if incoming[s] else self.adj(s)
            parts: list[str | Math | sympy.Basic] = [
                name,
                " is the gradient that reaches ",
                sympy.Symbol(s),
                " from outside step ",
                t,
                ": ",
            ]
            if s == self.cell.output:
                parts += ["from the loss at step ", t, " (", Math(r"\partial L / \partial y_t")]
                parts += [", as ", Math("y_t = "), sympy.Symbol(s), ") plus "]
            parts += ["what step ", step_after, " passes back as its ", self.adj(prev_name(s))]
            parts += [" (at ", Math("t = T"), ", the gradient of the final state)."]
            notes.append(Note(tuple(parts)))
        output = self.cell.output
        if output not in self.cell.states:  # an equation: the loss alone reaches it
            name = (
                sympy.Symbol(self.d.names.incoming(output))
                if incoming[output]
                else self.adj(output)
            )
            parts = [
                name,
                " is the gradient that reaches ",
                sympy.Symbol(output),
                " from the loss ",
            ]
            parts += ["at step ", t, ", ", Math(r"\partial L / \partial y_t"), ", as "]
            parts += [Math("y_t = "), sympy.Symbol(output), "."]
            notes.append(Note(tuple(parts)))
        pres = [
            sympy.Eq(sympy.Symbol(p.name), p.expr, evaluate=False)
            for p in self.d.forward
            if isinstance(p.expr, Activation) and is_pre(p.expr.args[0].name)
        ]
        if pres:
            parts = ["The arguments of the activations, the pre-activations, are named ", Math("a")]
            parts.append(": ")
            for k, eq in enumerate(pres):
                parts += [", " if k else "", eq]
            notes.append(Note((*parts, ".")))
        return notes


PRE = re.compile(r"^(?P<head>.+)_pre(?P<k>\d*)$")  # derive.lift's names for activation arguments


def is_pre(name: str) -> bool:
    """Whether a primitive is the argument of an activation (a pre-activation, `f_pre`)."""
    return PRE.match(name) is not None
