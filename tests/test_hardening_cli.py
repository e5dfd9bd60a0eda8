"""Equation files that exit, hang or misspell, and a command line that survives `| head` and
never runs an equation file to list cells or show help (issue 15, items 4, 13, 16, 18)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codegen
from codegen import cli, registry
from codegen.errors import EquationError

ROOT = Path(__file__).resolve().parents[1]

HEAD = """\
import sympy
from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell("{name}", description="a test cell", reference="a test")
x = cell.input("x")
(h_prev,) = cell.states("h")
W_r, W_h, U_r, U_h = cell.matrices("W_r W_h U_r U_h")
r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev))
"""
GOOD = 'h = cell.update("h", tanh(W_h @ x + U_h @ (r * h_prev)))\n'


def write(directory: Path, name: str, body: str, head: str = HEAD) -> Path:
    path = directory / f"{name}.py"
    path.write_text(head.format(name=name.replace("-", "_")) + body)
    return path


def cellgen(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and len(lines) == 1, result.stderr
    assert lines[0].startswith("cellgen: error: ")
    return lines[0]


# Item 4: a file that exits or never ends ----------------------------------------------------

ENDINGS = {
    "sys_exit": ("import sys\nsys.exit(0)\n", ["sys.exit(0)", "remove the exit"]),
    "exit_call": ("exit()\n", ["sys.exit()"]),
    "keyboard_interrupt": ("raise KeyboardInterrupt\n", ["KeyboardInterrupt"]),
    "os_exit": ("import os\nos._exit(0)\n", ["exited with status 0", "os._exit"]),
}


@pytest.mark.parametrize("case", sorted(ENDINGS))
def test_an_equation_file_that_ends_the_process_is_an_error_not_a_pass(tmp_path, case):
    body, phrases = ENDINGS[case]
    path = write(tmp_path, case, body + GOOD)
    line = one_line(cellgen("verify", "--equations", str(path), "--backend", "numpy"))
    assert str(path) in line
    for phrase in phrases:
        assert phrase in line


def test_the_python_api_raises_equation_error_for_an_exit(tmp_path):
    path = write(tmp_path, "leaves", "raise SystemExit(3)\n" + GOOD)
    with pytest.raises(EquationError, match=r"sys\.exit\(3\)") as caught:
        codegen.load(path)
    assert caught.value.file == str(path) and caught.value.line == 10


def test_an_endless_loop_is_stopped_by_the_timeout(tmp_path):
    path = write(tmp_path, "forever", "while True:\n    pass\n" + GOOD)
    start = time.perf_counter()
    line = one_line(
        cellgen("latex", "--equations", str(path), timeout=60, CELLGEN_EQUATION_TIMEOUT="2")
    )
    assert time.perf_counter() - start < 30
    assert "longer than 2 s" in line and "CELLGEN_EQUATION_TIMEOUT" in line


def test_a_bad_timeout_setting_is_one_line(tmp_path):
    path = write(tmp_path, "fine", GOOD)
    line = one_line(cellgen("latex", "--equations", str(path), CELLGEN_EQUATION_TIMEOUT="soon"))
    assert "CELLGEN_EQUATION_TIMEOUT='soon'" in line


def test_a_file_prints_to_stderr_without_corrupting_the_cell(tmp_path):
    path = write(tmp_path, "chatty", "print('hello from the file')\n" + GOOD)
    spec = registry.load_cell(path)
    assert spec.name == "chatty" and [e.name for e in spec.equations][-1] == "h"


def test_built_in_cells_run_in_process_and_stay_fast(monkeypatch):
    def no_child(*args, **kwargs):
        raise AssertionError("a built-in cell must not start a child process")

    monkeypatch.setattr(registry, "_run_isolated", no_child)
    start = time.perf_counter()
    for name in registry.builtin_cells():
        registry.load_cell(name)
    assert time.perf_counter() - start < 5  # about 0.05 s for all six here


def test_timeout_zero_runs_the_file_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_EQUATION_TIMEOUT", "0")
    monkeypatch.setattr(registry, "_run_isolated", None)  # would fail if called
    assert registry.load_cell(write(tmp_path, "inline", GOOD)).name == "inline"


# Item 16: messages that say what the user wrote ----------------------------------------------

MESSAGES = {
    "chained_product": (
        'h = cell.update("h", tanh(W_h @ x + U_h @ (r * h_prev) @ U_r))\n',
        ["(U_h @ (h_prev*r)) @ U_r", "write the matrix first, U_r @ (U_h @ (h_prev*r))"],
        ["U_h_h_prev_r"],
    ),
    "activation_at_input": (
        'h = cell.update("h", tanh(W_h @ x + tanh(h_prev) @ x))\n',
        ["@ applies a weight matrix to a vector", "cell.matrices"],
        ["TypeError", "unsupported operand"],
    ),
    "misspelled_call": (
        'h = cell.update("h", sigmod(W_h @ x + U_h @ (r * h_prev)))\n',
        ["'sigmod'", "did you mean sigmoid?", "from codegen.activations import"],
        [],
    ),
    "misspelled_sympy_function": (
        'h = cell.update("h", sympy.Function("tanhh")(W_h @ x + U_h @ (r * h_prev)))\n',
        ["unsupported function tanhh()", "did you mean tanh?"],
        [],
    ),
}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_equation_messages_show_the_users_expression(tmp_path, case):
    body, wanted, unwanted = MESSAGES[case]
    path = write(tmp_path, case, body)
    with pytest.raises(EquationError) as caught:
        registry.load_cell(path)
    message = str(caught.value)
    assert caught.value.line == 10 and caught.value.equation == "h", message
    for phrase in wanted:
        assert phrase in message, message
    for phrase in unwanted:
        assert phrase not in message, message


def test_a_misspelled_import_suggests_the_activation(tmp_path):
    path = write(tmp_path, "imports", GOOD, head=HEAD.replace("sigmoid, tanh", "sigmod, tanh"))
    with pytest.raises(EquationError, match=r"sigmod\(\) \(did you mean sigmoid\?\)") as caught:
        registry.load_cell(path)
    assert caught.value.line == 2


def test_a_file_name_that_cannot_name_a_cell_is_told_a_name_that_can(tmp_path):
    path = write(tmp_path, "ind-rnn", GOOD)
    line = one_line(cellgen("latex", "--equations", str(path)))
    assert "ind-rnn.py" in line and "ind_rnn.py" in line
    assert "name the file ind-rnn" not in line and "the cell 'ind-rnn'" not in line
    # the suggested name works
    renamed = path.rename(tmp_path / "ind_rnn.py")
    assert registry.load_cell(renamed).name == "ind_rnn"


# Item 13: `| head` -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["latex", "lstm", "--backward"],
        ["verify", "mgu", "--backend", "numpy", "--json"],
        ["generate", "--help"],
    ],
)
def test_a_closed_pipe_ends_quietly(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-m", "codegen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    child.stdout.close()  # the reader is gone before the first line: every write fails
    stderr = child.stderr.read().decode()
    # argparse's --help ignores a closed pipe itself and exits 0
    expected = 0 if "--help" in args else cli.EXIT_BROKEN_PIPE
    assert child.wait(timeout=120) == expected
    assert stderr == ""


# Item 18: listing and help run no equation file --------------------------------------------


@pytest.mark.parametrize("argv", [["list"], ["generate", "--help"], ["verify", "--help"]])
def test_list_and_help_execute_no_equation_file(argv, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("an equation file was executed")

    monkeypatch.setattr(registry, "run_equation_file", refuse)
    monkeypatch.setattr(registry, "_run_isolated", refuse)
    try:
        status = cli.main(argv)
    except SystemExit as done:  # --help
        status = done.code
    assert status == 0
    out = capsys.readouterr().out
    if argv == ["list"]:
        assert "lstm " in out and "Minimal gated unit" in out
        assert len(out.splitlines()) == len(registry.builtin_cells())
