"""`cellgen bench` on tiny problems: the table and JSON hold together; no timing is asserted."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import codegen
from codegen.bench import (
    REPEATS,
    UNSTEADY,
    BenchError,
    Report,
    Shape,
    interleaved,
    product_flops,
    run,
    summary,
)
from codegen.errors import CellgenError

from conftest import BACKENDS, make_problem

HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = Shape(T=3, B=2, I=3, H=4)


@pytest.fixture(scope="module")
def report():
    """lstm (which torch has) and gru (which it has not), both backends, float32, tiny."""
    return run(
        cells=["lstm", "gru"],
        shapes=[TINY],
        dtypes=["float32"],
        rounds=2,
        min_time=0.0,
        settle=0.0,
        peak_size=64,
    )


def test_shapes_parse_in_every_documented_spelling():
    for text in ("T32,B16,I8,H4", "32,16,8,4", "32x16x8x4", "t32, b16, i8, h4"):
        assert Shape.parse(text) == Shape(T=32, B=16, I=8, H=4), text
    assert str(Shape(1, 2, 3, 4)) == "T1,B2,I3,H4"
    for bad in ("T32,B16,I8", "B32,T16,I8,H4", "32,16,8,0", "T32,B16,I8,H4,X1", "a,b,c,d"):
        with pytest.raises(BenchError) as err:
            Shape.parse(bad)
        assert isinstance(err.value, CellgenError) and bad in str(err.value)


def test_flop_count_is_that_of_the_matrix_products():
    # the LSTM multiplies x by four (H, I) matrices and h_prev by four (H, H) per step
    assert product_flops("lstm", Shape(5, 3, 7, 11)) == 2 * 5 * 3 * 11 * (4 * 7 + 4 * 11)
    # gru: W_z W_r W_h on x; U_z U_r on h_prev and U_h on r * h_prev
    assert product_flops("gru", Shape(2, 1, 3, 4)) == 2 * 2 * 1 * 4 * (3 * 3 + 3 * 4)


def test_every_implementation_and_pass_has_a_row(report):
    impls = set(BACKENDS) | ({"torch"} if HAS_TORCH else set())
    lstm = {(r.impl, r.passes) for r in report.rows if r.cell == "lstm"}
    assert lstm == {(i, p) for i in impls for p in ("forward", "forward+backward")}
    gru = {(r.impl, r.passes) for r in report.rows if r.cell == "gru"}
    assert gru == {(i, p) for i in BACKENDS for p in ("forward", "forward+backward")}
    assert all(r.shape == "T3,B2,I3,H4" and r.dtype == "float32" for r in report.rows)
    assert all(r.rounds == 2 and r.calls_per_sample >= 1 for r in report.rows)


def test_numbers_are_positive_and_consistent(report):
    peak = report.meta["peak_gflops"]["float32"]
    assert peak > 0
    for r in report.rows:
        assert 0 < r.min_ms <= r.median_ms
        flops = product_flops(r.cell, TINY) * (1 if r.passes == "forward" else 3)
        assert r.gflops == pytest.approx(flops / (r.median_ms * 1e-3) / 1e9, rel=1e-9)
        assert r.peak_fraction == pytest.approx(r.gflops / peak, rel=1e-9)


def test_ratio_is_ours_over_torch_for_the_same_pass(report):
    medians = {(r.cell, r.impl, r.passes): r.median_ms for r in report.rows}
    for r in report.rows:
        torch = medians.get((r.cell, "torch", r.passes))
        if torch is None:
            assert r.torch_ratio is None
        else:
            assert r.torch_ratio == pytest.approx(r.median_ms / torch, rel=1e-12)
    assert any(r.torch_ratio is not None for r in report.rows) == HAS_TORCH


def test_all_implementations_compute_the_same_outputs(report):
    # the same weights reach torch through interop: its ys agree with ours to float32 accuracy
    for r in report.rows:
        assert r.max_rel_diff <= 1e-5, r


def test_table_names_each_row_and_the_conditions(report):
    table = report.table()
    lines = table.splitlines()
    assert "median of 2 interleaved rounds" in lines[0]
    assert "large-GEMM peak" in lines[1] and "float32" in lines[1]
    rows = [line.split() for line in lines if line.startswith(("lstm", "gru"))]
    assert len(rows) == len(report.rows)
    for fields, r in zip(rows, report.rows, strict=True):
        assert fields[:5] == [r.cell, r.shape, r.dtype, "fwd" if r.passes == "forward"
                              else "fwd+bwd", r.impl]  # fmt: skip
        assert float(fields[5]) == pytest.approx(r.median_ms, abs=1e-3)


def test_cli_prints_json_and_keeps_progress_on_stderr():
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "bench", "lstm", "--shapes", "T3,B2,I3,H4",
         "--dtype", "float64", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["meta"]["rounds"] == 1 and data["meta"]["peak_gflops"]["float64"] > 0
    assert {r["impl"] for r in data["rows"]} == set(BACKENDS) | ({"torch"} if HAS_TORCH else set())
    assert all(r["dtype"] == "float64" and r["median_ms"] > 0 for r in data["rows"])
    assert "[1/1] lstm T3,B2,I3,H4 float64" in result.stderr


def test_cli_rejects_a_malformed_shape_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "bench", "lstm", "--shapes", "T3,B2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "shape 'T3,B2'" in lines[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lstm_forward_keeps_seven_numbers_per_unit_and_step(backend):
    """The memory target: besides its copies of the inputs (xs, state0, params), the cache of
    the LSTM's forward holds 7 T B H numbers: h, c, tanh(c) and the four gates of every step."""
    k = codegen.load("lstm", backend)
    T, B, I, H = 5, 3, 4, 6
    xs, state0, params, _, _ = make_problem(k, T=T, B=B, I=I, H=H)
    _, _, cache = k.forward(xs, state0, params)
    copies = [cache["xs"], *cache["state0"].values(), *cache["params"].values()]
    assert sum(a.size for a in copies) == xs.size + sum(a.size for a in state0.values()) + sum(
        a.size for a in params.values()
    )
    inputs = set(map(id, copies))
    roots = {}
    for value in _arrays(cache):
        if id(value) not in inputs:
            while value.base is not None:  # a view keeps its whole base array alive
                value = value.base
            roots[id(value)] = value
    assert sum(a.size for a in roots.values()) == 7 * T * B * H


def _arrays(tree):
    """Every array in a cache, however it nests them in dicts."""
    for value in tree.values():
        if isinstance(value, dict):
            yield from _arrays(value)
        elif isinstance(value, np.ndarray):
            yield value


# timing that fewer rounds cannot fool (issue 15 item 14) ---------------------------------------


class _Stalling:
    """A call of ~0.5 ms whose sixth call stalls for 100 ms, as a call did in the issue."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(0.1 if self.calls == 6 else 0.0005)


def test_one_stall_neither_decides_a_single_round_nor_goes_unflagged():
    timings = interleaved({"stalling": _Stalling()}, rounds=1, min_time=0.005, settle=0.0)
    rounds, calls = timings["stalling"]
    assert len(rounds) == 1 and len(rounds[0]) == REPEATS >= 3 and calls >= 5
    median, fastest, spread = summary(rounds)
    assert 0.0004 < fastest <= median < 0.003  # the 100 ms stall does not set the time
    assert spread > UNSTEADY  # and the row says it is not to be trusted


def test_summary_is_the_median_of_round_medians_and_the_spread_of_every_repetition():
    median, fastest, spread = summary([[1.0, 1.1, 0.9], [2.0, 1.2, 1.0], [0.95, 1.05, 1.0]])
    assert (median, fastest) == (1.0, 0.9)
    # the nine sorted: 0.9 0.95 [1.0] 1.0 (1.0) 1.05 [1.1] 1.2 2.0: quartiles 1.0 and 1.1
    assert spread == pytest.approx(0.1)


def test_an_unsteady_row_is_marked_in_the_table(report):
    rows = list(report.rows)
    rows[0] = dataclasses.replace(rows[0], spread=0.6, steady=False)
    table = Report(rows, report.meta).table().splitlines()
    marked = [line for line in table if line.endswith(" !")]
    assert marked and marked[0].split()[:5][-1] == rows[0].impl
    assert "60%" in marked[0] and "not to be trusted" in table[-1]


def test_no_torch_does_not_claim_torch_is_missing():
    report = run(["lstm"], [TINY], ["float64"], ["numpy"], rounds=1, min_time=0.0, settle=0.0,
                 with_torch=False, peak_size=64)  # fmt: skip
    assert {r.impl for r in report.rows} == {"numpy"}
    header = report.table().splitlines()[1]
    if HAS_TORCH:
        assert "not installed" not in header and "not run (--no-torch)" in header
        assert report.meta["torch"] and report.meta["torch_run"] is False
    else:
        assert "torch not installed" in header


def test_an_error_is_printed_on_its_own_line_not_after_the_progress():
    # stderr as bytes: text mode would turn the progress line's \r into \n
    result = subprocess.run(
        [sys.executable, "-m", "codegen", "bench", "lstm", "no_such_cell", "--shapes",
         "T3,B2,I3,H4", "--dtype", "float64", "--backend", "numpy", "--rounds", "1"],
        capture_output=True,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.decode().rsplit("\r", 1)[-1]  # what the terminal shows on the last line
    assert "unknown cell 'no_such_cell'" in last and "[2/2]" not in last, last
