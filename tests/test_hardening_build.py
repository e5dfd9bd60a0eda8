"""The C build under damage: a corrupt cached library, a missing or broken compiler, a cache
that cannot be written (issue 15, items 2 and 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# builds mgu's C in the cache, runs it, and prints its first output: a crash in dlopen ("Bus
# error") kills only this child
RUN_MGU = """
import numpy as np, codegen
k = codegen.load("mgu", backend="c")
shapes = k.param_shapes(3, 4)
params = {n: np.full(s, 0.1) for n, s in shapes.items()}
ys, _, _ = k.forward(np.ones((2, 1, 3)), {"h": np.zeros((1, 4))}, params)
print(repr(float(ys[-1, 0, 0])))
"""


def run(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, CELLGEN_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environ, cwd=ROOT
    )


def cellgen(*args: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
    return run("-m", "codegen", *args, cache=cache, **env)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache holding mgu's library, and the output of a good run."""
    cache = tmp_path_factory.mktemp("cache")
    result = run("-c", RUN_MGU, cache=cache)
    assert result.returncode == 0, result.stderr
    (library,) = (cache / "c").glob("mgu-*.so")
    return cache, library, library.read_bytes(), result.stdout


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:64], id="truncated-header"),
        pytest.param(lambda b: b[:4096] + bytes(len(b) - 4096), id="zeroed"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_a_damaged_cached_library_is_rebuilt_not_loaded(built, damage):
    cache, library, good, output = built
    library.write_bytes(damage(good))
    result = run("-c", RUN_MGU, cache=cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout == output
    assert library.read_bytes() == good  # healed: the next process loads it unchanged


def test_a_library_without_its_recorded_hash_is_rebuilt(built):
    cache, library, good, output = built
    Path(str(library) + ".sha256").unlink()
    library.write_bytes(good[:100])
    result = run("-c", RUN_MGU, cache=cache)
    assert result.returncode == 0 and result.stdout == output, result.stderr
    assert Path(str(library) + ".sha256").is_file()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("cellgen: error:"), result.stderr
    return lines[0]


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_a_missing_or_broken_compiler_is_one_line_and_numpy_rows_still_print(tmp_path, cc):
    result = cellgen("verify", "mgu", cache=tmp_path / "cache", CC=cc)
    line = one_line_error(result)
    assert "--backend numpy" in line and "$CC" in line
    rows = [r for r in result.stdout.splitlines() if r.startswith("mgu ")]
    assert rows and all(" numpy " in r and r.endswith("PASS") for r in rows), result.stdout


def test_verify_json_keeps_the_numpy_rows_when_c_cannot_build(tmp_path):
    result = cellgen("verify", "mgu", "--json", cache=tmp_path / "cache", CC="false")
    one_line_error(result)
    rows = json.loads(result.stdout)
    assert rows and {r["backend"] for r in rows} == {"numpy"}


def test_a_compiler_failing_silently_says_so_in_one_line(tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "fakecc 1.0" && exit 0\nexit 3\n')
    fake.chmod(0o755)
    result = cellgen("verify", "mgu", "--backend", "c", cache=tmp_path / "cache", CC=str(fake))
    line = one_line_error(result)
    assert "exit status 3" in line and "--backend numpy" in line
    assert not line.rstrip().endswith(":")


@pytest.mark.parametrize("command", [["verify", "mgu"], ["verify", "MY"]])
def test_an_unwritable_cache_is_one_line_naming_cellgen_cache_dir(tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache's parent directory should be")
    (tmp_path / "my.py").write_text((ROOT / "equations" / "mgu.py").read_text().replace(
        '"mgu"', '"my"'))  # fmt: skip
    command = [str(tmp_path / "my.py") if c == "MY" else c for c in command]
    result = cellgen(*command, "--backend", "c", cache=blocker / "cache")
    line = one_line_error(result)
    assert "CELLGEN_CACHE_DIR" in line and str(blocker / "cache") in line
