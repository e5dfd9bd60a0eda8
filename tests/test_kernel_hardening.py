"""Hardening of codegen.load's kernels (issue 15): a cache is used only by a kernel that can read
it, a dropped kernel is freed, and a shape error blames the argument that is wrong."""

from __future__ import annotations

import gc
import shutil
import weakref

import numpy as np
import pytest

import codegen
from codegen.paths import builtin_equations_dir

from conftest import BACKENDS, make_problem


def test_backward_refuses_the_cache_of_a_kernel_of_another_dtype():
    """A float64 C kernel given a float32 kernel's cache would read floats as doubles."""
    k64 = codegen.load("lstm", "c", dtype="float64")
    k32 = codegen.load("lstm", "c", dtype="float32")
    xs, state0, params, dys, _ = make_problem(k32, dtype=np.float32)
    _, _, cache = k32.forward(xs, state0, params)
    with pytest.raises(ValueError, match=r"cache: .*float32.*float64"):
        k64.backward(dys, cache)
    k32.backward(dys, cache)  # its own kernel, and one loaded alike, still take it
    codegen.load("lstm", "c", dtype="float32").backward(dys, cache)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_refuses_the_cache_of_a_same_named_cell_from_another_file(
    backend, tmp_path, monkeypatch
):
    """A user's lstm.py (here: h = o * c, saving one array less) is not the built-in lstm."""
    monkeypatch.setenv("CELLGEN_CACHE_DIR", str(tmp_path / "cache"))
    source = (builtin_equations_dir() / "lstm.py").read_text()
    assert "o * tanh(c)" in source
    (tmp_path / "lstm.py").write_text(source.replace("o * tanh(c)", "o * c"))
    theirs = codegen.load(tmp_path / "lstm.py", backend)
    ours = codegen.load("lstm", backend)
    assert theirs.name == ours.name == "lstm"
    xs, state0, params, dys, _ = make_problem(ours)
    _, _, cache = ours.forward(xs, state0, params)
    with pytest.raises(ValueError, match=r"cache: .*lstm\.py"):
        theirs.backward(dys, cache)
    # the same file copied elsewhere is the same cell
    shutil.copy(builtin_equations_dir() / "lstm.py", tmp_path / "copy.py")
    (tmp_path / "same").mkdir()
    shutil.move(tmp_path / "copy.py", tmp_path / "same" / "lstm.py")
    codegen.load(tmp_path / "same" / "lstm.py", backend).backward(dys, cache)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dropped_kernel_is_freed(backend):
    """Nothing in cellgen (a cache of shapes, say) keeps a kernel and its workspace alive."""
    k = codegen.load("gru", backend)
    xs, state0, params, dys, _ = make_problem(k)
    for T in (2, 3):  # two sizes, so that any per-size cache is filled
        _, _, cache = k.forward(xs[:T], state0, params)
        k.backward(dys[:T], cache)
    alive = weakref.ref(k)
    del k, cache
    gc.collect()
    assert alive() is None


@pytest.fixture(params=BACKENDS)
def kernel(request):
    return codegen.load("lstm", request.param)


def test_xs_of_another_input_size_is_blamed_not_the_weights(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=3, H=4)
    wide = np.zeros((2, 3, 5), xs.dtype)
    with pytest.raises(ValueError, match=r"^xs: input size I = 5 .*W_f.* I = 3"):
        kernel.forward(wide, state0, params)


def test_a_state_of_the_wrong_batch_size_names_the_numbers_not_a_letter(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=3, H=4)
    state0["h"] = state0["h"][:2]
    with pytest.raises(ValueError, match=r"state0\['h'\]: expected shape \(B, H\) with B = 3") as e:
        kernel.forward(xs, state0, params)
    assert "= (3, H)" not in str(e.value)


def test_a_state_missing_from_dfinal_counts_as_zero(kernel):
    xs, state0, params, dys, dfinal = make_problem(kernel, T=2, B=3, I=3, H=4)
    _, _, cache = kernel.forward(xs, state0, params)
    partial = {"h": dfinal["h"]}
    zero = {"h": dfinal["h"], "c": np.zeros_like(dfinal["c"])}
    got, want = kernel.backward(dys, cache, partial), kernel.backward(dys, cache, zero)
    np.testing.assert_array_equal(got[0], want[0])
    for name in want[2]:
        np.testing.assert_array_equal(got[2][name], want[2][name])
