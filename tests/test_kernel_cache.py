"""The kernels of a user's cell are generated into the cache once (issue 15 item 10): a reload
of an unchanged equation file finds them, keyed by the file's text and cellgen's own code."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import codegen
import codegen.kernel
from codegen.paths import builtin_equations_dir

from conftest import BACKENDS, make_problem


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A private cache, and a count of the kernel plans built (each generation builds one)."""
    monkeypatch.setenv("CELLGEN_CACHE_DIR", str(tmp_path / "cache"))
    built = []
    original = codegen.kernel.build_kernel

    def build_kernel(spec):
        built.append(spec.name)
        return original(spec)

    monkeypatch.setattr(codegen.kernel, "build_kernel", build_kernel)
    return built


def _mine(tmp_path, text=None):
    path = tmp_path / "mine.py"
    source = (builtin_equations_dir() / "mgu.py").read_text().replace('"mgu"', '"mine"')
    path.write_text(text if text is not None else source)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unchanged_cell_is_generated_once(counted, tmp_path, backend):
    path = _mine(tmp_path)
    first = codegen.load(path, backend)
    assert counted == ["mine"]
    again = codegen.load(path, backend)
    assert counted == ["mine"]  # found in the cache: no plan built, nothing rendered
    xs, state0, params, dys, _ = make_problem(first)
    ys, _, cache = first.forward(xs, state0, params)
    np.testing.assert_array_equal(again.forward(xs, state0, params)[0], ys)
    again.backward(dys, cache)  # the same cell: each takes the other's cache


def test_a_changed_file_or_an_incomplete_folder_is_generated_again(counted, tmp_path):
    path = _mine(tmp_path)
    k = codegen.load(path)
    xs, state0, params, _, _ = make_problem(k)
    ys = k.forward(xs, state0, params)[0]
    path.write_text(path.read_text().replace("(1 - f) * h_prev", "(1 - f) * h_prev * 0.5"))
    changed = codegen.load(path)
    assert counted == ["mine", "mine"]
    assert not np.allclose(changed.forward(xs, state0, params)[0], ys)  # the new equations
    folders = list((tmp_path / "cache" / "kernels").iterdir())
    assert len(folders) == 2
    for folder in folders:  # a set interrupted before its list was written is not used
        (folder / "cellgen-complete").unlink()
    codegen.load(path)
    assert counted == ["mine", "mine", "mine"]
    for module in (tmp_path / "cache" / "kernels").rglob("mine.py"):
        module.unlink()  # a file lost from a complete set
    codegen.load(path)
    assert len(counted) == 4


def test_the_key_follows_cellgens_code(counted, tmp_path, monkeypatch):
    """Another version of cellgen (its sources or templates) generates anew."""
    path = _mine(tmp_path)
    codegen.load(path)
    load_module = importlib.import_module("codegen.load")
    monkeypatch.setattr(load_module, "_code_digest", lambda folder: "another version")
    codegen.load(path)
    assert counted == ["mine", "mine"]
