"""Memory a kernel keeps between calls (issue 15 items 8 and 9): its work arrays are bounded,
owned by the kernel and freed with it; a call is sized before anything is allocated."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import codegen

from conftest import BACKENDS, make_problem

MiB = 1 << 20


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.fixture
def loaded(request):
    """An lstm kernel in a list (the test may take it out and drop it), used once (so that
    lazy imports are done), then memory traced from there on, NumPy's arrays included."""
    box = [codegen.load("lstm", request.param)]
    _train_step(box[0], T=2, B=1, I=3, H=4)
    tracemalloc.start()
    try:
        yield box
    finally:
        tracemalloc.stop()


def _train_step(k, **sizes) -> None:
    """One forward and backward whose results are dropped: only what the kernel keeps stays."""
    xs, state0, params, dys, _ = make_problem(k, **sizes)
    _, _, cache = k.forward(xs, state0, params)
    k.backward(dys, cache)


BIG = {"T": 64, "B": 32, "I": 64, "H": 128}  # a few MiB of work arrays in float64


@pytest.mark.parametrize("loaded", BACKENDS, indirect=True)
def test_work_kept_between_calls_is_bounded(loaded):
    k, before = loaded[0], _traced()
    assert k.work_limit == 64 * MiB  # the documented default
    k.work_limit = MiB
    _train_step(k, **BIG)
    _train_step(k, T=2, B=1, I=3, H=4)  # a small call after a big one
    assert _traced() - before <= MiB + MiB // 4


@pytest.mark.parametrize("loaded", BACKENDS, indirect=True)
def test_a_dropped_kernel_gives_its_work_arrays_back(loaded):
    k, before = loaded.pop(), _traced()
    _train_step(k, **BIG)
    assert _traced() - before > 2 * MiB  # kept for the next call, which reuses them
    del k
    assert _traced() - before < MiB // 4


def test_each_thread_keeps_its_own_bounded_work():
    from concurrent.futures import ThreadPoolExecutor

    k = codegen.load("lstm")
    k.work_limit = MiB
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _train_step(k, T=8, B=4, I=8, H=16), range(8)))
    work = k._functions._local  # threads ended: their work went with them
    assert getattr(work, "work", None) is None
    xs, state0, params, _, _ = make_problem(k, T=3, B=2, I=3, H=4)
    np.testing.assert_array_equal(  # a fresh Work computes what no Work does
        k.forward(xs, state0, params)[0], k._functions.module.forward(xs, state0, params)[0]
    )


# sizes checked before anything is allocated (item 9) --------------------------------------------


def test_c_size_functions_say_so_instead_of_wrapping():
    c = codegen.load("lstm", "c")._functions
    size_max = 2**64 - 1 if np.dtype(np.uintp).itemsize == 8 else 2**32 - 1
    # the LSTM saves f, i, c~, o, tanh(c) and c: six numbers per unit and step
    assert c._saved_size(5, 3, 7) == 6 * 5 * 3 * 7
    assert c._saved_size(2**52, 1, 1) == 6 * 2**52  # far from the limit: exact
    assert c._saved_size(2**62, 1, 1) == size_max  # was 2**63, wrapped
    assert c._saved_size(2**21, 2**21, 2**21) == size_max
    assert c._work_size(2**62, 1, 1, 1) == size_max
    assert c._work_size(1, 1, 1, 2**32) == size_max  # 4 H^2
    assert c._packed_size(2**61, 2) == size_max
    assert c._infer_work_size(2**40, 1, 2**40) == size_max
    assert c._work_size(5, 3, 2, 7) == c._work_size(5, 3, 1, 7) + 4 * 7  # 4 I H: I adds 4 H


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_call_over_the_memory_limit_is_refused_saying_how_much_it_needs(backend):
    k = codegen.load("lstm", backend)
    xs, state0, params, dys, _ = make_problem(k, **BIG)
    _, _, cache = k.forward(xs, state0, params)
    k.memory_limit = MiB  # ys alone, T B H float64 numbers, is 2 MiB
    with pytest.raises(ValueError, match=r"forward at T=64, B=32, I=64, H=128 in float64: "
                       r"needs at least \d+\.\d MiB of memory, more than k\.memory_limit "
                       r"\(1\.0 MiB\)"):  # fmt: skip
        k.forward(xs, state0, params)
    with pytest.raises(ValueError, match=r"backward at .*needs at least"):
        k.backward(dys, cache)
    with pytest.raises(ValueError, match=r"infer at .*needs at least"):
        k.infer(xs, state0, params)
    k.memory_limit = None  # the machine's physical memory
    k.backward(dys, cache)


def test_a_sequence_larger_than_the_machine_is_refused_before_allocating():
    """xs of 2**40 steps costs nothing (broadcast); its ys would need 32 TiB."""
    k = codegen.load("lstm")
    _, state0, params, _, _ = make_problem(k, T=1, B=1, I=1, H=4)
    xs = np.broadcast_to(np.zeros(1), (2**40, 1, 1))
    with pytest.raises(ValueError, match=r"needs at least \d+\.\d TiB of memory, more than the "
                       r"physical memory"):  # fmt: skip
        k.forward(xs, state0, params)


def test_a_count_that_does_not_fit_in_size_t_is_refused():
    k = codegen.load("lstm", "c")
    assert k._functions.numbers("forward", 2**62, 1, 1, 1) is None
    with pytest.raises(ValueError, match=r"forward at T=4611686018427387904.*does not even fit"):
        k._check_memory("forward", 2**62, 1, 1, 1, np.float64)


@pytest.mark.parametrize("cell", ["lstm", "lstmp", "sru", "ln_lstm"])
def test_the_numpy_count_of_what_forward_keeps_is_what_its_cache_holds(cell):
    """Each saved series counted at its own size: per-row scalars (ln_lstm's means) as 1, a
    projection as P, an output equation's state (sru's c) besides ys."""
    k = codegen.load(cell, "numpy")
    rng = np.random.default_rng(0)
    T, B, H = 6, 2, 7
    I = H if cell == "sru" else 5  # sru adds x to h: I = H
    extra = {n: 3 for n in k.sizes}
    params = {n: rng.standard_normal(s) for n, s in k.param_shapes(I, H, **extra).items()}
    state0 = {s: rng.standard_normal(z) for s, z in k.state_shapes(B, H, **extra).items()}
    _, _, cache = k.forward(rng.standard_normal((T, B, I)), state0, params)
    kept = sum(a.size for a in cache["saved"].values())
    assert k._functions.numbers("forward", T, B, I, H, *extra.values()) == kept
