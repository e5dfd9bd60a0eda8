"""Per-row lengths and reverse in the kernels (issue 10 item 1), for every cell, backend and
dtype: against the same kernel run row by row without lengths (each row over its own steps, in
its own order), exact zeros past a row's length, states carried bit for bit, infer equal to
forward, and one-line errors for bad lengths."""

from __future__ import annotations

import numpy as np
import pytest

import codegen
from codegen.verify import verify_kernel
from codegen.verify.problems import declared_sizes

from conftest import BACKENDS, CELLS, make_problem, rel_err

T, B, I, H = 6, 7, 3, 4
LENGTHS = np.array([6, 0, 3, 1, 6, 2, 5])  # unsorted, with 0, 1 and T
SHORT = np.array([2, 0, 3, 1, 5, 2, 4])  # no row runs the last step


def _kernel(cell: str, backend: str, dtype: str):
    config = codegen.backends.get(backend)
    return codegen.load(cell, backend, dtype=dtype if config.default_dtype else None)


def row_by_row(k, xs, state0, params, dys, dfinal, lengths, reverse):
    """The reference: each row alone, over its own steps in its order, without lengths."""
    ys, dxs = np.zeros_like(dys), np.zeros_like(xs)
    final = {s: state0[s].copy() for s in k.states}
    dstate0 = {s: dfinal[s].copy() for s in k.states}
    dparams = {p: np.zeros_like(v) for p, v in params.items()}
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        steps = np.arange(n)[::-1] if reverse else np.arange(n)
        one = {s: state0[s][b : b + 1].copy() for s in k.states}
        y, f, cache = k.forward(np.ascontiguousarray(xs[steps, b : b + 1]), one, params)
        d_one = {s: dfinal[s][b : b + 1].copy() for s in k.states}
        dx, d0, dp = k.backward(np.ascontiguousarray(dys[steps, b : b + 1]), cache, d_one)
        ys[steps, b], dxs[steps, b] = y[:, 0], dx[:, 0]
        for s in k.states:
            final[s][b], dstate0[s][b] = f[s][0], d0[s][0]
        for p in dparams:
            dparams[p] += dp[p]
    return ys, final, dxs, dstate0, dparams


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_and_reverse_equal_each_row_run_alone(cell, backend, reverse, dtype):
    k = _kernel(cell, backend, dtype)
    xs, state0, params, dys, dfinal = make_problem(k, T, B, I, H, dtype=np.dtype(dtype))
    lengths = SHORT if reverse == (dtype == "float32") else LENGTHS  # both with each direction
    ys, final, cache = k.forward(xs, state0, params, lengths=lengths, reverse=reverse)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal)
    want = row_by_row(k, xs, state0, params, dys, dfinal, lengths, reverse)
    tol = 1e-12 if dtype == "float64" else 2e-5
    got = (ys, final, dxs, dstate0, dparams)
    for name, a, b in zip(("ys", "final", "dxs", "dstate0", "dparams"), got, want, strict=True):
        pairs = [(k_, a[k_], b[k_]) for k_ in b] if isinstance(b, dict) else [("", a, b)]
        for key, x, y in pairs:
            assert x.dtype == np.dtype(dtype)
            assert rel_err(x, y) <= tol, (name, key, rel_err(x, y))
    past = np.arange(T)[:, None] >= lengths[None, :]  # (T, B): steps past each row's length
    assert np.all(ys[past] == 0) and np.all(dxs[past] == 0)
    last = np.where(lengths > 0, 0 if reverse else lengths - 1, 0)
    carried = lengths if k.output in k.states else []  # an output equation is no state
    for b, n in enumerate(carried):  # the state is carried bit for bit from its last step
        expected = ys[last[b], b] if n else state0[k.output][b]
        assert np.array_equal(final[k.output][b], expected)
    empty = lengths == 0  # a row without steps: its adjoints pass straight through
    for s in k.states:
        assert np.array_equal(final[s][empty], state0[s][empty])
        assert np.array_equal(dstate0[s][empty], dfinal[s][empty])
    packed_ys, packed_final = k.infer(xs, state0, k.pack(params), lengths, reverse)
    assert rel_err(packed_ys, ys) <= tol and np.all(packed_ys[past] == 0)
    for s in k.states:
        assert rel_err(packed_final[s], final[s]) <= tol


@pytest.mark.parametrize("backend", BACKENDS)
def test_dys_past_a_length_is_ignored_and_full_lengths_change_nothing(backend):
    k = _kernel("lstm", backend, "float64")
    xs, state0, params, dys, dfinal = make_problem(k, T, B, I, H)
    _, _, cache = k.forward(xs, state0, params, lengths=LENGTHS)
    noisy = dys.copy()
    noisy[np.arange(T)[:, None] >= LENGTHS[None, :]] = 1e300
    clean = k.backward(dys, cache, dfinal)
    assert all(np.isfinite(g).all() for g in (clean[0], *clean[1].values()))
    noisy_grads = k.backward(noisy, cache, dfinal)
    assert np.array_equal(noisy_grads[0], clean[0])
    for p in params:
        assert np.array_equal(noisy_grads[2][p], clean[2][p])
    plain = k.forward(xs, state0, params)
    full = k.forward(xs, state0, params, lengths=np.full(B, T))
    assert np.array_equal(plain[0], full[0])
    # reversed without lengths: every row over all T steps, backwards, ys aligned with xs
    rev, _, _ = k.forward(xs, state0, params, reverse=True)
    flipped, _, _ = k.forward(np.ascontiguousarray(xs[::-1]), state0, params)
    assert rel_err(rev, flipped[::-1]) <= 1e-14


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([1, 2], r"lengths: expected shape \(B,\) = \(7,\), got \(2,\)"),
        (np.full(7, 2.0), "lengths: expected integers of shape"),
        ([7, 1, 1, 1, 1, 1, 1], r"lengths: each must be in 0..T = 0..6, got 7"),
        ([-1, 1, 1, 1, 1, 1, 1], r"lengths: each must be in 0..T = 0..6, got -1"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_lengths_name_lengths(backend, lengths, message):
    k = _kernel("gru", backend, "float64")
    xs, state0, params, _, _ = make_problem(k, T, B, I, H)
    with pytest.raises(ValueError, match=message):
        k.forward(xs, state0, params, lengths=lengths)
    with pytest.raises(ValueError, match=message):
        k.infer(xs, state0, params, lengths=lengths)


class Forgetful:
    """A kernel whose backward differentiates another pass than its forward ran: without the
    lengths, or without reverse."""

    def __init__(self, kernel, forget: str) -> None:
        self._kernel, self._forget = kernel, forget

    def __getattr__(self, name):
        return getattr(self._kernel, name)

    def forward(self, xs, state0, params, lengths=None, reverse=False):
        ys, final, _ = self._kernel.forward(xs, state0, params, lengths, reverse)
        if self._forget == "lengths":
            lengths = None
        else:
            reverse = False
        return ys, final, self._kernel.forward(xs, state0, params, lengths, reverse)[2]


@pytest.mark.parametrize("forget", ["lengths", "reverse"])
def test_verify_checks_every_gradient_with_lengths_and_reverse(forget):
    kernel = codegen.load("mgu", "c")
    assert all(r.verdict == "PASS" for r in verify_kernel(kernel))
    rows = verify_kernel(Forgetful(kernel, forget))
    failed = {r.tensor for r in rows if r.verdict == "FAIL"}
    assert {"xs", "W_f", "U_h"} <= failed, failed


def test_bench_times_forward_backward_with_lengths():
    from codegen.bench import LENGTH_PASSES, Shape, run, spread_lengths

    assert spread_lengths(32, 32).tolist() == list(range(1, 33))  # uniform over 1..T
    assert spread_lengths(10, 1).tolist() == [5]
    report = run(["gru"], [Shape(4, 3, 2, 3)], ["float64"], rounds=1, min_time=0.0,
                 settle=0.0, with_torch=False, peak_size=32, lengths=True)  # fmt: skip
    rows = {(r.impl, r.passes): r for r in report.rows}
    for backend in BACKENDS:
        full, spread = (rows[(backend, p)] for p in LENGTH_PASSES)
        # the flops counted are the steps the rows run: lengths 1, 2, 4 of T = 4 for spread
        plain = rows[(backend, "forward+backward")]
        assert full.gflops * full.median_ms == pytest.approx(plain.gflops * plain.median_ms)
        ratio = (spread.gflops * spread.median_ms) / (full.gflops * full.median_ms)
        assert ratio == pytest.approx(np.mean(spread_lengths(4, 3)) / 4)
    assert "L=1..T" in report.table()


@pytest.mark.parametrize("cell", CELLS)
def test_c_kernels_with_lengths_stay_inside_their_buffers(cell):
    """Canaries after `work` and `saved`: reversed, with unequal lengths, nothing is written
    past the sizes the plan states."""
    from codegen.backends.c.ffi import address

    k = _kernel(cell, "c", "float64")
    c = k._functions
    xs, state0, params, dys, dfinal = make_problem(k, T, B, I, H)
    lengths = SHORT.astype(np.int32)
    K = xs.shape[2]  # I, or H for an input used elementwise
    sizes = list(declared_sizes(k, H).values())  # the cell's own sizes, after H
    work_size, saved_size = c._work_size(T, B, K, H, *sizes), c._saved_size(T, B, H, *sizes)
    work, saved = np.full(work_size + 64, 7.0), np.full(saved_size + 64, 7.0)
    ys = np.empty(dys.shape)
    final = {s: np.empty_like(state0[s]) for s in k.states}
    c._forward(
        T, B, K, H, *sizes, address(xs), address(lengths), 1,
        *[address(state0[s]) for s in k.states],
        *[address(params[p]) for p in k.params], address(ys),
        *[address(final[s]) for s in k.states], address(saved), address(work),
    )  # fmt: skip
    dxs = np.empty_like(xs)
    dstate0 = {s: np.empty_like(state0[s]) for s in k.states}
    dparams = {p: np.empty_like(v) for p, v in params.items()}
    c._backward(
        T, B, K, H, *sizes, address(xs), address(lengths), 1,
        *[address(state0[s]) for s in k.states],
        *[address(params[p]) for p in k.params], address(ys), address(saved), address(dys),
        *[address(dfinal[s]) for s in k.states], address(dxs),
        *[address(dstate0[s]) for s in k.states], *[address(dparams[p]) for p in k.params],
        address(work),
    )  # fmt: skip
    assert np.all(work[work_size:] == 7.0) and np.all(saved[saved_size:] == 7.0)
    assert np.all(np.isfinite(dxs)) and np.all(dxs[np.arange(T)[:, None] >= lengths] == 0)
