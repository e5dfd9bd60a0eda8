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

Every vector has a size: the input x is of size I (or, declared `cell.input("x", size="H")`,
hidden-sized), everything else H unless declared otherwise: further sizes come from
`cell.sizes("P")`, and states, vectors and matrices take them (`cell.states("h", "c",
sizes=("P", "H"))`, `cell.vectors("b", size="P")`, `cell.matrices("W_p", shape=("P", "H"))`).
Elementwise arithmetic needs equal sizes (`elementwise_size`); `M @ v` needs v of M's column
size and has M's row size. Each check runs as the equation is written, so an error names the
equation and its line; `Cell.spec()` checks the whole and freezes it into a `CellSpec`.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import keyword
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sympy

from .activations import ACTIVATIONS, ELEMENTWISE, Activation
from .errors import EquationError
from .reductions import REDUCTIONS, Reduction

SymbolKind = Literal["input", "state_prev", "vector", "matmul", "intermediate", "state_new"]
BUILTIN_SIZES = ("I", "H")  # the input's and the hidden size, always there
_SIZE_NAME = re.compile(r"[A-Z][0-9]*")  # P, K, P2: kept verbatim in generated code
_NOT_SIZES = {"T", "B", "I", "H", "L"}  # steps, batch, the built-in sizes, a row's length


def size_symbol(name: str) -> sympy.Expr:
    """The SymPy symbol of a size (`sympy.Integer(1)` for "1"), as the kernel plan uses it."""
    if name == "1":
        return sympy.Integer(1)
    return sympy.Symbol(name, integer=True, positive=True)


def elementwise_size(a: str, b: str) -> str | None:
    """The size of an elementwise operation on operands of sizes a and b, or None when they do
    not combine. The one place where the rule lives: equal sizes, or a size-1 operand (a
    reduction's result, a per-row scalar) that broadcasts over the other's units."""
    if a == b or b == "1":
        return a
    return b if a == "1" else None


@dataclass(frozen=True)
class Param:
    """A learned parameter: a matrix (rows, columns) or a vector (size,), in size names."""

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
    sizes: tuple[str, ...] = ()  # declared sizes besides I and H, in declaration order
    symbol_sizes: tuple[tuple[str, str], ...] = ()  # every symbol's size, by name

    def kind(self, name: str) -> SymbolKind:
        return dict(self.kinds)[name]

    @property
    def scalars(self) -> frozenset[str]:
        """The per-row scalars (size 1): reductions, and arithmetic on them only."""
        return frozenset(n for n, size in self.symbol_sizes if size == "1")

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def size(self, name: str) -> sympy.Expr:
        """Units per batch row of a symbol (input, state, previous state, vector parameter,
        product, intermediate): the Symbol I, H or a declared size, or Integer(1)."""
        return size_symbol(dict(self.symbol_sizes)[name])

    @property
    def all_sizes(self) -> tuple[str, ...]:
        """I, H and the declared sizes: the order of the size arguments of every entry point."""
        return BUILTIN_SIZES + self.sizes

    @property
    def input_hidden(self) -> bool:
        """Whether the input is declared hidden-sized (then I = H)."""
        return dict(self.symbol_sizes).get(self.input) == "H"

    def size_values(self, input_size: int, hidden_size: int, **sizes: int) -> dict[str, int]:
        """{"I": ..., "H": ..., "P": ...}, checked: every declared size given, nothing else."""
        unknown = sorted(set(sizes) - set(self.sizes))
        if unknown:
            have = ", ".join(self.sizes) if self.sizes else "no sizes besides I and H"
            raise ValueError(f"unknown size {unknown[0]}: {self.name} declares {have}")
        missing = [n for n in self.sizes if n not in sizes]
        if missing:
            raise ValueError(
                f"missing size {missing[0]}: {self.name} declares {', '.join(self.sizes)}; "
                f"pass it by name, e.g. {missing[0]}=8"
            )
        out = {"I": int(input_size), "H": int(hidden_size)}
        out.update({n: int(sizes[n]) for n in self.sizes})
        return out

    def param_shapes(
        self, input_size: int, hidden_size: int, **sizes: int
    ) -> dict[str, tuple[int, ...]]:
        values = self.size_values(input_size, hidden_size, **sizes)
        return {p.name: tuple(values[d] for d in p.shape) for p in self.params}

    def state_shapes(self, batch: int, sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Each state's (B, size), for sizes from size_values."""
        return {s: (batch, sizes[dict(self.symbol_sizes)[s]]) for s in self.states}

    def size_sources(self) -> dict[str, tuple[str, str, int]]:
        """Where a call's arrays give each size besides I: the output state's (B, size)
        ("state", name, 1), else the first parameter that has it ("param", name, axis), else
        another state."""
        out: dict[str, tuple[str, str, int]] = {}
        sized = dict(self.symbol_sizes)
        if self.output in self.states:
            out[sized[self.output]] = ("state", self.output, 1)
        for p in self.params:
            for axis, d in enumerate(p.shape):
                out.setdefault(d, ("param", p.name, axis))
        for s in self.states:
            out.setdefault(sized[s], ("state", s, 1))
        return {n: out[n] for n in self.all_sizes if n in out and n != "I"}

    def read_sizes(self, input_size: int, state0: dict, params: dict | None) -> dict[str, int]:
        """I (given), H and the declared sizes read from the arrays of a call, as
        size_sources says (params None: from the states only; a size no array gives is 0)."""
        out = {"I": int(input_size)}
        for size, (kind, name, axis) in self.size_sources().items():
            arrays = state0 if kind == "state" else params
            if arrays is not None and name in arrays:
                out[size] = int(arrays[name].shape[axis])
        sized = dict(self.symbol_sizes)
        for s in self.states:  # without params: every size a state has
            if s in state0:
                out.setdefault(sized[s], int(state0[s].shape[1]))
        for size in self.all_sizes:
            out.setdefault(size, 0)
        return out


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

    @property
    def T(self) -> Matrix:
        raise EquationError(
            f"{self.name}.T: a transposed matrix is not supported; declare {self.name} in the "
            f"shape you multiply with (cell.matrices('{self.name}', shape=(rows, columns))) "
            f"and write {self.name} @ v",
            line=_caller_line(),
        )

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
        self._sizes: list[str] = []  # declared sizes besides I and H
        self._size: dict[str, str] = {}  # every symbol's size
        self._shape: dict[str, list[str | None]] = {}  # matrix -> [rows, columns or None]
        self._shape_given: set[str] = set()
        self._reserved: set[str] = set()  # states' new values, defined by their updates
        self._lines: dict[str, int | None] = {}  # where each name was declared

    @property
    def line(self) -> int | None:
        """The line of the equation file that created the cell."""
        return self._line

    # declarations -------------------------------------------------------------------------

    def sizes(self, *names: str) -> tuple[sympy.Symbol, ...]:
        """Sizes besides I and H, such as LSTMP's projection size P; returns their symbols.
        States, vectors and matrices then take them by name (`sizes=`, `size=`, `shape=`)."""
        out = []
        for name in _split(names):
            if not isinstance(name, str) or not _SIZE_NAME.fullmatch(name) or name in _NOT_SIZES:
                self._fail(
                    f"{name!r} cannot name a size: use a capital letter, optionally followed by "
                    "digits (P, K, P2), other than T, B, I, H and L (I and H are always there)"
                )
            self._declare(name, "size")
            self._sizes.append(name)
            out.append(size_symbol(name))
        return tuple(out)

    def input(self, name: str = "x", size: str = "I") -> sympy.Symbol:
        """The input vector x_t: of size I, or hidden-sized (size="H", which fixes I = H) to be
        used elementwise as well as in products."""
        if self._input is not None:
            self._fail(f"the input is already declared as {self._input}; a cell has one input")
        size = str(size)
        if size not in BUILTIN_SIZES:
            self._fail(
                f"the input's size {size!r}: an input is of size I, or hidden-sized, "
                f"cell.input({name!r}, size='H')"
            )
        self._declare(name, "input")
        self._input = name
        self._size[name] = size
        return sympy.Symbol(name)

    def states(self, *names: str, sizes: str | Iterable[str] = "H") -> tuple[sympy.Symbol, ...]:
        """States carried between steps; returns their previous values h_{t-1}, ...
        `sizes`: one size for all (H by default) or one per state, `sizes=("P", "H")`."""
        names = _split(names)
        each = self._sizes_for(names, sizes, "states", "sizes")
        for name, size in zip(names, each, strict=True):
            self._declare(name, "state_new", reserve_only=True)
            self._declare(prev_name(name), "state_prev")
            self._states.append(name)
            self._size[name] = self._size[prev_name(name)] = size
        return tuple(sympy.Symbol(prev_name(n)) for n in names)

    def matrices(self, *names: str, shape: Iterable[str] | None = None) -> tuple[Matrix, ...]:
        """Weight matrices, used as `M @ v`. Without `shape` a matrix has H rows and as many
        columns as what it multiplies (I for the input); `shape=("P", "H")` declares both."""
        rows, columns = "H", None
        if shape is not None:
            shape = tuple(str(d) for d in (shape if not isinstance(shape, str) else [shape]))
            if len(shape) != 2:
                self._fail(
                    f"shape={shape}: a matrix's shape is (rows, columns), such as ('P', 'H')"
                )
            rows = self._known_size(shape[0], "rows", ("H",))
            columns = self._known_size(shape[1], "columns")
        out = []
        for name in _split(names):
            self._declare(name, "matrix")
            self._matrices[name] = Matrix(self, name)
            self._params.append(Param(name, "matrix", (rows, "?")))
            self._shape[name] = [rows, columns]
            if shape is not None:
                self._shape_given.add(name)
            out.append(self._matrices[name])
        return tuple(out)

    def vectors(self, *names: str, size: str = "H") -> tuple[sympy.Symbol, ...]:
        """Vector parameters such as biases and peephole weights: of size H, or `size="P"`."""
        size = self._known_size(str(size), "size", ("H",))
        out = []
        for name in _split(names):
            self._declare(name, "vector")
            self._params.append(Param(name, "vector", (size,)))
            self._size[name] = size
            out.append(sympy.Symbol(name))
        return tuple(out)

    def _known_size(self, size: str, what: str, allowed: tuple[str, ...] = ("I", "H")) -> str:
        if size in allowed or size in self._sizes:
            return size
        declared = f"; declared: {', '.join(self._sizes)}" if self._sizes else ""
        self._fail(
            f"{what} {size!r} is not a size: use I, H or a size declared first with "
            f"cell.sizes({size!r}){declared}"
        )
        raise AssertionError("unreachable")

    def _sizes_for(self, names: list[str], sizes: object, what: str, arg: str) -> list[str]:
        """One size per name: a single size for all, or a sequence of them."""
        each = [sizes] * len(names) if isinstance(sizes, str) else [str(s) for s in sizes]
        if len(each) != len(names):
            self._fail(
                f"{arg}={tuple(each)} gives {len(each)} sizes for the {len(names)} {what} "
                f"{', '.join(names)}; give one per name, or one for all"
            )
        return [self._known_size(str(s), "size", ("H",)) for s in each]

    # equations ----------------------------------------------------------------------------

    def eq(self, name: str, expr: object, doc: str = "") -> sympy.Symbol:
        """An intermediate equation `name = expr`; returns its symbol."""
        _check_text("description", doc, _caller_line(), equation=name)
        expr = self._check_expr(name, expr, reduction_allowed=True)
        if isinstance(expr, Reduction):
            self._check_reduction(name, expr)
        self._declare(name, "intermediate", equation=name)
        self._size[name] = "1" if isinstance(expr, Reduction) else self._expr_size(name, expr)
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
        size = self._expr_size(name, expr)
        if size != self._size[name]:
            self._fail(
                f"state '{name}' is of size {self._size[name]}, but its new value is of size "
                f"{size}; declare the state's size (cell.states(..., sizes=...)) or bring the "
                "value to it with a matrix",
                equation=name,
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
        output = self._output or self._states[0]
        results = [e.name for e in self._equations if not e.auto]
        if output not in results:
            raise EquationError(
                f"output '{output}' is neither a state nor an equation; choose one of "
                f"{', '.join(results)}",
                line=self._line,
            )
        for eq in self._equations:
            if eq.state is None and not eq.auto and eq.name not in used and eq.name != output:
                raise EquationError(
                    f"the result '{eq.name}' is never used; use it in a later equation, make it "
                    f"the cell's output (Cell(..., output='{eq.name}')), or remove the equation",
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
                    f"compute '{state}' with cell.eq instead of declaring it a state (and make "
                    f"it the output, Cell(..., output='{state}'), if that is what it is)",
                    equation=state,
                    line=self._lines.get(prev_name(state)),
                )
        if self._input not in {m.operand for m in matmuls} | used:
            raise EquationError(
                f"no equation uses the input {self._input}; multiply it by a matrix, "
                f"W @ {self._input}",
                line=self._lines.get(self._input),
            )
        sizes = dict(self._size)
        for name in self._matmuls:  # products of unused matrices were never checked: drop them
            if name not in used:
                sizes.pop(name, None)
        params = tuple(
            Param(p.name, "matrix", (self._shape[p.name][0], self._shape[p.name][1] or "H"))
            if p.kind == "matrix"
            else p
            for p in self._params
        )
        given = {d for p in params for d in p.shape} | {sizes[s] for s in self._states}
        for size in self._sizes:
            if size not in given:
                raise EquationError(
                    f"size {size} is declared, but no state or parameter has it (the kernels "
                    "read it from their shapes); give one that size, or remove "
                    f"cell.sizes('{size}')",
                    line=self._lines.get(size),
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
            sizes=tuple(self._sizes),
            symbol_sizes=tuple(sorted(sizes.items())),
        )

    # internals ----------------------------------------------------------------------------

    def _fail(self, problem: str, equation: str | None = None) -> None:
        raise EquationError(problem, equation=equation, line=_caller_line())

    def _declare(
        self,
        name: str,
        kind: SymbolKind | Literal["matrix", "size"],
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
        taken = name in self._kinds or name in self._matrices or name in self._reserved
        if taken or name in self._sizes:
            self._fail(f"the name '{name}' is already defined; choose another name", equation)
        self._lines.setdefault(name, _caller_line())
        if reserve_only:
            self._reserved.add(name)
        elif kind not in ("matrix", "size"):
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
        return expr

    def _expr_size(self, name: str, expr: sympy.Expr) -> str:
        """The size of an expression of checked symbols: one EquationError line when its
        elementwise operands differ in size, or when it is input-sized (the input enters
        through products W @ x unless declared hidden-sized)."""
        size = self._size_of(name, expr)
        if size == "I":
            x = self._input
            self._fail(
                f"{x} is input-sized (I): elementwise arithmetic needs equal sizes; bring {x} "
                f"to size H with a matrix, W @ {x}, or declare it hidden-sized, "
                f"cell.input('{x}', size='H'), when I = H",
                name,
            )
        assert size is not None  # an equation depends on a symbol
        return size

    def _size_of(self, name: str, expr: sympy.Expr) -> str | None:
        """Size of expr (None for a number), checking each elementwise combination."""
        if isinstance(expr, Reduction):
            return "1"
        if isinstance(expr, sympy.Symbol):
            return self._size[expr.name]
        if expr.is_Number:
            return None
        if isinstance(expr, sympy.Pow):
            return self._size_of(name, expr.base)
        size, shown = None, None
        for arg in sorted(expr.args, key=sympy.default_sort_key):
            s = self._size_of(name, arg)
            if s is None:
                continue
            if size is not None and elementwise_size(size, s) is None:
                self._size_mismatch(name, (shown, size), (arg, s))
            if size is None or size == "1":
                size, shown = s, arg
        return size

    def _size_mismatch(self, name: str, a: tuple, b: tuple) -> None:
        (ea, sa), (eb, sb) = sorted([a, b], key=lambda p: p[1] != "I")  # the input first
        ta, tb = self._show(ea), self._show(eb)
        if sa == "I":
            x = self._input
            fix = f"bring {x} to size {sb} with a matrix, W @ {x}" + (
                f", or declare it hidden-sized, cell.input('{x}', size='H')" if sb == "H" else ""
            )
            self._fail(
                f"{ta} is input-sized (I) and {tb} ({_size_words(sb)}): elementwise arithmetic "
                f"needs equal sizes; {fix}",
                name,
            )
        self._fail(
            f"{ta} ({_size_words(sa)}) and {tb} ({_size_words(sb)}): elementwise arithmetic "
            f"needs equal sizes; bring one to the other's size with a matrix, declared "
            f"cell.matrices('M', shape=('{sa}', '{sb}')) for M @ ({tb})",
            name,
        )

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
        symbols = expr.free_symbols
        return bool(symbols) and all(self._size.get(s.name) == "1" for s in symbols)

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
            self._expr_size(name, arg)  # a vector of one size (not the input's I)

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
        if sym in self._sizes:
            self._fail(
                f"{sym} is a size, not a vector: it gives shapes (cell.vectors(..., size='{sym}'))"
                " and cannot enter an equation",
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
        names = {s.name for s in operand.free_symbols}
        input_sized = self._input is not None and self._size[self._input] == "I"
        if isinstance(operand, sympy.Symbol) and operand.name == self._input:
            operand_name = operand.name
        else:
            if input_sized and self._input in names:
                self._fail(
                    f"{matrix.name} @ ({self._show(operand)}): {self._input} is input-sized (I) "
                    "and cannot "
                    "be combined elementwise with hidden-sized (H) vectors; multiply "
                    f"{self._input} alone ({matrix.name} @ {self._input}) and combine the products"
                )
            if isinstance(operand, sympy.Symbol):
                self._check_symbol("", operand.name)
            if self._is_scalar(operand):
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
        size = self._size[operand_name]
        rows, columns = self._shape[matrix.name]
        if columns is None:
            self._shape[matrix.name][1] = size
        elif columns != size and matrix.name in self._shape_given:
            self._fail(
                f"{matrix.name} @ {self._show(operand)}: {matrix.name} is declared of shape "
                f"({rows}, {columns}), so it multiplies vectors of size {columns}, but "
                f"{self._show(operand)} is of size {size}; declare shape=({rows!r}, {size!r}) "
                f"or multiply a vector of size {columns}"
            )
        elif columns != size:
            sized = {"I": "input-sized", "H": "hidden-sized"}
            if {columns, size} == {"I", "H"}:
                self._fail(
                    f"{matrix.name} multiplies both the input-sized {self._input} and a "
                    "hidden-sized vector; use a separate matrix for each"
                )
            self._fail(
                f"{matrix.name} multiplies vectors of sizes {columns} and {size} "
                f"({sized.get(size, 'of size ' + size)} {self._show(operand)}); use a separate "
                "matrix for each"
            )
        other = next((m for m in self._matmuls.values() if m.operand == operand_name), None)
        if other is not None and self._size[other.name] != rows:  # one fused product each
            self._fail(
                f"not supported: {self._show(operand)} is multiplied by matrices of "
                f"{self._size[other.name]} rows ({other.matrix}) and of {rows} rows "
                f"({matrix.name}); multiply a copy of it (cell.eq) by one of them"
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
            self._size[product] = rows
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
        self._size[name] = self._expr_size("", operand)
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


# Python and NumPy constructs an equation cannot use: what each is and what to write instead
# NumPy's reductions, by what codegen.reductions calls them
NUMPY_REDUCTIONS = {
    "mean": "mean", "average": "mean", "sum": "sum", "nansum": "sum", "nanmean": "mean"
}  # fmt: skip


def unsupported_numpy(name: str) -> str:
    """The message for np.<name>(...) on a symbol: what to use instead, where there is one."""
    head = (
        f"unsupported function np.{name}(): NumPy and math functions cannot take cellgen's symbols"
    )
    if name in ELEMENTWISE:
        return f"{head}; use {name}, imported with `from codegen.activations import {name}`"
    if name in NUMPY_REDUCTIONS:
        fn = NUMPY_REDUCTIONS[name]
        return f"{head}; use codegen's {fn}(v) for a {fn} over the units of a vector"
    if name in ("var", "std", "linalg.norm", "norm"):
        return (
            f"{head}; a variance over the units of a vector is built from codegen's mean(v): "
            "mean((v - mean(v))**2)"
        )
    return (
        f"{head}; use one of {', '.join(sorted(ELEMENTWISE))}, imported with "
        "`from codegen.activations import ...`, or mean, sum from codegen.reductions"
    )


@contextlib.contextmanager
def refusing_numpy() -> Iterator[None]:
    """While an equation file runs, a NumPy function given a symbol raises one clear line
    (np.mean(v) would return v itself, np.var(v) 0: wrong, and silently)."""

    def refuse(self, func, types, args, kwargs):
        raise EquationError(unsupported_numpy(func.__name__), line=_caller_line())

    previous = sympy.Basic.__dict__.get("__array_function__")  # a file that loads another
    sympy.Basic.__array_function__ = refuse
    try:
        yield
    finally:
        if previous is None:
            del sympy.Basic.__array_function__
        else:
            sympy.Basic.__array_function__ = previous


def _size_words(size: str) -> str:
    """'hidden-sized, H', 'input-sized, I' or 'size P'."""
    return {"H": "hidden-sized, H", "I": "input-sized, I"}.get(size, f"size {size}")


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
