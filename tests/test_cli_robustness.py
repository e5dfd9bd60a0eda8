"""The command line under failure: bad cells, bad options, and generate failing part way.

(An unknown cell exiting 2 with the known cells, `generate --check` on a hand-edited file and
generation under two PYTHONHASHSEED values are in test_cli.py and test_golden.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen import render
from codegen.registry import builtin_cells

BROKEN = """
from codegen.activations import sigmoid
from codegen.cell import Cell

cell = Cell("broken", description="uses a name it never defines", reference="tests")
x = cell.input("x")
(h_prev,) = cell.states("h")
(W,) = cell.matrices("W")
cell.update("h", sigmoid(W @ x + undefined_name))
"""


def cellgen(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args], capture_output=True, text=True, env=env
    )


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: its bytes and its modification time in nanoseconds."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def generated(tmp_path):
    """A generated/ of our own, complete, with one file made stale by hand."""
    out = tmp_path / "generated"
    assert cellgen("generate", "--out", str(out)).returncode == 0
    stale = out / "numpy" / "lstm.py"
    stale.write_text(stale.read_text() + "# edited by hand\n")
    return out


def test_generate_failing_in_one_cell_leaves_every_file_as_it_was(generated, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    before = snapshot(generated)
    result = cellgen("generate", "lstm", "gru", "--equations", str(broken), "--out", str(generated))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "undefined_name" in result.stderr
    # nothing written: not even the stale lstm file, which the good cells would have fixed
    assert snapshot(generated) == before
    assert not list(generated.rglob("*.tmp"))


def test_a_failed_write_leaves_no_partial_file_and_no_temporary(generated, monkeypatch):
    """Each file is replaced in one step: a failure while writing one leaves it as it was."""
    files = render.generate_files(builtin_cells())
    before = snapshot(generated)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("lstm.py"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(render.os, "replace", failing_replace)
    with pytest.raises(OSError):
        render.write_files(files, generated)
    after = snapshot(generated)
    assert after["numpy/lstm.py"] == before["numpy/lstm.py"]
    assert not list(generated.rglob("*.tmp")) and after.keys() == before.keys()


def test_generate_check_sees_the_stale_file_and_changes_nothing(generated):
    before = snapshot(generated)
    result = cellgen("generate", "--check", "--out", str(generated))
    assert result.returncode == 1
    assert result.stdout.count("would change") == 1 and "numpy/lstm.py" in result.stdout
    assert snapshot(generated) == before


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "nope", "--json"],
        ["verify", "--equations", "missing/cell.py"],
        ["verify", "lstm", "--method", "taylor", "--dtype", "float32", "--json"],
    ],
)
def test_verify_errors_are_one_line_and_print_no_rows(args):
    result = cellgen(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellgen: error:")


def test_verify_rejects_unknown_options_with_usage():
    result = cellgen("verify", "lstm", "--method", "newton")
    assert result.returncode == 2 and "invalid choice: 'newton'" in result.stderr
    result = cellgen("verify", "lstm", "--dtype", "float16")
    assert result.returncode == 2 and "invalid choice: 'float16'" in result.stderr


def test_verify_of_an_equation_file_and_json_rows(tmp_path):
    source = (Path(__file__).resolve().parents[1] / "equations" / "mgu.py").read_text()
    cell = tmp_path / "my_mgu.py"
    cell.write_text(source.replace('Cell(\n    "mgu"', 'Cell(\n    "my_mgu"'))
    env = dict(os.environ, CELLGEN_CACHE_DIR=str(tmp_path / "cache"))
    result = cellgen("verify", "--equations", str(cell), "--backend", "c", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["cell"] for r in rows} == {"my_mgu"} and all(r["verdict"] == "PASS" for r in rows)
