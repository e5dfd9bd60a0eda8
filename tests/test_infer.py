"""Inference: pack once, infer without a cache; equal to forward, and streaming one step at a
time equals one call over the sequence (bit for bit in C). The C entry points are called from a
C program (compiled strictly, and as C++) as a deployment would call them."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import codegen
from codegen.kernel import build_kernel
from codegen.load import PackedParams
from codegen.paths import builtin_generated_dir
from codegen.registry import load_cell

from conftest import BACKENDS, CELLS, make_problem, rel_err

TOLERANCE = {"float64": 1e-12, "float32": 2e-6}
STRICT = ["-Wall", "-Wextra", "-Wpedantic", "-Wdouble-promotion", "-Werror"]


def _kernel(cell, backend, dtype):
    return codegen.load(cell, backend, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_infer_equals_forward_and_streaming_equals_one_call(cell, backend, dtype):
    k = _kernel(cell, backend, dtype)
    T = 37  # more than two chunks of input products
    xs, state0, params, _, _ = make_problem(k, T=T, B=3, I=4, H=5, seed=2, dtype=np.dtype(dtype))
    ys, final, _ = k.forward(xs, state0, params)
    packed = k.pack(params)
    got_ys, got_final = k.infer(xs, state0, packed)
    assert got_ys.dtype == np.dtype(dtype)
    assert rel_err(got_ys, ys) <= TOLERANCE[dtype]
    for s in k.states:
        assert rel_err(got_final[s], final[s]) <= TOLERANCE[dtype], s
    state, steps = state0, []
    for t in range(T):
        y, state = k.infer(xs[t : t + 1], state, packed)
        steps.append(y)
    streamed = np.concatenate(steps)
    if backend == "c":  # the same arithmetic in the same order, whatever T
        assert streamed.tobytes() == got_ys.tobytes()
        assert all(state[s].tobytes() == got_final[s].tobytes() for s in k.states)
    else:
        assert rel_err(streamed, got_ys) <= TOLERANCE[dtype]
    # the caller's states are not changed, and a params dict is packed on the fly
    ys_again, _ = k.infer(xs, state0, params)
    assert np.array_equal(ys_again, got_ys)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_after", "lstmp"])
def test_every_copy_of_the_c_body_infers_like_forward_and_streams_bit_for_bit(cell, dtype):
    """infer_<s> runs its body with Hp = 16 or 32 a constant, or Hp from H: each copy (H = 9,
    32 and 40) equals forward, and streaming one step per call gives one call's bits, also with
    the input products of a chunk of steps computed at once (I = 90, or I = 40 at H = 64: at
    least CELLGEN_HOIST_MIN input weights) rather than with each step's recurrent products, and
    with one row (B = 1 from H = 64) over two whole panels at a time or over one panel at a time
    (at most CELLGEN_PAIR_ROWS rows; H = 96: a pair and a panel of its own), the panels in either
    order, which alternates from step to step."""
    k = _kernel(cell, "c", dtype)
    sizes = ((3, 9, 2), (3, 32, 2), (3, 40, 2), (90, 32, 2), (40, 64, 1), (3, 64, 1), (3, 96, 1))
    for I, H, B in (*sizes, (3, 128, 1)):
        T = 19  # more than one chunk of input products
        xs, state0, params, _, _ = make_problem(
            k, T=T, B=B, I=I, H=H, seed=4, dtype=np.dtype(dtype)
        )
        ys, final, _ = k.forward(xs, state0, params)
        packed = k.pack(params)
        got_ys, got_final = k.infer(xs, state0, packed)
        assert rel_err(got_ys, ys) <= TOLERANCE[dtype], H
        assert all(rel_err(got_final[s], final[s]) <= TOLERANCE[dtype] for s in k.states), H
        state, steps = state0, []
        for t in range(T):
            y, state = k.infer(xs[t : t + 1], state, packed)
            steps.append(y)
        assert np.concatenate(steps).tobytes() == got_ys.tobytes(), H
        assert all(state[s].tobytes() == got_final[s].tobytes() for s in k.states), H


@pytest.mark.parametrize("backend", BACKENDS)
def test_infer_checks_its_arguments(backend):
    k = codegen.load("lstm", backend)
    xs, state0, params, _, _ = make_problem(k, T=2, B=2, I=3, H=4)
    packed = k.pack(params)
    assert isinstance(packed, PackedParams) and (packed.input_size, packed.hidden_size) == (3, 4)
    with pytest.raises(ValueError, match="packed: expected the result of this kernel's pack"):
        k.infer(xs, state0, codegen.load("gru", backend).pack(
            make_problem(codegen.load("gru", backend), I=3, H=4)[2]
        ))  # fmt: skip
    with pytest.raises(ValueError, match=r"xs: expected shape \(T, B, I\) = \(T, B, 3\)"):
        k.infer(xs[:, :, :2], state0, packed)
    with pytest.raises(ValueError, match=r"state0\['c'\]: expected shape \(B, H\) = \(2, 4\)"):
        k.infer(xs, {"h": state0["h"], "c": state0["c"][:, :3]}, packed)
    with pytest.raises(ValueError, match="state0: missing 'c'"):
        k.infer(xs, {"h": state0["h"]}, packed)
    with pytest.raises(ValueError, match=r"params: missing 'W_f' of shape \(4, 3\)"):
        k.pack({n: v for n, v in params.items() if n != "W_f"})


def test_a_users_cell_infers_like_its_forward(tmp_path):
    path = tmp_path / "mut3.py"
    path.write_text(
        textwrap.dedent(
            """
            from codegen.activations import sigmoid, tanh
            from codegen.cell import Cell

            cell = Cell("mut3", description="MUT3", reference="Jozefowicz et al. 2015")
            x = cell.input("x")
            (h_prev,) = cell.states("h")
            W_z, W_r, W_h, U_z, U_r, U_h = cell.matrices("W_z W_r W_h U_z U_r U_h")
            b_z, b_r, b_h = cell.vectors("b_z b_r b_h")
            z = cell.eq("z", sigmoid(W_z @ x + U_z @ tanh(h_prev) + b_z))
            r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev + b_r))
            h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ (r * h_prev) + b_h))
            h = cell.update("h", z * h_hat + (1 - z) * h_prev)
            """
        )
    )
    for backend in BACKENDS:
        k = codegen.load(path, backend)
        xs, state0, params, _, _ = make_problem(k, T=20, B=2, I=3, H=4, seed=1)
        ys, final, _ = k.forward(xs, state0, params)
        got, got_final = k.infer(xs, state0, k.pack(params))
        assert rel_err(got, ys) <= 1e-12 and rel_err(got_final["h"], final["h"]) <= 1e-12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_states_updated_in_place_infer_like_forward(cell, dtype):
    """With every state a multiple of 16 long (H = 16, declared sizes 16), C inference updates
    the caller's state arrays in place, with no padded copies: it still equals forward with
    lengths and in reverse, streams bit for bit, and leaves the caller's state0 alone."""
    k = _kernel(cell, "c", dtype)
    T, B, H = 9, 3, 16
    declared = {z: 16 for z in k.sizes}
    xs, state0, params, _, _ = make_problem(k, T, B, 5, H, 6, np.dtype(dtype), declared)
    kept = {s: v.copy() for s, v in state0.items()}
    packed = k.pack(params)
    runs = ((None, False), (np.array([9, 0, 4]), False), (np.array([2, 9, 0]), True))
    for lengths, reverse in runs:
        ys, final, _ = k.forward(xs, state0, params, lengths=lengths, reverse=reverse)
        got_ys, got_final = k.infer(xs, state0, packed, lengths, reverse)
        assert rel_err(got_ys, ys) <= TOLERANCE[dtype], (lengths, reverse)
        for s in k.states:
            assert rel_err(got_final[s], final[s]) <= TOLERANCE[dtype], (s, lengths, reverse)
            if lengths is not None:  # a row without steps keeps its state bit for bit
                empty = lengths == 0
                assert np.array_equal(got_final[s][empty], state0[s][empty]), s
    state, steps = state0, []
    for t in range(T):
        y, state = k.infer(xs[t : t + 1], state, packed)
        steps.append(y)
    got_ys, got_final = k.infer(xs, state0, packed)
    assert np.concatenate(steps).tobytes() == got_ys.tobytes()
    assert all(state[s].tobytes() == got_final[s].tobytes() for s in k.states)
    assert all(np.array_equal(state0[s], kept[s]) for s in k.states)


def test_a_state_read_after_its_update_is_not_updated_in_place(tmp_path):
    """A stage after h's update reads h_prev (through a mean over h's units): inference must
    keep h's old value, so the plan refuses the in-place update, and at H = 16 the C kernel
    (which would otherwise take it) still equals forward."""
    path = tmp_path / "late_read.py"
    path.write_text(
        textwrap.dedent(
            """
            from codegen.activations import tanh
            from codegen.cell import Cell
            from codegen.reductions import mean

            cell = Cell("late_read", description="h_prev read after h's update", reference="a test")
            x = cell.input("x")
            h_prev, m_prev = cell.states("h", "m")
            W, U = cell.matrices("W U")
            (b,) = cell.vectors("b")
            h = cell.update("h", tanh(W @ x + U @ h_prev + b))
            s = cell.eq("s", mean(h), "the mean of the new h")
            m = cell.update("m", tanh(s * h_prev + m_prev))
            """
        )
    )
    assert not build_kernel(load_cell(path)).infer_in_place
    assert all(build_kernel(load_cell(c)).infer_in_place for c in CELLS)
    k = codegen.load(path, "c")
    xs, state0, params, _, _ = make_problem(k, T=5, B=2, I=3, H=16, seed=3)
    ys, final, _ = k.forward(xs, state0, params)
    got, got_final = k.infer(xs, state0, k.pack(params))
    assert rel_err(got, ys) <= 1e-12
    assert all(rel_err(got_final[s], final[s]) <= 1e-12 for s in k.states)


@pytest.mark.parametrize("cell", CELLS)
def test_the_header_declares_the_inference_entry_points(cell):
    header = (builtin_generated_dir() / "c" / f"{cell}.h").read_text()
    for name in ("packed_size", "infer_work_size", "pack_f64", "pack_f32", "infer_f64",
                 "infer_f32"):  # fmt: skip
        assert f"cellgen_{cell}_{name}(" in header
    assert 'extern "C"' in header


DRIVER = """
#include <stdio.h>
#include <stdlib.h>
#include "{cell}.h"

/* reads T B I H, the parameters, xs and the states; packs; infers one step at a time */
static void read_all(FILE *f, double *p, size_t n)
{{
    if (fread(p, sizeof *p, n, f) != n) {{
        exit(3);
    }}
}}

int main(int argc, char **argv)
{{
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    double dims[4];
    size_t k;
    (void)argc;
    read_all(in, dims, 4);
    {{
        const size_t T = (size_t)dims[0], B = (size_t)dims[1], I = (size_t)dims[2];
        const size_t H = (size_t)dims[3];
        double *params[{n_params}];
        const size_t sizes[{n_params}] = {{ {param_sizes} }};
        double *states[{n_states}];
        double *xs = (double *)malloc(T * B * I * sizeof(double));
        double *ys = (double *)malloc(T * B * H * sizeof(double));
        double *packed = (double *)malloc(cellgen_{cell}_packed_size(I, H) * sizeof(double));
        double *work = (double *)malloc(cellgen_{cell}_infer_work_size(B, I, H) * sizeof(double));
        for (k = 0; k < {n_params}; ++k) {{
            params[k] = (double *)malloc(sizes[k] * sizeof(double));
            read_all(in, params[k], sizes[k]);
        }}
        read_all(in, xs, T * B * I);
        for (k = 0; k < {n_states}; ++k) {{
            states[k] = (double *)malloc(B * H * sizeof(double));
            read_all(in, states[k], B * H);
        }}
        cellgen_{cell}_pack_f64(I, H, {param_args}, packed);
        for (k = 0; k < T; ++k) {{
            cellgen_{cell}_infer_f64(1, B, I, H, packed, xs + k * B * I, NULL, 0, {state_args},
                                     ys + k * B * H, work);
        }}
        fwrite(ys, sizeof(double), T * B * H, out);
        for (k = 0; k < {n_states}; ++k) {{
            fwrite(states[k], sizeof(double), B * H, out);
        }}
    }}
    fclose(out);
    fclose(in);
    return 0;
}}
"""


@pytest.mark.parametrize("language", ["c", "c++"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_c_program_streams_with_pack_and_infer(cell, language, tmp_path):
    spec = load_cell(cell)
    dims = {"I": 3, "H": 4}
    sizes = [" * ".join(d for d in p.shape) for p in spec.params]
    source = DRIVER.format(
        cell=cell,
        n_params=len(spec.params),
        n_states=len(spec.states),
        param_sizes=", ".join(sizes),
        param_args=", ".join(f"params[{k}]" for k in range(len(spec.params))),
        state_args=", ".join(f"states[{k}]" for k in range(len(spec.states))),
    )
    generated = builtin_generated_dir() / "c"
    kernel_o = tmp_path / "kernel.o"
    driver = tmp_path / ("driver.c" if language == "c" else "driver.cpp")
    driver.write_text(source)
    assert shutil.which("gcc") and shutil.which("g++")
    compile_kernel = ["gcc", "-std=c99", *STRICT, "-O2", "-c", str(generated / f"{cell}.c"),
                      "-o", str(kernel_o)]  # fmt: skip
    subprocess.run(compile_kernel, check=True, capture_output=True)
    if language == "c":
        build = ["gcc", "-std=c99", *STRICT, "-O2"]
    else:
        build = ["g++", "-std=c++17", *STRICT[:-2], "-Werror", "-O2"]
    result = subprocess.run(
        [*build, "-I", str(generated), str(driver), str(kernel_o), "-lm", "-o",
         str(tmp_path / "driver")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    k = codegen.load(cell, "numpy")
    T, B = 9, 2
    xs, state0, params, _, _ = make_problem(k, T=T, B=B, **dims, seed=4)
    blob = [np.array([T, B, dims["I"], dims["H"]], float)]
    blob += [params[p.name].ravel() for p in spec.params] + [xs.ravel()]
    blob += [state0[s].ravel() for s in spec.states]
    (tmp_path / "in.bin").write_bytes(np.concatenate(blob).tobytes())
    subprocess.run(
        [str(tmp_path / "driver"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
        check=True,
        timeout=60,
    )
    out = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.float64)
    H = dims["H"]
    ys, final, _ = k.forward(xs, state0, params)
    assert rel_err(out[: T * B * H].reshape(T, B, H), ys) <= 1e-12
    for n, s in enumerate(spec.states):
        start = T * B * H + n * B * H
        assert rel_err(out[start : start + B * H].reshape(B, H), final[s]) <= 1e-12


BF16_TOLERANCE = 1e-2  # weights rounded to 8 significant bits: ~1.5e-3 measured at H = 19


@pytest.mark.parametrize("cell", ["lstm", "gru_reset_after", "mgu"])
def test_bfloat16_weights_are_close_to_float32_and_exact_to_their_rounding(cell):
    kc, kn = _kernel(cell, "c", "float32"), _kernel(cell, "numpy", "float32")
    T = 23
    xs, state0, params, _, _ = make_problem(kc, T=T, B=2, I=5, H=19, seed=3, dtype=np.float32)
    ys32, _ = kc.infer(xs, state0, kc.pack(params))
    packed = kc.pack(params, weights="bfloat16")
    assert packed.weights == "bfloat16" and "weights=bfloat16" in repr(packed)
    ys16, final16 = kc.infer(xs, state0, packed)
    assert 0 < rel_err(ys16, ys32) <= BF16_TOLERANCE  # rounded weights, not float ones
    # NumPy with the same rounded weights stored as float32: float32 arithmetic on both sides
    ys_np, _ = kn.infer(xs, state0, kn.pack(params, weights="bfloat16"))
    assert rel_err(ys16, ys_np) <= TOLERANCE["float32"]
    state, steps = state0, []
    for t in range(T):
        y, state = kc.infer(xs[t : t + 1], state, packed)
        steps.append(y)
    assert np.concatenate(steps).tobytes() == ys16.tobytes()
    assert all(state[s].tobytes() == final16[s].tobytes() for s in kc.states)


def test_bfloat16_rounding_is_to_nearest_even_and_keeps_nan():
    from codegen.load import bfloat16_round

    one_ulp = np.float32(2.0**-7)  # bfloat16's spacing at 1
    x = np.array([1.0, 1 + one_ulp / 2, 1 + 1.5 * one_ulp, 1 + one_ulp / 2 + 2**-20, -3.0, np.nan],
                 np.float32)  # fmt: skip
    got = bfloat16_round(x)
    assert got[:5].tolist() == [1.0, 1.0, 1 + 2 * one_ulp, 1 + one_ulp, -3.0]
    assert np.isnan(got[5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_weights_are_checked(backend):
    k = _kernel("lstm", backend, "float32")
    _, _, params, _, _ = make_problem(k, T=2, B=1, I=3, H=4, seed=1, dtype=np.float32)
    with pytest.raises(ValueError, match=r"weights: expected None .* or 'bfloat16'"):
        k.pack(params, weights="float16")
    k64 = _kernel("lstm", backend, "float64")
    params64 = {p: v.astype(np.float64) for p, v in params.items()}
    with pytest.raises(ValueError, match="weights='bfloat16' needs float32 params"):
        k64.pack(params64, weights="bfloat16")


@pytest.mark.parametrize(
    ("dtype", "weights"), [("float64", ""), ("float32", ""), ("float32", "bfloat16")]
)
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_after", "mgu"])
def test_pack_and_infer_stay_inside_their_reported_sizes(cell, dtype, weights):
    """packed and work of exactly the reported sizes, followed by canaries: nothing past them
    is written, with H padded to whole vectors (H = 5 and 17) and more than one chunk of steps."""
    from codegen.backends.c.ffi import address

    c = _kernel(cell, "c", dtype)._functions
    canary, extra = np.array(-7.25, dtype), 64
    for I, H, B, T in ((3, 5, 2, 20), (1, 17, 1, 3)):
        k = _kernel(cell, "c", dtype)
        xs, state0, params, _, _ = make_problem(
            k, T=T, B=B, I=I, H=H, seed=5, dtype=np.dtype(dtype)
        )
        n_packed, n_work = c._packed_size(I, H), c._infer_work_size(B, I, H)
        packed = np.full(n_packed + extra, canary)
        pack = c._pack_bf16 if weights else c._pack
        pack(I, H, *[address(params[p]) for p in c.params], address(packed))
        assert np.all(packed[n_packed:] == canary)
        work = np.full(n_work + extra, canary)
        ys = np.empty((T, B, H), dtype)
        states = {s: np.array(state0[s]) for s in k.states}
        c._infer(T, B, I, H, address(packed), address(xs), None, 0,
                 *[address(states[s]) for s in k.states], address(ys), address(work))  # fmt: skip
        assert np.all(work[n_work:] == canary)
        want, _ = k.infer(xs, state0, k.pack(params, weights=weights or None))
        assert np.array_equal(ys, want)  # the same numbers as through the checked API
