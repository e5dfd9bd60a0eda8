"""The C kernels under AddressSanitizer and UndefinedBehaviorSanitizer, and with canaries.

A small C driver, written here from the cell's interface, calls forward and backward of every
built-in cell in both precisions on several shapes (T = 1, B = 1, I != H included), with every
buffer allocated on its own. It checks that
  - no kernel reads or writes outside its buffers (ASan, exact-size allocations; and, in a
    build with the real flags and no sanitizer, guard zones of canary bytes around every
    buffer, outputs and workspace included),
  - no kernel modifies an input (a copy of each input is compared byte for byte afterwards),
  - every output entry is written (outputs start as NaN),
  - backward twice gives the same bits, whatever garbage the workspace and outputs held,
  - a NULL final-state adjoint equals a zero one,
  - no undefined behaviour happens (UBSan, -fno-sanitize-recover: the first report aborts).
Planted bugs show that each check fails when it should.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import codegen
from codegen.load import import_generated
from codegen.paths import builtin_generated_dir
from codegen.registry import load_cell

from conftest import BACKENDS, CELLS, make_problem

GENERATED = builtin_generated_dir()
SHAPES = [(1, 1, 1, 1), (1, 1, 3, 2), (3, 2, 4, 5), (4, 3, 7, 2), (2, 5, 9, 17)]
SANITIZE = [
    "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
]  # fmt: skip
REAL_BUILD = ["-O3"]  # as codegen/backends/c/build.py, never -ffast-math
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

DRIVER = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "@CELL@.h"

#ifndef GUARD
#define GUARD 0 /* bytes of canary on each side of every buffer; 0: exact sizes, for ASan */
#endif
#ifndef SHORT
#define SHORT 0 /* planted: the last parameter gradient this many elements too short */
#endif
#define CANARY 0xA5

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); failures++; } } while (0)

static uint64_t rng = 88172645463325252ULL;
static double uniform(void) /* xorshift64, in [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

typedef struct { unsigned char *block; size_t bytes; const char *name; } Buffer;
static Buffer buffers[256];
static int n_buffers = 0;

static void *alloc(size_t bytes, const char *name)
{
    unsigned char *block = malloc(bytes + 2 * GUARD + 1);
    if (!block) { fprintf(stderr, "out of memory\n"); exit(3); }
    memset(block, CANARY, bytes + 2 * GUARD + 1);
    buffers[n_buffers].block = block;
    buffers[n_buffers].bytes = bytes;
    buffers[n_buffers].name = name;
    n_buffers++;
    return block + GUARD;
}

static void check_guards(const char *when)
{
    for (int k = 0; k < n_buffers; ++k) {
        const Buffer *b = &buffers[k];
        for (size_t i = 0; i < GUARD; ++i) {
            CHECK(b->block[i] == CANARY, "%s: write before %s", when, b->name);
            CHECK(b->block[GUARD + b->bytes + i] == CANARY, "%s: write after %s", when, b->name);
            if (failures) return;
        }
    }
}

static void free_all(void)
{
    for (int k = 0; k < n_buffers; ++k) free(buffers[k].block);
    n_buffers = 0;
}

@RUNS@

int main(void)
{
    static const size_t shapes[][4] = { @SHAPES@ };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        const size_t T = shapes[s][0], B = shapes[s][1], I = shapes[s][2], H = shapes[s][3];
        run_f64(T, B, I, H);
        run_f32(T, B, I, H);
        if (failures) {
            fprintf(stderr, "failed at T=%zu B=%zu I=%zu H=%zu\n", T, B, I, H);
            return 1;
        }
    }
    printf("ok\n");
    return 0;
}
"""

RUN = r"""
static void run_@S@(size_t T, size_t B, size_t I, size_t H)
{
    typedef @REAL@ real;
@SIZES@
    const size_t BH = B * H, BY = B * @OUTPUT_SIZE@; /* ys has the output's size */
    (void)BH;
    const size_t saved_n = cellgen_@CELL@_saved_size(T, B, H@EXTRA@);
    const size_t work_n = cellgen_@CELL@_work_size(T, B, I, H@EXTRA@);
    /* inputs, and a copy of each to compare with afterwards */
@INPUTS@
    /* outputs */
    real *ys = alloc(T * BY * sizeof(real), "ys");
    real *saved = alloc(saved_n * sizeof(real) + 1, "saved");
    real *work = alloc(work_n * sizeof(real) + 1, "work");
@OUTPUTS@
    for (size_t k = 0; k < T * BY; ++k) ys[k] = (real)NAN;
    for (size_t k = 0; k < work_n; ++k) work[k] = (real)NAN;
@FILL_FINAL@
    cellgen_@CELL@_forward_@S@(T, B, I, H@EXTRA@, @FORWARD_ARGS@);
    check_guards("forward");
@CHECK_INPUTS@
    for (size_t k = 0; k < T * BY; ++k) CHECK(isfinite(ys[k]), "forward: ys[%zu] not written", k);
@CHECK_FINAL@
    /* backward twice, the second time over other garbage: the same bits */
@SNAPSHOT_SAVED@
    for (int pass = 0; pass < 2; ++pass) {
        const real garbage = pass == 0 ? (real)NAN : (real)1e30;
        for (size_t k = 0; k < work_n; ++k) work[k] = garbage;
@FILL_GRADS@
        cellgen_@CELL@_backward_@S@(T, B, I, H@EXTRA@, @BACKWARD_ARGS@);
        check_guards("backward");
@CHECK_INPUTS@
@CHECK_SAVED@
@CHECK_GRADS@
    }
    /* a NULL final-state adjoint is a zero one */
@ZERO_DFINAL@
    for (size_t k = 0; k < work_n; ++k) work[k] = (real)NAN;
    cellgen_@CELL@_backward_@S@(T, B, I, H@EXTRA@, @BACKWARD_NULL_ARGS@);
@COMPARE_NULL@
    cellgen_@CELL@_backward_@S@(T, B, I, H@EXTRA@, @BACKWARD_ZERO_ARGS@);
@COMPARE_ZERO@
    check_guards("backward with NULL adjoints");
    free_all();
}
"""


def driver_source(cell: str, shapes=SHAPES, short: int = 0) -> str:
    """The driver for one cell, from its generated module's interface."""
    module = import_generated(GENERATED / "numpy" / f"{cell}.py")
    states, params = list(module.STATES), dict(module.PARAM_SHAPES)
    runs = [
        _run(cell, states, params, s, real) for s, real in (("f64", "double"), ("f32", "float"))
    ]
    text = DRIVER.replace("@RUNS@", "\n".join(runs))
    text = text.replace("@SHAPES@", ", ".join("{" + ", ".join(map(str, s)) + "}" for s in shapes))
    return text.replace("@CELL@", cell)


def _run(cell: str, states: list[str], params: dict, suffix: str, real: str) -> str:
    spec = load_cell(cell)
    # a declared size is H / 2 + 1 (as verify's); an input used elementwise has I = H
    declared = [f"    const size_t {z} = H / 2 + 1;" for z in spec.sizes]
    declared += ["    I = H;"] if spec.input_hidden else []
    rows = {s: f"(B * {dict(spec.symbol_sizes)[s]})" for s in states}  # a state's numbers
    size = {p: " * ".join(shape) for p, shape in params.items()}
    inputs = {"xs": "T * B * I", **{f"{s}0": rows[s] for s in states}, **size, "dys": "T * BY"}
    inputs.update({f"d_{s}_final": rows[s] for s in states})
    lines, checks = [], []
    for name, n in inputs.items():
        lines.append(f'    real *{name} = alloc(({n}) * sizeof(real), "{name}");')
        lines.append(f"    for (size_t k = 0; k < {n}; ++k) {name}[k] = (real)(0.5 * uniform());")
        lines.append(f"    real *{name}_copy = malloc(({n}) * sizeof(real) + 1);")
        lines.append(f"    memcpy({name}_copy, {name}, ({n}) * sizeof(real));")
        checks.append(
            f'    CHECK(memcmp({name}, {name}_copy, ({n}) * sizeof(real)) == 0, '
            f'"an input changed: {name}");'
        )  # fmt: skip
    grads = {"dxs": "T * B * I", **{f"d_{s}0": rows[s] for s in states}}
    grads.update({f"d_{p}": size[p] for p in params})
    last = f"d_{list(params)[-1]}"
    grads[last] = f"{grads[last]} - SHORT"  # the driver's own loops stay within a short buffer
    outputs = [f'    real *{s}_final = alloc({rows[s]} * sizeof(real), "{s}_final");'
               for s in states]  # fmt: skip
    for name, n in grads.items():
        for copy in ("", "_first", "_null", "_zero"):
            outputs.append(f'    real *{name}{copy} = alloc(({n}) * sizeof(real), "{name}{copy}");')
    fill_final = "\n".join(f"    for (size_t k = 0; k < {rows[s]}; ++k) {s}_final[k] = (real)NAN;"
                           for s in states)  # fmt: skip
    check_final = "\n".join(
        f'    for (size_t k = 0; k < {rows[s]}; ++k) CHECK(isfinite({s}_final[k]), '
        f'"forward: {s}_final[%zu] not written", k);'
        for s in states
    )  # fmt: skip
    fill_grads = "\n".join(
        f"        for (size_t k = 0; k < {n}; ++k) {name}[k] = garbage;"
        for name, n in grads.items()
    )
    check_grads = []
    for name, n in grads.items():
        check_grads.append(
            f'        for (size_t k = 0; k < {n}; ++k) CHECK(isfinite({name}[k]), '
            f'"backward: {name}[%zu] not written", k);'
        )  # fmt: skip
        check_grads.append(
            f"        if (pass == 0) memcpy({name}_first, {name}, ({n}) * sizeof(real));\n"
            f"        else CHECK(memcmp({name}_first, {name}, ({n}) * sizeof(real)) == 0, "
            f'"backward twice differs: {name}");'
        )  # fmt: skip
    saved_snapshot = (
        "    real *saved_copy = malloc(saved_n * sizeof(real) + 1);\n"
        "    memcpy(saved_copy, saved, saved_n * sizeof(real));\n"
        "    real *ys_copy = malloc(T * BY * sizeof(real) + 1);\n"
        "    memcpy(ys_copy, ys, T * BY * sizeof(real));"
    )
    check_saved = (
        '        CHECK(memcmp(saved, saved_copy, saved_n * sizeof(real)) == 0, '
        '"backward changed saved");\n'
        '        CHECK(memcmp(ys, ys_copy, T * BY * sizeof(real)) == 0, "backward changed ys");'
    )  # fmt: skip
    fwd_args = ", ".join(["xs", "NULL", "0", *(f"{s}0" for s in states), *params, "ys",
                          *(f"{s}_final" for s in states), "saved", "work"])  # fmt: skip

    def bwd_args(dfinal: list[str], copy: str) -> str:
        return ", ".join(["xs", "NULL", "0", *(f"{s}0" for s in states), *params, "ys", "saved",
                          "dys", *dfinal, *(f"{g}{copy}" for g in grads), "work"])  # fmt: skip

    zero_dfinal = "\n".join(
        f'    real *zero_{s} = alloc({rows[s]} * sizeof(real), "zero_{s}");\n'
        f"    for (size_t k = 0; k < {rows[s]}; ++k) zero_{s}[k] = (real)0;"
        for s in states
    )
    compare_null = "\n".join(
        f"    for (size_t k = 0; k < {n}; ++k) CHECK(isfinite({g}_null[k]), "
        f'"backward(NULL): {g}[%zu] not written", k);'
        for g, n in grads.items()
    )
    compare_zero = "\n".join(
        f"    CHECK(memcmp({g}_null, {g}_zero, ({n}) * sizeof(real)) == 0, "
        f'"a NULL adjoint differs from a zero one: {g}");'
        for g, n in grads.items()
    )
    text = RUN
    for key, value in {
        "INPUTS": "\n".join(lines),
        "OUTPUTS": "\n".join(outputs),
        "FILL_FINAL": fill_final,
        "CHECK_FINAL": check_final,
        "CHECK_INPUTS": "\n".join(checks),
        "SNAPSHOT_SAVED": saved_snapshot,
        "CHECK_SAVED": check_saved,
        "FILL_GRADS": fill_grads,
        "CHECK_GRADS": "\n".join(check_grads),
        "ZERO_DFINAL": zero_dfinal,
        "COMPARE_NULL": compare_null,
        "COMPARE_ZERO": compare_zero,
        "FORWARD_ARGS": fwd_args,
        "BACKWARD_ARGS": bwd_args([f"d_{s}_final" for s in states], ""),
        "BACKWARD_NULL_ARGS": bwd_args(["NULL"] * len(states), "_null"),
        "BACKWARD_ZERO_ARGS": bwd_args([f"zero_{s}" for s in states], "_zero"),
        "S": suffix,
        "REAL": real,
        "SIZES": "\n".join(declared),
        "EXTRA": "".join(f", {z}" for z in spec.sizes),
        "OUTPUT_SIZE": dict(spec.symbol_sizes)[spec.output],
    }.items():
        text = text.replace(f"@{key}@", value)
    # the copies of the inputs are plain mallocs: free them too
    frees = "".join(f"    free({name}_copy);\n" for name in inputs)
    frees += "    free(saved_copy);\n    free(ys_copy);\n"
    return text.replace("    free_all();\n}", frees + "    free_all();\n}")


def build_and_run(tmp: Path, cell: str, c_source: str, compiler: str, flags: list[str],
                  defines: tuple[str, ...] = (), short: int = 0):  # fmt: skip
    """Compile the driver with one cell's C (given as text) and run it."""
    shutil.copy(GENERATED / "c" / f"{cell}.h", tmp / f"{cell}.h")
    (tmp / f"{cell}.c").write_text(c_source)
    (tmp / "driver.c").write_text(driver_source(cell))
    exe = tmp / "driver"
    cmd = [compiler, "-std=c99", *flags, *(f"-D{d}" for d in defines), f"-DSHORT={short}",
           "-I", str(tmp), str(tmp / "driver.c"), str(tmp / f"{cell}.c"),
           "-o", str(exe), "-lm"]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return subprocess.run(
        [str(exe)], capture_output=True, text=True, timeout=300,
        env={**os.environ, **SANITIZER_ENV},
    )  # fmt: skip


def source(cell: str) -> str:
    return (GENERATED / "c" / f"{cell}.c").read_text()


@pytest.mark.parametrize("cell", CELLS)
def test_kernels_under_address_and_undefined_behaviour_sanitizers(cell, tmp_path):
    assert shutil.which("gcc"), "gcc is required"
    result = build_and_run(tmp_path, cell, source(cell), "gcc", SANITIZE)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]
    assert "runtime error" not in result.stderr and "Sanitizer" not in result.stderr


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_keep_within_their_buffers_with_the_real_flags(cell, compiler, tmp_path):
    """Optimised as codegen builds them (-O3), canaries around every buffer."""
    assert shutil.which(compiler), f"{compiler} is required (.ci/run installs it)"
    result = build_and_run(tmp_path, cell, source(cell), compiler, REAL_BUILD, ("GUARD=64",))
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]


# the checks fail when they should ---------------------------------------------------------


def test_a_real_overflow_is_caught_by_asan_and_by_the_canaries(tmp_path):
    """The last parameter gradient one element too short: the kernel writes past its end."""
    (tmp_path / "a").mkdir()
    asan = build_and_run(tmp_path / "a", "lstm", source("lstm"), "gcc", SANITIZE, short=1)
    assert asan.returncode != 0
    assert "heap-buffer-overflow" in asan.stderr and "cellgen_lstm_backward_f64" in asan.stderr
    (tmp_path / "c").mkdir()
    canary = build_and_run(tmp_path / "c", "lstm", source("lstm"), "gcc", REAL_BUILD,
                           ("GUARD=64",), short=1)  # fmt: skip
    assert canary.returncode == 1 and "backward: write after d_b_o" in canary.stderr


def _planted(cell: str, statement: str, function: str = "backward") -> str:
    """The cell's C with `statement` at the end of its float64 forward or backward."""
    text = source(cell)
    start = text.index(f"void cellgen_{cell}_{function}_f64(")
    end = text.index("\n}\n", start) + 1
    return text[:end] + "    " + statement + "\n" + text[end:]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("((double *)xs)[0] += 1.0;", "an input changed: xs"),
        ("((double *)saved)[0] = 0.0;", "backward changed saved"),
        ("{ static double calls = 0.0; calls += 1.0; dxs[0] += calls; }",
         "backward twice differs: dxs"),
        ("if (d_h_final == NULL) { dxs[0] += 1.0; }", "a NULL adjoint differs"),
    ],
)  # fmt: skip
def test_planted_kernel_bugs_fail_the_driver(statement, message, tmp_path):
    result = build_and_run(tmp_path, "gru", _planted("gru", statement), "gcc", ["-O1"])
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]


def test_an_output_entry_left_unwritten_is_caught(tmp_path):
    """The float64 forward leaves the last entry of h_final as it found it (NaN here)."""
    planted = _planted("gru", "h_final[B * H - 1] = NAN;", "forward")
    result = build_and_run(tmp_path, "gru", planted, "gcc", ["-O1"])
    assert result.returncode == 1 and "forward: h_final[" in result.stderr, result.stderr


# the same properties through the Python API, both backends -----------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_twice_gives_the_same_bits_and_touches_no_input(cell, backend):
    kernel = codegen.load(cell, backend)
    xs, state0, params, dys, dfinal = make_problem(kernel, T=4, B=3, I=5, H=7, seed=9)
    inputs = [xs, *state0.values(), *params.values(), dys, *dfinal.values()]
    before = [a.copy() for a in inputs]
    _, _, cache = kernel.forward(xs, state0, params)
    cached = {k: v.copy() for k, v in _flat(cache).items()}
    first = kernel.backward(dys, cache, dfinal)
    second = kernel.backward(dys, cache, dfinal)
    flat = [first[0], *first[1].values(), *first[2].values()]
    again = [second[0], *second[1].values(), *second[2].values()]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(flat, again, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(inputs, before, strict=True))
    assert cached and all(np.array_equal(_flat(cache)[k], v) for k, v in cached.items())
    # and the results are not views into one another or into the cache
    assert all(not np.shares_memory(a, b) for a in flat for b in again)


def _flat(cache: dict, prefix: str = "") -> dict:
    """The arrays of a cache by path, however it nests them in dicts."""
    out = {}
    for key, value in cache.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, np.ndarray):
            out[prefix + key] = value
    return out
