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
