"""Finding and loading cells: built-in names (files in equations/) or paths to equation files."""

from __future__ import annotations

import ast
import re
import traceback
from pathlib import Path

from .activations import ACTIVATIONS
from .cell import Cell, CellSpec
from .errors import EquationError, UnknownCellError
from .paths import builtin_equations_dir


def builtin_cells() -> list[str]:
    """Names of the cells in equations/, sorted."""
    return sorted(
        p.stem for p in builtin_equations_dir().glob("*.py") if not p.name.startswith("_")
    )


def resolve(cell: str | Path) -> Path:
    """The equation file of a built-in cell name or of a path to a .py file."""
    text = str(cell)
    if text in builtin_cells():
        return builtin_equations_dir() / f"{text}.py"
    path = Path(text)
    if path.suffix == ".py" or "/" in text or "\\" in text:
        if path.is_file():
            return path.resolve()
        raise UnknownCellError(f"no equation file at {text}")
    raise UnknownCellError(
        f"unknown cell '{text}'; known cells: {', '.join(builtin_cells())} "
        "(or give the path of an equation file)"
    )


def is_builtin(cell: str | Path) -> bool:
    """True for a built-in cell, by name or by the path of its file in equations/."""
    return str(cell) in builtin_cells() or (
        resolve(cell).parent == builtin_equations_dir().resolve()
    )


def load_cell(cell: str | Path) -> CellSpec:
    """Run an equation file and return its validated cell.

    Every failure, whether cellgen's own check or an exception of the user's Python, becomes
    one EquationError naming the file, the line and, where there is one, the equation.
    """
    path = resolve(cell)
    shown = _display(path)
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        raise EquationError(
            f"Python syntax error: {err.msg}; an equation file is a Python module, fix this line",
            file=shown,
            line=err.lineno,
            equation=_equation_on_line(source, err.lineno),
        ) from None
    namespace: dict[str, object] = {"__name__": f"cellgen_equations_{path.stem}"}
    try:
        exec(code, namespace)
    except EquationError as err:
        raise _placed(err, shown, source, _line_in(err, path)) from None
    except NameError as err:
        raise _name_error(err, path, shown, source) from None
    except ImportError as err:
        raise _import_error(err, shown, source, _line_in(err, path)) from None
    except Exception as err:  # the file is user code: report any failure plainly
        raise _placed(_user_error(err), shown, source, _line_in(err, path)) from None
    cell_obj = namespace.get("cell")
    if not isinstance(cell_obj, Cell):
        raise EquationError(
            "the file defines no `cell`; start it with cell = Cell(...)", file=shown
        )
    try:
        spec = cell_obj.spec(source=shown)
    except EquationError as err:
        raise _placed(err, shown, source, None) from None
    if spec.name != path.stem:
        raise EquationError(
            f"the cell is named '{spec.name}' but its file is {path.name}; name the file "
            f"{spec.name}.py or the cell '{path.stem}' (cellgen finds a cell by its file name)",
            file=shown,
            line=cell_obj.line,
        )
    return spec


def _display(path: Path) -> str:
    """The path as a user would write it: relative to equations/ for built-in cells."""
    root = builtin_equations_dir().resolve()
    if path.resolve().parent == root:
        return f"equations/{path.name}"
    return str(path)


def _line_in(err: BaseException, path: Path) -> int | None:
    """The last line of the equation file on the traceback of an exception."""
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return line


def _placed(err: EquationError, shown: str, source: str, line: int | None) -> EquationError:
    """The error in its file, at its line, naming the equation written on that line."""
    line = err.line if err.line is not None else line
    equation = err.equation or _equation_on_line(source, line)
    return EquationError(err.problem, file=shown, line=line, equation=equation)


def _user_error(err: Exception) -> EquationError:
    """An exception of the file's own Python, said as plainly as we can."""
    text = " ".join(str(err).split())
    if isinstance(err, TypeError) and (
        "ufunc" in text or "convert expression to" in text or "to float" in text
    ):
        return EquationError(
            "unsupported function: NumPy and math functions cannot take cellgen's symbols; "
            f"use one of {', '.join(sorted(ACTIVATIONS))}, imported with "
            "`from codegen.activations import ...`"
        )
    return EquationError(f"{type(err).__name__}: {text}")


def _import_error(err: ImportError, shown: str, source: str, line: int | None) -> EquationError:
    name = getattr(err, "name", None)
    missing = re.search(r"cannot import name '(\w+)'", str(err))
    if name == "codegen.activations" and missing:
        problem = (
            f"unsupported function {missing.group(1)}(): codegen.activations provides "
            + ", ".join(sorted(ACTIVATIONS))
        )
    else:
        problem = f"ImportError: {' '.join(str(err).split())}"
    return EquationError(problem, file=shown, line=line, equation=_equation_on_line(source, line))


def _name_error(err: NameError, path: Path, shown: str, source: str) -> EquationError:
    """Tell an equation that refers to its own result from a plain undefined name."""
    line = _line_in(err, path)
    name = getattr(err, "name", None) or str(err).split("'")[1]
    target = _assigned_name(source, line)
    equation = _equation_on_line(source, line)
    if name in (target, equation):
        return EquationError(
            f"the equation uses its own result '{name}'; to use the value from the previous "
            "step, declare it as a state and use its _prev symbol",
            file=shown,
            line=line,
            equation=equation or name,
        )
    return EquationError(
        f"undefined symbol '{name}'; declare it (cell.vectors, cell.matrices, cell.states) or "
        "define its equation above this line",
        file=shown,
        line=line,
        equation=equation,
    )


def _assigned_name(source: str, line: int | None) -> str | None:
    if line is None:
        return None
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Assign)
            and node.lineno <= line <= (node.end_lineno or line)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            return node.targets[0].id
    return None


_EQUATION_CALL = re.compile(r"\.\s*(?:eq|update)\s*\(\s*(?:[\"'](\w+)[\"']|(\w+))")


def _equation_on_line(source: str, line: int | None) -> str | None:
    """The name of the cell.eq(...) or cell.update(...) call written across `line`."""
    if line is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:  # fall back to the text of the line itself
        lines = source.splitlines()
        match = _EQUATION_CALL.search(lines[line - 1]) if 0 < line <= len(lines) else None
        return _strip_prev(match.group(1) or match.group(2)) if match else None
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("eq", "update")
        and node.args
        and node.lineno <= line <= (node.end_lineno or node.lineno)
    ]
    if not calls:
        return None
    call = min(calls, key=lambda c: (c.end_lineno or c.lineno) - c.lineno)
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.Name) and call.func.attr == "update":
        return _strip_prev(first.id)
    return None


def _strip_prev(name: str) -> str:
    return name[: -len("_prev")] if name.endswith("_prev") else name
