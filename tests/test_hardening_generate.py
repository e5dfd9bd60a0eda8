"""`generate` writes a whole set or nothing, cleans up after itself on any exit, keeps the
umask's permissions, and reports files no equation produces (issue 15, items 3, 11 and 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from codegen import cli, render
from codegen.errors import CellgenError
from codegen.registry import builtin_cells

ROOT = Path(__file__).resolve().parents[1]
OLD = "# an older version\n"


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render.generate_files(builtin_cells())


@pytest.fixture
def stale(tmp_path, files) -> Path:
    """A complete output directory in which every file is out of date."""
    out = tmp_path / "generated"
    render.write_files(files, out)
    for rel in files:
        (out / rel).write_text(files[rel] + OLD)
    return out


def state(out: Path, files: dict[str, str]) -> dict[str, str]:
    """'new' or 'old' for each generated file."""
    return {rel: "new" if (out / rel).read_text() == files[rel] else "old" for rel in files}


def cellgen(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args], capture_output=True, text=True, env=env
    )


# kill -9 at the worst moments: `call` is the os function after whose n-th call the child dies
KILLED = """
import os, sys
from pathlib import Path
from codegen import render
from codegen.registry import builtin_cells

call, n = sys.argv[2], int(sys.argv[3])
real, calls = getattr(os, call), []

def dying(*args, **kwargs):
    calls.append(args)
    if len(calls) > n:
        os._exit(9)
    return real(*args, **kwargs)

setattr(render.os, call, dying)
render.write_files(render.generate_files(builtin_cells()), Path(sys.argv[1]))
"""


def kill_during(out: Path, call: str, n: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", KILLED, str(out), call, str(n)], env=env)
    assert result.returncode == 9


def test_killed_while_renaming_the_next_run_completes_the_set(stale, files):
    kill_during(stale, "replace", 4)  # the journal, then three files: killed at the fourth
    assert sorted(state(stale, files).values()).count("new") == 3
    check = cellgen("generate", "--check", "--out", str(stale))
    assert check.returncode == 1 and "stray:" in check.stdout and "interrupted" in check.stdout
    # a plain write of the same directory (as codegen.load does for the cache) completes it
    assert render.write_files({}, stale) == []
    assert set(state(stale, files).values()) == {"new"}
    assert render.stray_files(files, stale) == []


def test_killed_while_staging_the_old_set_stays_and_the_stage_goes(stale, files):
    kill_during(stale, "link", 5)
    assert set(state(stale, files).values()) == {"old"}
    result = cellgen("generate", "--out", str(stale))
    assert result.returncode == 0, result.stderr
    assert set(state(stale, files).values()) == {"new"}
    assert render.stray_files(files, stale) == [] and "stray" not in result.stdout


def test_a_full_disk_changes_nothing_and_is_one_line(stale, files, monkeypatch, capsys):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render.os, "link", full)
    assert cli.main(["generate", "--out", str(stale)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(stale) in err[0]
    assert set(state(stale, files).values()) == {"old"}
    assert render.stray_files(files, stale) == []


def test_a_failed_rename_puts_the_old_files_back(stale, files, monkeypatch):
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("numpy/lstm.py"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(render.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        render.write_files(files, stale)
    assert set(state(stale, files).values()) == {"old"}  # c/lstm.* too: never new beside old
    assert render.stray_files(files, stale) == []


def test_ctrl_c_while_staging_leaves_no_temporary(stale, files, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(render.os, "link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render.write_files(files, stale)
    assert set(state(stale, files).values()) == {"old"}
    assert render.stray_files(files, stale) == []


def test_ctrl_c_while_renaming_waits_for_the_set(stale, files, monkeypatch):
    real = os.replace

    def interrupted(src, dst):
        if str(dst).endswith("c/gru.c"):
            os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(render.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render.write_files(files, stale)
    assert set(state(stale, files).values()) == {"new"}
    assert render.stray_files(files, stale) == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_have_the_umask_mode(tmp_path, files, umask):
    previous = os.umask(umask)
    try:
        render.write_files(files, tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {(tmp_path / "out" / rel).stat().st_mode & 0o777 for rel in files}
    assert modes == {0o666 & ~umask}


def test_concurrent_writers_of_one_directory_agree(tmp_path, files):
    errors: list[BaseException] = []

    def write() -> None:
        try:
            render.write_files(files, tmp_path / "out")
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(state(tmp_path / "out", files).values()) == {"new"}
    assert render.stray_files(files, tmp_path / "out") == []


def test_check_reports_files_no_equation_produces(tmp_path, files):
    out = tmp_path / "generated"
    render.write_files(files, out)
    (out / "numpy" / "mut3.py").write_text("# generated from a file outside equations/\n")
    (out / "numpy" / "__pycache__").mkdir()
    (out / "numpy" / "__pycache__" / "lstm.cpython-311.pyc").write_bytes(b"")
    result = cellgen("generate", "--check", "--out", str(out))
    assert result.returncode == 1
    strays = [line for line in result.stdout.splitlines() if line.startswith("stray:")]
    assert len(strays) == 1 and "numpy/mut3.py" in strays[0]
    # naming cells checks only those cells' files: the others are not strays then
    assert cellgen("generate", "lstm", "--check", "--out", str(out)).returncode == 0


def test_generate_of_an_equation_file_without_out_is_refused(tmp_path):
    mine = tmp_path / "my_mgu.py"
    mine.write_text((ROOT / "equations" / "mgu.py").read_text().replace('"mgu"', '"my_mgu"'))
    before = sorted(p.name for p in (ROOT / "generated").rglob("*") if p.is_file())
    result = cellgen("generate", "--equations", str(mine))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "my_mgu.py" in lines[0]
    assert sorted(p.name for p in (ROOT / "generated").rglob("*") if p.is_file()) == before
    # a built-in cell's own file is fine
    ok = cellgen("generate", "--check", "--equations", str(ROOT / "equations" / "mgu.py"))
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_write_errors_are_cellgen_errors_and_os_errors(tmp_path, files):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CellgenError) as info:
        render.write_files(files, blocker / "out")
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)


def test_a_file_system_without_hard_links_still_keeps_the_old_files(stale, files, monkeypatch):
    def refused(*args):
        raise OSError(1, "Operation not permitted")

    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("numpy/mgu.py"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(render.os, "link", refused)
    monkeypatch.setattr(render.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        render.write_files(files, stale)
    assert set(state(stale, files).values()) == {"old"}
    assert render.stray_files(files, stale) == []
