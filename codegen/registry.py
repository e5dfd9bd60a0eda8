"""Finding and loading cells: built-in names (files in equations/) or paths to equation files.

An equation file is Python that cellgen runs. The built-in cells of equations/ run inside this
process. Any other file runs in a child Python with a time limit, CELLGEN_EQUATION_TIMEOUT
seconds (60 by default; 0 runs it in this process, without a limit): an endless loop, an exit or
a crash of the file then becomes one EquationError instead of hanging or ending cellgen. The
validated cell comes back pickled; the same file with the same text is run once per process.
"""

from __future__ import annotations

import ast
import os
import pickle
import re
import subprocess
import sys
import traceback
from pathlib import Path

from .activations import ELEMENTWISE
from .cell import Cell, CellSpec, _is_name, did_you_mean, refusing_numpy, unsupported_numpy
from .errors import CellgenError, EquationError, UnknownCellError
from .paths import PACKAGE_DIR, builtin_equations_dir
from .reductions import REDUCTIONS

TIMEOUT_VARIABLE, DEFAULT_TIMEOUT = "CELLGEN_EQUATION_TIMEOUT", 60.0


def builtin_cells() -> list[str]:
    """Names of the cells in equations/, sorted."""
    return sorted(
        p.stem for p in builtin_equations_dir().glob("*.py") if not p.name.startswith("_")
    )


def description(cell: str | Path) -> str:
    """The description a cell's file gives, read from its text without running it."""
    try:
        tree = ast.parse(resolve(cell).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Cell":
            for keyword in node.keywords:
                if keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


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
    if not _is_name(path.stem):
        raise EquationError(
            f"the file name {path.name} cannot name a cell: a cell is named after its file, "
            "with ASCII letters, digits and _, starting with a letter; rename the file (for "
            f"example {_valid_name(path.stem)}.py) and the cell in it",
            file=_display(path),
        )
    if path.resolve().parent == builtin_equations_dir().resolve():
        return run_equation_file(path)
    timeout = equation_timeout()
    if timeout == 0:
        return run_equation_file(path)
    source = path.read_bytes()
    key = (str(path), source, timeout)
    if key not in _isolated_results:
        if len(_isolated_results) >= 32:
            _isolated_results.pop(next(iter(_isolated_results)))
        _isolated_results[key] = _run_isolated(path, timeout)
    return _isolated_results[key]


_isolated_results: dict[tuple[str, bytes, float], CellSpec] = {}


def equation_timeout() -> float:
    """Seconds an equation file may run: $CELLGEN_EQUATION_TIMEOUT, else 60."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise CellgenError(
            f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds; set it to a number such "
            "as 60, or 0 to run equation files inside cellgen without a limit"
        )
    return value


def _valid_name(stem: str) -> str:
    name = re.sub(r"\W", "_", stem.encode("ascii", "replace").decode()).strip("_") or "cell"
    return name if name[0].isalpha() else f"cell_{name}"


# The child: runs one file with SIGINT ignored (the parent handles Ctrl-C and kills it), its
# prints sent to stderr, and writes the pickled result to the original stdout.
_CHILD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
result = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
sys.path.insert(0, sys.argv[1])
from codegen.registry import _child
_child(sys.argv[2], result)
"""


def _run_isolated(path: Path, timeout: float) -> CellSpec:
    """Run an equation file in a child Python with a time limit; its cell or its error."""
    shown = _display(path)
    command = [sys.executable, "-c", _CHILD, str(PACKAGE_DIR.parent), str(path)]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EquationError(
            f"the file ran longer than {timeout:g} s (an endless loop?) and was stopped; an "
            f"equation file only declares a cell. To allow more time, set {TIMEOUT_VARIABLE}",
            file=shown,
        ) from None
    try:
        kind, *payload = pickle.loads(done.stdout)
    except Exception:  # nothing or garbage: the file ended the process itself
        how = (
            f"was killed by signal {-done.returncode}"
            if done.returncode < 0
            else f"exited with status {done.returncode}"
        )
        raise EquationError(
            f"running the file, Python {how} before the cell was defined; an equation file "
            "must not end the process (no os._exit, no exit on import)",
            file=shown,
        ) from None
    if kind == "error":
        problem, file, line, equation = payload
        raise EquationError(problem, file=file, line=line, equation=equation)
    return payload[0]


def _child(path_text: str, out) -> None:
    """In the child: run the file, write ("cell", spec) or ("error", parts) pickled."""
    path = Path(path_text)
    try:
        result: tuple = ("cell", run_equation_file(path, isolated=True))
        data = pickle.dumps(result)
    except EquationError as err:
        data = pickle.dumps(("error", err.problem, err.file, err.line, err.equation))
    except BaseException as err:  # cellgen's own failure, reported plainly
        problem = f"cellgen failed on this file ({type(err).__name__}: {err})"
        data = pickle.dumps(("error", problem, _display(path), None, None))
    out.write(data)
    out.flush()
    os._exit(0)  # no atexit handlers or threads the file may have left behind


def run_equation_file(path: Path, isolated: bool = False) -> CellSpec:
    """Run an equation file in this process and validate its cell (see load_cell).

    `isolated`: this process is the child of _run_isolated, whose SIGINT is ignored, so that a
    KeyboardInterrupt can only come from the file itself.
    """
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
        with refusing_numpy():
            exec(code, namespace)
    except EquationError as err:
        raise _placed(err, shown, source, _line_in(err, path)) from None
    except NameError as err:
        raise _name_error(err, path, shown, source) from None
    except ImportError as err:
        raise _import_error(err, shown, source, _line_in(err, path)) from None
    except Exception as err:  # the file is user code: report any failure plainly
        raise _placed(_user_error(err), shown, source, _line_in(err, path)) from None
    except KeyboardInterrupt as err:
        if not isolated:
            raise  # in this process it may be the user's Ctrl-C
        problem = "the file raised KeyboardInterrupt; an equation file only declares a cell"
        raise _placed(EquationError(problem), shown, source, _line_in(err, path)) from None
    except SystemExit as err:  # sys.exit() or exit(): never a silent success of cellgen
        problem = (
            f"the file called sys.exit({'' if err.code is None else repr(err.code)}); an "
            "equation file only declares a cell: remove the exit"
        )
        raise _placed(EquationError(problem), shown, source, _line_in(err, path)) from None
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
    ufunc = re.search(r"no callable (\w+) method", text)
    if isinstance(err, TypeError) and ufunc:  # np.tanh(v), np.sqrt(v), ...
        return EquationError(unsupported_numpy(ufunc.group(1)))
    if isinstance(err, TypeError) and "is not iterable" in text:  # sum(v), for u in v
        return EquationError(
            "unsupported: iterating over a vector (Python's sum(v), a for loop, a list of its "
            "units); a vector is one symbol for all its units: use codegen's sum(v) for a sum "
            "over units (`from codegen.reductions import sum`), and a + b to add vectors"
        )
    if isinstance(err, TypeError) and "not subscriptable" in text:  # v[0]
        return EquationError(
            "unsupported: indexing a vector (v[0]); an equation acts on all units at once"
        )
    if isinstance(err, TypeError) and "truth value of Relational" in text:  # max(a, b), if
        return EquationError(
            "unsupported: comparing vectors (max, min, if, <); for max(v, 0) use relu(v), for "
            "a clipped ramp hard_sigmoid(v)"
        )
    if isinstance(err, TypeError) and (
        "ufunc" in text or "convert expression to" in text or "to float" in text
    ):
        return EquationError(
            "unsupported function: NumPy and math functions cannot take cellgen's symbols; "
            f"use one of {', '.join(sorted(ELEMENTWISE))}, imported with "
            "`from codegen.activations import ...`, or mean, sum from codegen.reductions"
        )
    if isinstance(err, TypeError) and "operand type(s) for @" in text:
        return EquationError(
            "@ applies a weight matrix to a vector, M @ v, where M is declared with "
            "cell.matrices; here the left side of @ is not such a matrix"
        )
    return EquationError(f"{type(err).__name__}: {text}")


def _import_error(err: ImportError, shown: str, source: str, line: int | None) -> EquationError:
    name = getattr(err, "name", None)
    missing = re.search(r"cannot import name '(\w+)'", str(err))
    if name == "codegen.activations" and missing:
        problem = (
            f"unsupported function {missing.group(1)}(){did_you_mean(missing.group(1))}: "
            "codegen.activations provides " + ", ".join(sorted(ELEMENTWISE))
        )
    elif name == "codegen.reductions" and missing:
        problem = (
            f"unsupported reduction {missing.group(1)}(){did_you_mean(missing.group(1))}: "
            "codegen.reductions provides "
            + ", ".join(sorted(REDUCTIONS))
            + " (a variance is mean((v - mu)**2))"
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
    if did_you_mean(name):
        return EquationError(
            f"undefined name '{name}'{did_you_mean(name)}: import it with "
            "`from codegen.activations import ...`",
            file=shown,
            line=line,
            equation=equation,
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
        for node in equation_calls(tree)
        if node.args and node.lineno <= line <= (node.end_lineno or node.lineno)
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


def equation_calls(tree: ast.AST) -> list[ast.Call]:
    """The cell.eq(...) and cell.update(...) calls of an equation file's syntax tree."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("eq", "update")
    ]
