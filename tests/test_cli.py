"""The cellgen command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codegen.registry import builtin_cells


def cellgen(*args, check=False):
    result = subprocess.run(
        [sys.executable, "-m", "codegen", *args], capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_list_names_every_cell_with_its_description():
    out = cellgen("list", check=True).stdout
    for cell in builtin_cells():
        assert any(line.startswith(cell + " ") and len(line) > len(cell) + 10
                   for line in out.splitlines())  # fmt: skip


def test_generate_check_passes_on_the_committed_files():
    result = cellgen("generate", "--check")
    assert result.returncode == 0, result.stdout
    assert "up to date" in result.stdout


def test_generate_check_names_a_hand_edited_file(tmp_path):
    cellgen("generate", "--out", str(tmp_path), check=True)
    victim = tmp_path / "numpy" / "gru.py"
    victim.write_text(victim.read_text().replace("np.tanh", "np.sinh"))
    before = victim.read_text()
    result = cellgen("generate", "--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "numpy/gru.py" in result.stdout and "lstm" not in result.stdout
    assert victim.read_text() == before  # --check writes nothing
    cellgen("generate", "--out", str(tmp_path), check=True)
    assert cellgen("generate", "--check", "--out", str(tmp_path)).returncode == 0


@pytest.mark.parametrize("command", [["latex", "nope"], ["verify", "nope"],
                                     ["generate", "nope", "--check"]])  # fmt: skip
def test_unknown_cell_exits_2_with_one_line_naming_the_known_cells(command):
    result = cellgen(*command)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "unknown cell 'nope'" in lines[0]
    for cell in builtin_cells():
        assert cell in lines[0]


# the latex command: tests/test_latex.py


def test_verify_prints_a_passing_row_per_tensor():
    result = cellgen("verify", "gru", "--backend", "numpy", check=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("gru ")]
    tensors = [line.split()[2] for line in rows]
    assert tensors == ["xs", "state0[h]", "W_z", "W_r", "W_h", "U_z", "U_r", "U_h", "b_z",
                       "b_r", "b_h"]  # fmt: skip
    assert all(line.rstrip().endswith("PASS") for line in rows)
    assert "11 passed, 0 failed" in result.stdout


def test_verify_json_is_machine_readable():
    result = cellgen("verify", "lstm", "--backend", "c", "--json", check=True)
    rows = json.loads(result.stdout)
    assert {r["tensor"] for r in rows} >= {"xs", "state0[h]", "state0[c]", "W_f", "b_o"}
    assert all(r["verdict"] == "PASS" and r["max_rel"] <= r["tolerance"] for r in rows)


def test_help_describes_every_command():
    out = cellgen("--help", check=True).stdout
    for command in ("list", "generate", "latex", "verify"):
        assert command in out
