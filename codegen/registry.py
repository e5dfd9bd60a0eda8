"""Finding and loading cells: built-in names (files in equations/) or paths to equation files."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

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


def load_cell(cell: str | Path) -> CellSpec:
    """Run an equation file and return its validated cell."""
    path = resolve(cell)
    shown = _display(path)
    source = path.read_text(encoding="utf-8")
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        raise EquationError(f"syntax error: {err.msg}", file=shown, line=err.lineno) from None
    namespace: dict[str, object] = {"__name__": f"cellgen_equations_{path.stem}"}
    try:
        exec(code, namespace)
    except EquationError as err:
        raise err.located(shown, _line_in(err, path)) from None
    except NameError as err:
        raise _name_error(err, path, shown, source) from None
    except Exception as err:  # the file is user code: report any failure plainly
        line = _line_in(err, path)
        raise EquationError(f"{type(err).__name__}: {err}", file=shown, line=line) from None
    cell_obj = namespace.get("cell")
    if not isinstance(cell_obj, Cell):
        raise EquationError(
            "the file defines no `cell`; start it with cell = Cell(...)", file=shown
        )
    try:
        return cell_obj.spec(source=shown)
    except EquationError as err:
        raise err.located(shown, None) from None


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


def _name_error(err: NameError, path: Path, shown: str, source: str) -> EquationError:
    """Tell an equation that refers to its own result from a plain undefined name."""
    line = _line_in(err, path)
    name = getattr(err, "name", None) or str(err).split("'")[1]
    target = _assigned_name(source, line)
    if target == name:
        return EquationError(
            f"the equation uses its own result '{name}'; to use the value from the previous "
            "step, declare it as a state and use its _prev symbol",
            file=shown,
            line=line,
            equation=name,
        )
    return EquationError(
        f"undefined symbol '{name}'; declare it or define its equation above this line",
        file=shown,
        line=line,
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
