"""Bad equation files: one line naming the file, the equation and the problem; nothing written.

Each case is a small, otherwise valid cell with one mistake on a marked line. The command line
must exit 2 with exactly that line on stderr (no traceback) and leave generated/ byte for byte
as it was; the Python API must raise EquationError with the same parts.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import codegen
from codegen.errors import CellgenError, EquationError
from codegen.paths import builtin_generated_dir
from codegen.registry import load_cell

HEAD = """\
import sympy

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell("{name}", description="a cell with one mistake", reference="a test")
x = cell.input("x")
(h_prev,) = cell.states("h")
W_f, U_f = cell.matrices("W_f U_f")
(b_f,) = cell.vectors("b_f")
"""
GATE = 'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "gate")\n'
UPDATE = 'h = cell.update("h", f * h_prev)\n'


def source(body: str) -> str:
    return HEAD + textwrap.dedent(body)


# name: (the file after HEAD, the line with the mistake, the equation, what the message says:
# the problem and how to fix it)
CASES = {
    "syntax_error": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f)\n' + UPDATE,
        'f = cell.eq("f"',
        "f",
        ["syntax error", "never closed", "fix this line"],
    ),
    "undefined_symbol": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_g))\n' + UPDATE,
        "b_g))",
        "f",
        ["undefined symbol 'b_g'", "declare it", "cell.vectors"],
    ),
    "state_without_update": (
        'c_prev, = cell.states("c")\n'
        + GATE
        + 'h = cell.update("h", f * h_prev + (1 - f) * tanh(c_prev))\n',
        'cell.states("c")',
        "c",
        ["state 'c' has no update", "add cell.update('c', ...)"],
    ),
    "unused_parameter": (
        'b_z, = cell.vectors("b_z")\n' + GATE + UPDATE,
        'cell.vectors("b_z")',
        None,
        ["parameter 'b_z' is declared but no equation uses it", "remove it from cell.vectors"],
    ),
    "own_result": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f + f))\n' + UPDATE,
        "b_f + f))",
        "f",
        ["uses its own result 'f'", "declare it as a state", "_prev"],
    ),
    "input_times_hidden": (
        GATE + 'h = cell.update("h", f * x + h_prev)\n',
        "f * x",
        "h",
        ["x is input-sized (I)", "f (hidden-sized, H)", "W @ x"],
    ),
    "unsupported_function": (
        'f = cell.eq("f", sympy.sin(W_f @ x + U_f @ h_prev + b_f))\n' + UPDATE,
        "sympy.sin",
        "f",
        ["unsupported function sin()", "sigmoid", "from codegen.activations import"],
    ),
}


def marked_line(text: str, mark: str) -> int:
    return next(k for k, line in enumerate(text.splitlines(), 1) if mark in line)


def tree_digest(root: Path) -> str:
    """Every file under root, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_case(tmp_path: Path, case: str) -> tuple[Path, int]:
    body, mark, _, _ = CASES[case]
    text = source(body).format(name=case)
    path = tmp_path / f"{case}.py"
    path.write_text(text)
    return path, marked_line(text, mark)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_command_line_prints_one_line_and_leaves_generated_alone(tmp_path, case):
    path, line = write_case(tmp_path, case)
    _, _, equation, phrases = CASES[case]
    before = tree_digest(builtin_generated_dir())
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "generate", "--equations", str(path)],
        capture_output=True,
        text=True,
    )
    assert tree_digest(builtin_generated_dir()) == before
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith(f"cellgen: error: {path}:{line}: ")
    if equation:
        assert f"equation '{equation}': " in message
    for phrase in phrases:
        assert phrase in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_python_api_raises_equation_error_with_the_parts(tmp_path, case):
    path, line = write_case(tmp_path, case)
    _, _, equation, phrases = CASES[case]
    with pytest.raises(EquationError) as caught:
        load_cell(path)
    err = caught.value
    assert (err.file, err.line, err.equation) == (str(path), line, equation)
    for phrase in phrases:
        assert phrase in str(err)
    with pytest.raises(CellgenError):  # codegen.load reports the same, before generating
        codegen.load(path)


def test_debug_shows_the_traceback(tmp_path):
    path, _ = write_case(tmp_path, "own_result")
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "--debug", "generate", "--equations", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "uses its own result 'f'" in result.stderr


def test_a_bad_file_stops_generation_of_every_cell(tmp_path):
    path, _ = write_case(tmp_path, "undefined_symbol")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "generate", "lstm", "--equations", str(path),
         "--out", str(out)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert not out.exists()  # not even the lstm, which alone would generate


def test_latex_and_verify_report_a_bad_file_the_same_way(tmp_path):
    path, line = write_case(tmp_path, "input_times_hidden")
    for command in (["latex", "--equations"], ["verify", "--equations"]):
        result = subprocess.run(
            [sys.executable, "-m", "codegen", *command, str(path)], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stderr.startswith(f"cellgen: error: {path}:{line}: equation 'h': ")
        assert len(result.stderr.splitlines()) == 1


# More mistakes, through the Python API ---------------------------------------------------------

# name: (the file after HEAD, the line with the mistake, the equation, phrases of the message)
MORE = {
    "own_result_symbol": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + sympy.Symbol("f")))\n' + UPDATE,
        'sympy.Symbol("f")',
        "f",
        ["uses its own result 'f'"],
    ),
    "undefined_sympy_symbol": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f) * sympy.Symbol("g"))\n' + UPDATE,
        'sympy.Symbol("g")',
        "f",
        ["undefined symbol 'g'"],
    ),
    "update_uses_its_own_result": (
        GATE + 'h = cell.update("h", f * h_prev + sympy.Symbol("h"))\n',
        'cell.update("h"',
        "h",
        ["uses its own result 'h'"],
    ),
    "numpy_function": (
        "import numpy as np\n" + 'f = cell.eq("f", np.tanh(W_f @ x + b_f))\n' + UPDATE,
        "np.tanh",
        "f",
        ["NumPy and math functions", "from codegen.activations import"],
    ),
    "sympy_tanh": (
        'f = cell.eq("f", sympy.tanh(W_f @ x + U_f @ h_prev + b_f))\n' + UPDATE,
        "sympy.tanh",
        "f",
        ["unsupported function tanh()", "SymPy's", "codegen.activations"],
    ),
    "missing_activation": (
        "from codegen.activations import softmax\n" + GATE + UPDATE,
        "import softmax",
        None,
        [
            "unsupported function softmax()",
            "hard_sigmoid, relu, rsqrt, sigmoid, silu, softplus, softsign, sqrt, tanh",
        ],
    ),
    "matrix_times_vector": (
        'f = cell.eq(\n    "f",\n    sigmoid(W_f * x + U_f @ h_prev + b_f),\n)\n' + UPDATE,
        "W_f * x",
        "f",
        ["W_f is a matrix", "W_f @ v"],
    ),
    "vector_at_matrix": (
        'f = cell.eq("f", sigmoid(x @ W_f + U_f @ h_prev + b_f))\n' + UPDATE,
        "x @ W_f",
        "f",
        ["write the matrix first, W_f @ x"],
    ),
    "input_inside_a_product": (
        'f = cell.eq("f", sigmoid(W_f @ (x * h_prev) + b_f))\n' + UPDATE,
        "W_f @ (x * h_prev)",
        "f",
        ["x is input-sized (I)", "multiply x alone (W_f @ x)"],
    ),
    "matrix_of_both_sizes": (
        'f = cell.eq("f", sigmoid(W_f @ x + W_f @ h_prev + U_f @ h_prev + b_f))\n' + UPDATE,
        "W_f @ h_prev",
        "f",
        ["W_f multiplies both the input-sized x and a hidden-sized vector"],
    ),
    "fractional_power": (
        GATE + 'h = cell.update("h", f**0.5 * h_prev)\n',
        "f**0.5",
        "h",
        ["unsupported power", "whole-number exponents"],
    ),
    "constant_equation": (
        GATE + 'k = cell.eq("k", sympy.Integer(2))\n' + 'h = cell.update("h", k * f * h_prev)\n',
        'cell.eq("k"',
        "k",
        ["the constant 2", "write the number where it is used"],
    ),
    "unused_result": (
        GATE + 'g = cell.eq("g", 2 * f, "forgotten")\n' + UPDATE,
        'cell.eq("g"',
        "g",
        ["the result 'g' is never used", "remove the equation"],
    ),
    "state_without_previous_value": (
        'c_prev, = cell.states("c")\n' + GATE + UPDATE + 'c = cell.update("c", 2 * f)\n',
        'cell.states("c")',
        "c",
        ["never uses its previous value c_prev", "cell.eq"],
    ),
    "state_updated_twice": (
        GATE + UPDATE + 'h2 = cell.update("h", f)\n',
        "h2 = ",
        "h",
        ["updated twice"],
    ),
    "name_defined_twice": (
        GATE + 'f2 = cell.eq("f", 2 * f)\n' + UPDATE,
        "f2 = ",
        "f",
        ["'f' is already defined"],
    ),
    "reserved_name": (
        '_f = cell.eq("_f", sigmoid(W_f @ x + U_f @ h_prev + b_f))\n'
        + 'h = cell.update("h", _f * h_prev)\n',
        'cell.eq("_f"',
        "_f",
        ["reserved", "choose another name"],
    ),
    "non_ascii_name": (
        'f = cell.eq("ĝ", sigmoid(W_f @ x + U_f @ h_prev + b_f))\n' + UPDATE,
        'cell.eq("ĝ"',
        "ĝ",
        ["not a valid name", "ASCII"],
    ),
    "description_closing_a_comment": (
        'f = cell.eq("f", sigmoid(W_f @ x + U_f @ h_prev + b_f), "gate */")\n' + UPDATE,
        "gate */",
        "f",
        ["contains '*/'", "one line"],
    ),
    "unknown_state": (
        GATE + UPDATE + 'c = cell.update("c", f)\n',
        'cell.update("c"',
        "c",
        ["'c' is not a state", "cell.states"],
    ),
    "input_not_used": (
        'f = cell.eq("f", sigmoid(U_f @ h_prev + b_f))\n'
        + 'h = cell.update("h", f * h_prev + W_f @ h_prev)\n',
        'x = cell.input("x")',
        None,
        ["no equation uses the input x", "W @ x"],
    ),
    "python_error": (
        GATE + "oops = 1 / 0\n" + UPDATE,
        "1 / 0",
        None,
        ["ZeroDivisionError: division by zero"],
    ),
}


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_mistakes_name_the_line_the_equation_and_the_fix(tmp_path, case):
    body, mark, equation, phrases = MORE[case]
    text = source(body).format(name=case)
    path = tmp_path / f"{case}.py"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EquationError) as caught:
        load_cell(path)
    err = caught.value
    assert (err.file, err.line, err.equation) == (str(path), marked_line(text, mark), equation)
    assert "\n" not in str(err)
    for phrase in phrases:
        assert phrase in str(err), str(err)


def test_the_cell_name_must_be_the_file_name(tmp_path):
    path = tmp_path / "other.py"
    path.write_text(source(GATE + UPDATE).format(name="mine"))
    with pytest.raises(EquationError, match=r"named 'mine' but its file is other\.py") as caught:
        load_cell(path)
    assert caught.value.line == marked_line(path.read_text(), "cell = Cell(")


def test_a_file_without_a_cell(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(EquationError, match=r"defines no `cell`; start it with cell = Cell"):
        load_cell(path)


def test_a_valid_case_file_loads(tmp_path):
    """The shared start of every case is itself a valid cell: each case has one mistake."""
    path = tmp_path / "valid.py"
    path.write_text(source(GATE + UPDATE).format(name="valid"))
    spec = load_cell(path)
    assert spec.states == ("h",) and [p.name for p in spec.params] == ["W_f", "U_f", "b_f"]
