"""A recurrent cell as named SymPy equations: the small language of the files in equations/.

An equation file builds a `Cell` and calls its methods, one line per equation:

    cell = Cell("mgu", description="Minimal gated unit", reference="Zhou et al. 2016")
    x = cell.input("x")
    (h_prev,) = cell.states("h")
    W_f, W_h, U_f, U_h = cell.matrices("W_f W_h U_f U_h")
    b_f, b_h = cell.vectors("b_f b_h")
    f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "forget gate")
    ...
    cell.update("h", (1 - f) * h_prev + f * h_hat, "hidden state")

Every vector is hidden-sized (H) except the input x (I), which enters only through matrix
products W @ x. Each check runs as the equation is written, so an error names the equation
and its line; `Cell.spec()` checks the whole and freezes it into a `CellSpec`.
"""

from __future__ import annotations

import difflib
import inspect
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sympy

from .activations import ACTIVATIONS, ELEMENTWISE, Activation
from .errors import EquationError
from .reductions import REDUCTIONS, Reduction

SymbolKind = Literal["input", "state_prev", "vector", "matmul", "intermediate", "state_new"]


@dataclass(frozen=True)
class Param:
    """A learned parameter: a matrix (H, I) or (H, H), or a vector (H,)."""

    name: str
    kind: Literal["matrix", "vector"]
    shape: tuple[str, ...]


@dataclass(frozen=True)
class MatMul:
    """The product `matrix @ operand`, standing in the equations as the symbol `name`."""

    name: str
    matrix: str
    operand: str
    operand_expr: sympy.Expr  # as the user wrote it, for LaTeX


@dataclass(frozen=True)
class Equation:
    """`name = expr`; `state` is set when the equation gives a state its new value."""

    name: str
    expr: sympy.Expr
    doc: str
    state: str | None = None
    line: int | None = None
    auto: bool = False  # introduced by cellgen to name the operand of a matrix product


@dataclass(frozen=True)
class CellSpec:
    """A validated cell: everything the derivation needs, nothing about any language."""

    name: str
    description: str
    reference: str
    source: str
    input: str
    states: tuple[str, ...]
    output: str
    params: tuple[Param, ...]
    matmuls: tuple[MatMul, ...]
    equations: tuple[Equation, ...]
    kinds: tuple[tuple[str, SymbolKind], ...]
    scalars: frozenset[str] = frozenset()  # per-row scalars (size 1): reductions and their kin

    def kind(self, name: str) -> SymbolKind:
        return dict(self.kinds)[name]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def param_shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        sizes = {"I": input_size, "H": hidden_size}
        return {p.name: tuple(sizes[d] for d in p.shape) for p in self.params}


def prev_name(state: str) -> str:
    """The symbol of a state's value from the previous step."""
    return f"{state}_prev"


class Matrix:
    """A weight matrix; it enters an equation only as `M @ v`."""

    def __init__(self, cell: Cell, name: str) -> None:
        self.cell = cell
        self.name = name

    def __matmul__(self, operand: object) -> sympy.Symbol:
        return self.cell._matmul(self, operand)

    def _misuse(self, *_: object) -> sympy.Expr:
        raise EquationError(
            f"{self.name} is a matrix: apply it to a vector with {self.name} @ v",
            line=_caller_line(),
        )

    __mul__ = __rmul__ = __add__ = __radd__ = __sub__ = __rsub__ = _misuse
    __truediv__ = __rtruediv__ = __pow__ = __neg__ = _misuse

    def __rmatmul__(self, operand: object) -> sympy.Expr:
        shown = self.cell._show(operand) if isinstance(operand, sympy.Basic) else repr(operand)
        inner = shown if shown.startswith("(") or shown.isidentifier() else f"({shown})"
        raise EquationError(
            f"{inner} @ {self.name}: write the matrix first, {self.name} @ {inner}",
            line=_caller_line(),
        )

    def __repr__(self) -> str:
        return self.name


def _caller_line() -> int | None:
    """The line of the equation file that called into this module."""
    here = Path(__file__).resolve().parent
    frame = inspect.currentframe()
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.suffix == ".py" and here not in path.resolve().parents and path.exists():
            return frame.f_lineno
        frame = frame.f_back
    return None


class Cell:
    """Builder for a cell definition; see the module docstring for the language."""

    def __init__(
        self,
        name: str,
        *,
        description: str,
        reference: str,
        output: str | None = None,
    ) -> None:
        self._line = _caller_line()
        if not _is_name(name) or name.startswith("_"):
            self._fail(
                f"the cell name {name!r} is not a valid name: use ASCII letters, digits and _, "
                "starting with a letter, and name the file after it"
            )
        _check_text("description", description, self._line)
        _check_text("reference", reference, self._line)
        self.name = name
        self.description = description
        self.reference = reference
        self._output = output
        self._input: str | None = None
        self._states: list[str] = []
        self._params: list[Param] = []
        self._matrices: dict[str, Matrix] = {}
        self._matmuls: dict[str, MatMul] = {}
        self._equations: list[Equation] = []
        self._kinds: dict[str, SymbolKind] = {}
        self._hidden_sized_matrices: set[str] = set()
        self._reserved: set[str] = set()  # states' new values, defined by their updates
        self._lines: dict[str, int | None] = {}  # where each name was declared
        self._scalars: set[str] = set()  # results of size 1: reductions, arithmetic on them

    @property
    def line(self) -> int | None:
        """The line of the equation file that created the cell."""
        return self._line

    # declarations -------------------------------------------------------------------------

    def input(self, name: str = "x") -> sympy.Symbol:
        """The input vector x_t (size I)."""
        if self._input is not None:
            self._fail(f"the input is already declared as {self._input}; a cell has one input")
        self._declare(name, "input")
        self._input = name
        return sympy.Symbol(name)

    def states(self, *names: str) -> tuple[sympy.Symbol, ...]:
        """States carried between steps; returns their previous values h_{t-1}, ..."""
        names = _split(names)
        for name in names:
            self._declare(name, "state_new", reserve_only=True)
            self._declare(prev_name(name), "state_prev")
            self._states.append(name)
        return tuple(sympy.Symbol(prev_name(n)) for n in names)

    def matrices(self, *names: str) -> tuple[Matrix, ...]:
        """Weight matrices; their shapes, (H, I) or (H, H), follow from what they multiply."""
        out = []
        for name in _split(names):
            self._declare(name, "matrix")
            self._matrices[name] = Matrix(self, name)
            self._params.append(Param(name, "matrix", ("H", "?")))
            out.append(self._matrices[name])
        return tuple(out)

    def vectors(self, *names: str) -> tuple[sympy.Symbol, ...]:
        """Vector parameters of size H, such as biases and peephole weights."""
        out = []
        for name in _split(names):
            self._declare(name, "vector")
            self._params.append(Param(name, "vector", ("H",)))
            out.append(sympy.Symbol(name))
        return tuple(out)

    # equations ----------------------------------------------------------------------------

    def eq(self, name: str, expr: object, doc: str = "") -> sympy.Symbol:
        """An intermediate equation `name = expr`; returns its symbol."""
        _check_text("description", doc, _caller_line(), equation=name)
        expr = self._check_expr(name, expr, reduction_allowed=True)
        if isinstance(expr, Reduction):
            self._check_reduction(name, expr)
        self._declare(name, "intermediate", equation=name)
        if isinstance(expr, Reduction) or self._is_scalar(expr):
            self._scalars.add(name)
        self._equations.append(Equation(name, expr, doc, line=_caller_line()))
        return sympy.Symbol(name)

    def update(self, state: str | sympy.Symbol, expr: object, doc: str = "") -> sympy.Symbol:
        """The new value of a state; returns its symbol (h_t)."""
        name = str(state)
        if name.endswith("_prev") and name[: -len("_prev")] in self._states:
            name = name[: -len("_prev")]
        if name not in self._states:
            self._fail(
                f"'{name}' is not a state; declare it with cell.states(...) first",
                equation=name,
            )
        if any(e.state == name for e in self._equations):
            self._fail(
                f"state '{name}' is updated twice; give each state one cell.update", equation=name
            )
        _check_text("description", doc, _caller_line(), equation=name)
        expr = self._check_expr(name, expr)
        if self._is_scalar(expr):
            self._fail(
                f"state '{name}' would be a per-row scalar ({self._show(expr)} reads only "
                "reductions); a state is a vector: combine the scalar with a vector",
                name,
            )
        self._equations.append(Equation(name, expr, doc, state=name, line=_caller_line()))
        self._kinds[name] = "state_new"
        return sympy.Symbol(name)

    # the finished cell --------------------------------------------------------------------

    def spec(self, source: str = "") -> CellSpec:
        """Check the cell as a whole and freeze it."""
        if self._input is None:
            raise EquationError(
                "the cell declares no input; add x = cell.input('x')", line=self._line
            )
        if not self._states:
            raise EquationError(
                "the cell declares no state; add (h_prev,) = cell.states('h')", line=self._line
            )
        updated = {e.state for e in self._equations if e.state}
        for state in self._states:
            if state not in updated:
                raise EquationError(
                    f"state '{state}' has no update; add cell.update('{state}', ...) giving "
                    "its new value",
                    equation=state,
                    line=self._lines.get(state),
                )
        used = self._used_symbols()
        for eq in self._equations:
            if eq.state is None and not eq.auto and eq.name not in used:
                raise EquationError(
                    f"the result '{eq.name}' is never used; use it in a later equation or "
                    "remove the equation",
                    equation=eq.name,
                    line=eq.line,
                )
        matmuls = tuple(m for m in self._matmuls.values() if m.name in used)
        used_matrices = {m.matrix for m in matmuls}
        for p in self._params:
            if p.name not in used and p.name not in used_matrices:
                declare = "cell.matrices" if p.kind == "matrix" else "cell.vectors"
                raise EquationError(
                    f"parameter '{p.name}' is declared but no equation uses it; use it in an "
                    f"equation or remove it from {declare}(...)",
                    line=self._lines.get(p.name),
                )
        for state in self._states:
            # such a "state" carries nothing from step to step: almost surely a slip
            if prev_name(state) not in used:
                raise EquationError(
                    f"state '{state}' never uses its previous value {prev_name(state)}, so it "
                    f"carries nothing between steps; use {prev_name(state)} in an equation, or "
                    f"compute '{state}' with cell.eq instead of declaring it a state",
                    equation=state,
                    line=self._lines.get(prev_name(state)),
                )
        if self._input not in {m.operand for m in matmuls}:
            raise EquationError(
                f"no equation uses the input {self._input}; multiply it by a matrix, "
                f"W @ {self._input}",
                line=self._lines.get(self._input),
            )
        output = self._output or self._states[0]
        if output not in self._states:
            raise EquationError(
                f"output '{output}' is not a state; choose one of {', '.join(self._states)}",
                line=self._line,
            )
        params = tuple(
            Param(p.name, "matrix", ("H", "H" if p.name in self._hidden_sized_matrices else "I"))
            if p.kind == "matrix"
            else p
            for p in self._params
        )
        return CellSpec(
            name=self.name,
            description=self.description,
            reference=self.reference,
            source=source,
            input=self._input,
            states=tuple(self._states),
            output=output,
            params=params,
            matmuls=matmuls,
            equations=tuple(self._equations),
            kinds=tuple(sorted(self._kinds.items())),
            scalars=frozenset(self._scalars),
        )

    # internals ----------------------------------------------------------------------------

    def _fail(self, problem: str, equation: str | None = None) -> None:
        raise EquationError(problem, equation=equation, line=_caller_line())

    def _declare(
        self,
        name: str,
        kind: SymbolKind | Literal["matrix"],
        *,
        equation: str | None = None,
        reserve_only: bool = False,
    ) -> None:
        if not _is_name(name):
            self._fail(
                f"{name!r} is not a valid name: use ASCII letters, digits and _, starting with "
                "a letter",
                equation,
            )
        if name.startswith("_"):
            self._fail(
                f"'{name}': names starting with _ are reserved (C reserves many of them, and "
                "Python treats them as private); choose another name",
                equation,
            )
        if name in self._kinds or name in self._matrices or name in self._reserved:
            self._fail(f"the name '{name}' is already defined; choose another name", equation)
        self._lines.setdefault(name, _caller_line())
        if reserve_only:
            self._reserved.add(name)
        elif kind != "matrix":
            self._kinds[name] = kind

    def _check_expr(self, name: str, expr: object, reduction_allowed: bool = False) -> sympy.Expr:
        try:
            expr = sympy.sympify(expr, strict=True)
        except (sympy.SympifyError, TypeError):
            self._fail(f"the right-hand side {expr!r} is not a SymPy expression", name)
        if not isinstance(expr, sympy.Expr):
            self._fail(f"the right-hand side {expr} is not an expression", name)
        if not expr.free_symbols:
            self._fail(
                f"the right-hand side is the constant {expr}; an equation must depend on the "
                "input, a state or a parameter (write the number where it is used instead)",
                name,
            )
        self._check_functions(name, expr, top=expr if reduction_allowed else None)
        for sym in sorted(expr.free_symbols, key=str):
            self._check_symbol(name, sym.name)
        if self._input in {s.name for s in expr.free_symbols}:
            others = sorted(s.name for s in expr.free_symbols if s.name != self._input)
            partner = f" and {others[0]} (hidden-sized, H)" if others else ""
            self._fail(
                f"{self._input} is input-sized (I){partner}: elementwise arithmetic needs "
                f"equal sizes; bring {self._input} to size H with a matrix, W @ {self._input}",
                name,
            )
        return expr

    def _check_functions(self, name: str, expr: sympy.Expr, top: sympy.Expr | None) -> None:
        for node in sympy.preorder_traversal(expr):
            if isinstance(node, Reduction) and node is not top:
                kind = type(node).__name__
                self._fail(
                    f"{kind}(...) inside an expression is not supported: a reduction is an "
                    f"equation of its own, m = cell.eq('m', {kind}(...)); then use m here",
                    name,
                )
            if isinstance(node, sympy.Function) and not isinstance(node, (Activation, Reduction)):
                fname = type(node).__name__
                ours = fname in ELEMENTWISE or fname in REDUCTIONS
                origin = " (this is SymPy's; cellgen's activations come from codegen.activations)"
                self._fail(
                    f"unsupported function {fname}()"
                    f"{origin if ours else did_you_mean(fname)}; "
                    f"use one of {', '.join(sorted(ELEMENTWISE))}, imported with "
                    "`from codegen.activations import ...`, or mean, sum from codegen.reductions",
                    name,
                )
            if isinstance(node, sympy.Pow) and not node.exp.is_Integer:
                self._fail(
                    f"unsupported power {self._show(node)}: only whole-number exponents are "
                    "supported",
                    name,
                )
            if (
                isinstance(node, (sympy.core.relational.Relational, sympy.Piecewise))
                or node.is_Boolean
            ):
                self._fail(
                    f"unsupported expression {self._show(node)}: equations are arithmetic and "
                    "activations; for a comparison or a branch use relu or hard_sigmoid",
                    name,
                )

    def _is_scalar(self, expr: sympy.Expr) -> bool:
        """Size 1: the expression reads only per-row scalars (and numbers)."""
        return all(s.name in self._scalars for s in expr.free_symbols)

    def _check_reduction(self, name: str, expr: Reduction) -> None:
        """Each operand of a reduction is a vector: an elementwise expression of vectors."""
        kind = type(expr).__name__
        for arg in expr.args:
            if not arg.free_symbols:
                self._fail(f"{kind}() of the constant {arg}: reduce a vector", name)
            if self._is_scalar(arg):
                self._fail(
                    f"{kind}({self._show(arg)}): {self._show(arg)} is already a per-row scalar; "
                    "reduce a vector",
                    name,
                )

    def _show(self, expr: sympy.Expr) -> str:
        """An expression as the user wrote it, with products shown as W @ v."""
        products = {}
        for sym in expr.free_symbols:
            m = self._matmuls.get(sym.name)
            if m is not None:  # its operand holds only earlier products: the recursion ends
                operand = m.operand_expr
                text = str(operand) if operand.is_Symbol else f"({self._show(operand)})"
                products[sym] = sympy.Symbol(f"({m.matrix} @ {text})")
        return str(expr.xreplace(products))

    def _check_symbol(self, name: str, sym: str) -> None:
        if sym in self._kinds:
            return
        if sym == name:
            self._fail(
                f"the equation uses its own result '{name}'; to use the value from the "
                "previous step, declare it as a state and use its _prev symbol",
                name,
            )
        if sym in self._reserved:
            self._fail(
                f"'{sym}' is the new value of a state, which is defined only by its update; "
                f"use {prev_name(sym)} for the previous value",
                name,
            )
        self._fail(
            f"undefined symbol '{sym}'; declare it (cell.vectors, cell.matrices, cell.states) or "
            "define its equation above",
            name,
        )

    def _matmul(self, matrix: Matrix, operand: object) -> sympy.Symbol:
        try:
            operand = sympy.sympify(operand, strict=True)
        except (sympy.SympifyError, TypeError):
            self._fail(
                f"{matrix.name} @ {operand!r}: the operand is not a vector expression; "
                "a matrix multiplies the input, a state or an expression of them"
            )
        if not operand.free_symbols:
            self._fail(f"{matrix.name} @ {operand}: a matrix cannot multiply a constant")
        if isinstance(operand, sympy.Symbol) and operand.name == self._input:
            operand_name, sized = operand.name, "I"
        else:
            names = {s.name for s in operand.free_symbols}
            if self._input in names:
                self._fail(
                    f"{matrix.name} @ ({self._show(operand)}): {self._input} is input-sized (I) "
                    "and cannot "
                    "be combined elementwise with hidden-sized (H) vectors; multiply "
                    f"{self._input} alone ({matrix.name} @ {self._input}) and combine the products"
                )
            if isinstance(operand, sympy.Symbol):
                self._check_symbol("", operand.name)
            if all(s.name in self._scalars for s in operand.free_symbols):
                self._fail(
                    f"{matrix.name} @ {self._show(operand)}: the operand is a per-row scalar "
                    "(a reduction); a matrix multiplies a vector"
                )
            if isinstance(operand, sympy.Symbol) and self._kinds[operand.name] in (
                "state_prev",
                "intermediate",
            ):
                operand_name = operand.name
            else:  # a compound, or a value the kernels keep elsewhere (parameter, product, state)
                operand_name = self._name_operand(operand)
            sized = "H"
        if sized == "H":
            self._hidden_sized_matrices.add(matrix.name)
        for m in self._matmuls.values():
            if m.matrix == matrix.name and (m.operand == self._input) != (sized == "I"):
                self._fail(
                    f"{matrix.name} multiplies both the input-sized {self._input} and a "
                    "hidden-sized vector; use a separate matrix for each"
                )
        product = f"{matrix.name}_{operand_name}"
        if product not in self._matmuls:
            if product in self._kinds:
                self._fail(
                    f"cellgen names the product {matrix.name} @ {self._show(operand)} "
                    f"'{product}', but that name is already defined; rename your '{product}'"
                )
            self._matmuls[product] = MatMul(product, matrix.name, operand_name, operand)
            self._kinds[product] = "matmul"
        return sympy.Symbol(product)

    def _name_operand(self, operand: sympy.Expr) -> str:
        """Name a compound operand such as r * h_prev with an auto equation `r_h_prev`."""
        self._check_expr("", operand)
        for eq in self._equations:
            if eq.auto and eq.expr == operand:
                return eq.name
        base = "_".join(sorted(s.name for s in operand.free_symbols)) or "operand"
        name, k = base, 1
        while name in self._kinds or name in self._matrices:
            k += 1
            name = f"{base}{k}"
        self._kinds[name] = "intermediate"
        self._equations.append(Equation(name, operand, "", line=_caller_line(), auto=True))
        return name

    def _used_symbols(self) -> set[str]:
        used: set[str] = set()
        for eq in self._equations:
            used |= {s.name for s in eq.expr.free_symbols}
        # a matmul's operand equation is used by the matmul
        for m in self._matmuls.values():
            if m.name in used:
                used.add(m.operand)
        return used


def did_you_mean(name: str) -> str:
    """' (did you mean sigmoid?)' for a misspelled activation, else ''."""
    known = sorted({*ACTIVATIONS, *ELEMENTWISE, *REDUCTIONS})
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close and close[0] != name else ""


def _is_name(name: object) -> bool:
    """An ASCII identifier, usable in Python and C alike."""
    return (
        isinstance(name, str)
        and name.isascii()
        and name.isidentifier()
        and not keyword.iskeyword(name)
    )


def _check_text(what: str, text: object, line: int | None, equation: str | None = None) -> None:
    """Descriptions end up in comments and docstrings of generated code: one plain line."""
    if not isinstance(text, str):
        raise EquationError(f"the {what} must be a string", line=line, equation=equation)
    bad = next((s for s in ("\n", "\r", "*/", '"""', "\\") if s in text), None)
    if bad is not None:
        raise EquationError(
            f'the {what} {text!r} contains {bad!r}; write it as one line without */, """ '
            "or backslashes",
            line=line,
            equation=equation,
        )


def _split(names: tuple[str, ...]) -> list[str]:
    """Accept cell.vectors("b_f b_i") as well as cell.vectors("b_f", "b_i")."""
    out: list[str] = []
    for n in names:
        out.extend(str(n).replace(",", " ").split())
    return out
