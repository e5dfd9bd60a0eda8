"""`cellgen bench` on tiny problems: the table and JSON hold together; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import codegen
from codegen.bench import BenchError, Shape, product_flops, run
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
    """The memory target: besides xs (and the caller's state0 and params), the cache of the
    LSTM's forward holds 7 T B H numbers: h, c, tanh(c) and the four gates of every step."""
    k = codegen.load("lstm", backend)
    T, B, I, H = 5, 3, 4, 6
    xs, state0, params, _, _ = make_problem(k, T=T, B=B, I=I, H=H)
    _, _, cache = k.forward(xs, state0, params)
    inputs = {id(xs), *map(id, state0.values()), *map(id, params.values())}
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
