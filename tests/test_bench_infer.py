"""`cellgen bench --infer`: the driver times the right problem and computes the right numbers.

Speed is not tested; what is: the inference the driver times (the generated `infer`) equals
the NumPy forward, streaming one step per call gives the same
bits as one call over the sequence, the C compiles strictly (gcc and clang, with and without
AVX-512) and its header from C++, and the report has the sizes it was asked for.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import codegen
from codegen import bench_infer
from codegen.bench_infer import Driver, Size
from codegen.cli import main
from codegen.registry import load_cell

CELLS = bench_infer.DEFAULT_CELLS
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wdouble-promotion", "-Werror"]


@pytest.fixture(scope="module", params=CELLS)
def driver(request):
    return request.param, Driver(request.param)


def _problem(cell, T, B, I, H, dtype, seed=0):
    k = codegen.load(cell, "numpy", "float64")
    rng = np.random.default_rng(seed)
    shapes = k.param_shapes(I, H)
    params = {n: rng.uniform(-1, 1, shapes[n]) / np.sqrt(H) for n in shapes}
    xs = rng.normal(size=(T, B, I))
    state0 = {s: rng.uniform(-0.8, 0.8, (B, H)) for s in k.states}
    cast = {n: v.astype(dtype) for n, v in params.items()}
    ys, final, _ = k.forward(
        xs.astype(dtype).astype(np.float64),
        {s: v.astype(dtype).astype(np.float64) for s, v in state0.items()},
        {n: v.astype(np.float64) for n, v in cast.items()},
    )
    order = [p.name for p in load_cell(cell).params]
    args = ([cast[n] for n in order], xs.astype(dtype), [state0[s].astype(dtype) for s in k.states])
    return args, ys, [final[s] for s in k.states]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "T,B,I,H",
    [(37, 2, 3, 5), (3, 5, 7, 40), (33, 1, 1, 16), (35, 3, 48, 70), (5, 1, 2, 64)],
    ids=["steps", "rows-and-tails", "tiny-input", "hoisted-chunks-and-panels", "two-panels"],
)
def test_driver_computes_the_forward_and_streams_bit_for_bit(driver, dtype, T, B, I, H):
    cell, drv = driver
    (params, xs, states), ys, finals = _problem(cell, T, B, I, H, dtype)
    seq_ys, seq_final, stream_ys, stream_final = drv.check(dtype, params, xs, states)
    tol = 1e-12 if dtype == "float64" else 2e-5
    scale = np.max(np.abs(ys))
    assert np.max(np.abs(seq_ys - ys)) <= tol * scale
    for got, want in zip(seq_final, finals, strict=True):
        assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want))
    assert np.array_equal(stream_ys, seq_ys)  # bit for bit, not to rounding
    for a, b in zip(stream_final, seq_final, strict=True):
        assert np.array_equal(a, b)


def test_driver_report_has_the_requested_sizes():
    report = bench_infer.run(["lstm"], [Size(2, 4), Size(1, 8)], B=1, T=50, rounds=2)
    small, audio = report.rows
    assert (small.cell, small.I, small.H, small.B, small.T) == ("lstm", 2, 4, 1, 50)
    assert small.macs_per_step == 4 * 4 * (2 + 4)
    # a header of 16 numbers; every hidden-sized row padded to Hp = 16: four biases of 16, and
    # I + H rows of 4 gates of 16 columns each
    assert small.weight_bytes == 4 * (16 + 4 * 16 + (2 + 4) * 4 * 16)
    assert small.target_ns is None and audio.target_ns == 87
    for r in report.rows:
        assert r.stream_ns > 0 and r.sequence_ns > 0 and np.isfinite(r.checksum)
        assert r.bytes_bound_ns > 0 and r.mac_bound_ns > 0
    assert report.meta["fma_macs_per_ns"]["float32"] > 0


def test_samples_are_taken_in_rounds_over_every_case(monkeypatch):
    """Each round times every case once (a slow spell of the host falls on all cases alike), and
    a row's median is over its own samples of every round."""
    calls = []
    times = iter([30.0, 5.0, 10.0, 6.0, 20.0, 7.0] * 2)

    def fake_time(self, dtype, size, B, T, rounds, weights=""):
        calls.append((size.H, rounds))
        t = next(times)
        return {"stream": [t], "sequence": [t], "packed_numbers": [100.0], "checksum": [0.0]}

    monkeypatch.setattr(Driver, "time", fake_time)
    report = bench_infer.run(["lstm"], [Size(1, 8), Size(1, 16)], B=1, T=50, rounds=3)
    assert calls == [(8, 1), (16, 1)] * 3
    assert [r.stream_ns for r in report.rows] == [20.0, 6.0]  # medians of 30, 10, 20 and 5, 6, 7
    assert [r.stream_min_ns for r in report.rows] == [10.0, 5.0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "cell,size",
    [("lstmp", Size(3, 16, (("P", 5),))), ("sru", Size(16, 16)), ("indrnn", Size(2, 40))],
)
def test_the_driver_takes_declared_sizes_elementwise_inputs_and_output_equations(cell, size, dtype):
    """lstmp (h of size P), sru (I = H, its output an equation, not a state) and indrnn: the
    driver's inference equals the NumPy forward, and streams bit for bit."""
    k = codegen.load(cell, "numpy", "float64")
    declared = dict(size.declared)
    rng = np.random.default_rng(1)
    T, B = 9, 2
    shapes = k.param_shapes(size.I, size.H, **declared)
    cast = {n: (rng.uniform(-1, 1, v) / np.sqrt(size.H)).astype(dtype) for n, v in shapes.items()}
    xs = rng.normal(size=(T, B, size.I)).astype(dtype)
    state0 = {
        st: rng.uniform(-0.8, 0.8, shape).astype(dtype)
        for st, shape in k.state_shapes(B, size.H, **declared).items()
    }
    wide = {n: v.astype(np.float64) for n, v in cast.items()}
    ys, final, _ = k.forward(xs.astype(np.float64), {st: v.astype(np.float64) for st, v in
                                                     state0.items()}, wide)  # fmt: skip
    order = [p.name for p in load_cell(cell).params]
    seq_ys, seq_final, stream_ys, stream_final = Driver(cell).check(
        dtype, [cast[n] for n in order], xs, [state0[st] for st in k.states], size
    )
    tol = 1e-12 if dtype == "float64" else 2e-5
    assert seq_ys.shape == ys.shape and np.max(np.abs(seq_ys - ys)) <= tol * np.max(np.abs(ys))
    for got, st in zip(seq_final, k.states, strict=True):
        assert np.max(np.abs(got - final[st])) <= tol * np.max(np.abs(final[st])), st
    assert np.array_equal(stream_ys, seq_ys)
    assert all(np.array_equal(a, b) for a, b in zip(stream_final, seq_final, strict=True))


def test_sizes_name_a_cells_declared_sizes():
    assert Size.parse("I1,H64,P32") == Size(1, 64, (("P", 32),))
    assert Size.parse("1x64,P=32") == Size(1, 64, (("P", 32),)) and str(Size(1, 64)) == "I1,H64"
    report = bench_infer.run(["lstmp", "lstm"], [Size(2, 8, (("P", 4),))], T=30, rounds=1)
    lstmp, lstm = report.rows
    assert (lstmp.declared, lstm.declared) == ("P4", "")  # lstm takes no P: it is lstmp's
    assert lstmp.macs_per_step == 2 * 4 * 8 + 4 * 4 * 8 + 8 * 4  # W x, U r (r of size P), W_p h
    assert "lstmp P4" in report.table()
    default = bench_infer.run(["lstmp"], [Size(2, 8)], T=30, rounds=1).rows[0]
    assert default.declared == "P8"  # P defaults to H
    sru = bench_infer._cell_sizes(load_cell("sru"), None)  # its input used elementwise: I = H
    assert [(s.I, s.H) for s in sru] == [(h, h) for h in bench_infer.DEFAULT_HIDDEN]


def test_cli_prints_json_and_rejects_bad_sizes(capsys):
    assert main(["bench", "--infer", "gru_reset_after", "--sizes", "I3,H5", "--steps", "20",
                 "--rounds", "1", "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["cell"], r["I"], r["H"]) for r in rows] == [("gru_reset_after", 3, 5)]
    assert main(["bench", "--infer", "--sizes", "I0,H4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "I0,H4" in err[0]
    assert main(["bench", "--infer", "no_such_cell"]) == 2
    assert "unknown cell" in capsys.readouterr().err
    for args, says in (
        (["lstmp", "--sizes", "I3,H5,Q2"], "Q is no size of these cells (P)"),
        (["sru", "--sizes", "I3,H5"], "sru uses its input elementwise, so I must equal H"),
        (["lstmp", "--sizes", "I3,H5,P0"], "I3,H5,P0"),
    ):
        assert main(["bench", "--infer", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
@pytest.mark.parametrize("arch", [["-march=native"], []], ids=["native", "portable"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_driver_and_kernels_compile_strictly(cell, compiler, arch, tmp_path):
    assert shutil.which(compiler), f"{compiler} is required (.ci/run installs it)"
    src = bench_infer.sources(cell)
    for rel, text in src.files.items():
        (tmp_path / rel).write_text(text)
    for name in src.compile:
        result = subprocess.run(
            [compiler, *STRICT, "-O2", *arch, "-c", str(tmp_path / name),
             "-o", str(tmp_path / "k.o")],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_bfloat16_weights_get_a_row_beside_float32():
    report = bench_infer.run(["lstm"], [Size(2, 4)], B=1, T=50, rounds=2, bfloat16=True)
    f32, bf16 = report.rows
    assert (f32.weights, bf16.weights) == ("", "bfloat16") and bf16.dtype == "float32"
    # header and biases in float (16 + 4 * 16 numbers), the I + H rows of 4 * 16 in 16 bits
    assert bf16.weight_bytes == 4 * (16 + 4 * 16) + 2 * (2 + 4) * 4 * 16
    assert bf16.stream_ns > 0 and np.isfinite(bf16.checksum)
    assert bf16.checksum != f32.checksum  # rounded weights, other numbers
    assert "bf16 w" in report.table()
