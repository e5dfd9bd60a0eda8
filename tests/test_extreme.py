"""Extreme and bad input: saturated gates stay finite and exact, NaN propagates, in both backends.

Gate pre-activations of +-800 (float64) and +-100 (float32) push exp() past overflow. The
kernels must return finite values that equal the saturated limits, with no warning reaching the
caller, and gradients that still match the forward. The forward is compared with the cell's
own equations evaluated in 40-digit arithmetic (mpmath), independently of any generated code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import mpmath
import numpy as np
import pytest
import sympy

import codegen
from codegen.activations import Activation
from codegen.reductions import Reduction, mean
from codegen.registry import load_cell
from codegen.verify import ENTRY_SIZES, Problem, random_problem, verify_kernel

from conftest import BACKENDS, CELLS, rel_err

EXTREMES = {"float64": 800.0, "float32": 100.0}
SIZES = {"T": 3, "B": 2, "I": 3, "H": 4}

mpmath.mp.dps = 40
_HALF = mpmath.mpf(1) / 2
MP_ACTIVATIONS = {
    "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
    "tanh": mpmath.tanh,
    "relu": lambda x: x if x > 0 else mpmath.mpf(0),
    "softsign": lambda x: x / (1 + abs(x)),
    "hard_sigmoid": lambda x: min(max(x / 5 + _HALF, mpmath.mpf(0)), mpmath.mpf(1)),
    "softplus": lambda x: mpmath.log(1 + mpmath.exp(x)),
    "silu": lambda x: x / (1 + mpmath.exp(-x)),
    "sqrt": mpmath.sqrt,
    "rsqrt": lambda x: 1 / mpmath.sqrt(x),
}


def _mp(a: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: mpmath.mpf(float(v)), otypes=[object])(a)


def _evaluate(expr: sympy.Expr, env: dict[str, np.ndarray]):
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_Rational:
        return mpmath.mpf(expr.p) / expr.q
    if expr.is_Number:
        return mpmath.mpf(float(expr))
    if expr.is_Add:
        terms = [_evaluate(a, env) for a in expr.args]
        return sum(terms[1:], terms[0])
    if expr.is_Mul:
        factors = [_evaluate(a, env) for a in expr.args]
        out = factors[0]
        for f in factors[1:]:
            out = out * f
        return out
    if expr.is_Pow:
        return _evaluate(expr.base, env) ** int(expr.exp)
    if isinstance(expr, Activation):
        fn = np.vectorize(MP_ACTIVATIONS[type(expr).__name__], otypes=[object])
        return fn(_evaluate(expr.args[0], env))
    if isinstance(expr, Reduction):  # over the units of the arguments, stacked: (B, 1)
        stacked = np.concatenate([_evaluate(a, env) for a in expr.args], axis=-1)
        total = stacked.sum(axis=-1, keepdims=True)
        return total / stacked.shape[-1] if isinstance(expr, mean) else total
    raise AssertionError(f"the reference evaluator does not know {expr!r}")


def reference_forward(cell: str, xs, state0, params):
    """The cell's equations, step by step, in 40-digit arithmetic."""
    spec = load_cell(cell)
    p = {k: _mp(v) for k, v in params.items()}
    state = {s: _mp(v) for s, v in state0.items()}
    ys = []
    for x in xs:
        env = {spec.input: _mp(x), **{f"{s}_prev": v for s, v in state.items()}, **p}
        for eq in spec.equations:
            for m in spec.matmuls:
                if m.name not in env and m.operand in env:
                    env[m.name] = env[m.operand] @ p[m.matrix].T
            env[eq.name] = _evaluate(eq.expr, env)
        state = {s: env[s] for s in spec.states}
        ys.append(env[spec.output])
    as_float = np.vectorize(float, otypes=[np.float64])
    return as_float(np.stack(ys)), {s: as_float(v) for s, v in state.items()}


def extreme_problem(kernel, dtype: str, seed: int = 0, sizes=SIZES, only_biases=False) -> Problem:
    """Random weights and inputs, every vector parameter (biases, peepholes; with
    `only_biases`, the b_* ones) at +-A: every gate pre-activation sits near +-A, past exp()'s
    overflow in that dtype."""
    p = random_problem(kernel, seed, sizes)
    rng = np.random.default_rng(seed + 100)
    for name, value in p.params.items():
        if value.ndim == 1 and (name.startswith("b") or not only_biases):
            p.params[name] = EXTREMES[dtype] * rng.choice([-1.0, 1.0], value.shape)
    return p.astype(np.dtype(dtype))


def run_strict(kernel, p: Problem):
    """forward and backward with every warning an error, and overflow, invalid operations and
    division by zero raising. Underflow stays ignored, as NumPy's default: exp(-800) = 0 is the
    exact saturated limit, not an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            ys, final, cache = kernel.forward(*p.inputs())
            grads = kernel.backward(p.dys, cache, p.dfinal)
    return ys, final, grads


def _all_arrays(ys, final, grads):
    dxs, dstate0, dparams = grads
    return [ys, *final.values(), dxs, *dstate0.values(), *dparams.values()]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_saturated_gates_give_finite_exact_results(cell, backend, dtype):
    kernel = codegen.load(cell, backend, dtype=dtype)
    p = extreme_problem(kernel, dtype)
    ys, final, grads = run_strict(kernel, p)
    arrays = _all_arrays(ys, final, grads)
    assert all(a.dtype == np.dtype(dtype) for a in arrays)
    assert all(np.isfinite(a).all() for a in arrays)
    expected_ys, expected_final = reference_forward(cell, *p.inputs(dtype=np.float64))
    # float64: a few roundings; float32: within float32 accuracy of the exact limits
    tol = 1e-13 if dtype == "float64" else 1e-5
    if load_cell(cell).scalars:  # a layer norm scales its rounding by its gains (here 100)
        tol *= 100
    assert rel_err(ys, expected_ys) <= tol
    for s in kernel.states:
        assert rel_err(final[s], expected_final[s]) <= tol


def test_saturated_lstm_gates_are_exactly_zero_or_one():
    """b_f = +800, b_i = -800: f = 1 exactly and i = 0 to within the smallest doubles, so c
    stays c0 bit for bit, and the gradients through the saturated gates' weights vanish (an
    exp() clamped at -708 leaves i ~ 1e-308 rather than 0: still no gradient to speak of)."""
    for backend in BACKENDS:
        kernel = codegen.load("lstm", backend)
        p = random_problem(kernel, 1, SIZES)
        p.params["b_f"][:] = 800.0
        p.params["b_i"][:] = -800.0
        _, final, (_, dstate0, dparams) = run_strict(kernel, p)
        assert np.array_equal(final["c"], p.state0["c"])
        for name in ("W_f", "U_f", "b_f", "W_i", "U_i", "b_i"):
            assert np.abs(dparams[name]).max() < 1e-300, name
        # the cell state carries its adjoint through f = 1 unchanged
        assert np.all(np.isfinite(dstate0["c"])) and np.abs(dstate0["c"]).max() > 0


# relu does not saturate: at +-800 indrnn's outputs are ~800, and no difference formula resolves
# a 1e-10 relative gradient error on them (its noise is ~1e-9: INCONCLUSIVE, not a verdict).
# Its forward at +-800 is checked above, its gradients by verify at ordinary points.
SATURATING = [c for c in CELLS if c != "indrnn"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", SATURATING)
def test_gradients_at_saturation_match_the_forward(cell, backend):
    """float64 at +-800 against Richardson differences of the forward (exp() overflows inside
    the differences too); float32 at +-100 against the float64 kernel's derivative. Only the
    biases are extreme here: a peephole weight of 800 times c makes the forward change by ~16
    over one difference step, which no difference formula resolves."""
    k64 = codegen.load(cell, backend, dtype="float64")
    small = extreme_problem(k64, "float64", 0, ENTRY_SIZES, only_biases=True)
    large = extreme_problem(k64, "float64", 1, only_biases=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = verify_kernel(
            k64, method="richardson", entry_problem=small, projection_problem=large
        )
    assert all(r.verdict == "PASS" for r in rows), [r for r in rows if r.verdict != "PASS"]
    k32 = codegen.load(cell, backend, dtype="float32")
    small32 = extreme_problem(k64, "float32", 0, ENTRY_SIZES, True).astype(np.float64)
    large32 = extreme_problem(k64, "float32", 1, only_biases=True).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = verify_kernel(
            k32, reference=k64, method="richardson", entry_problem=small32,
            projection_problem=large32,
        )  # fmt: skip
    assert all(r.verdict == "PASS" and r.dtype == "float32" for r in rows), rows


NAN_SCRIPT = r"""
import json, sys
import numpy as np
import codegen
from codegen.verify import random_problem

out = []
for cell in sys.argv[1:]:
    for backend in codegen.backends.names():
        for dtype in ("float64", "float32"):
            k = codegen.load(cell, backend, dtype=dtype)
            p = random_problem(k, 0, {"T": 3, "B": 2, "I": 3, "H": 4}).astype(np.dtype(dtype))
            p.xs[0, 0, 0] = np.nan  # one NaN, in batch row 0 at the first step
            with np.errstate(all="ignore"):
                ys, final, cache = k.forward(*p.inputs())
                dxs, dstate0, dparams = k.backward(p.dys, cache, p.dfinal)
            out.append({
                "cell": cell, "backend": backend, "dtype": dtype,
                "ys_row0_all_nan": bool(np.isnan(ys[:, 0]).all()),
                "final_row0_nan": all(bool(np.isnan(v[0]).all()) for v in final.values()),
                "row1_finite": bool(np.isfinite(ys[:, 1]).all() and np.isfinite(dxs[:, 1]).all()
                                    and all(np.isfinite(v[1]).all() for v in dstate0.values())),
                "dxs_row0_nan": bool(np.isnan(dxs[:, 0]).any()),
                "dparams_nan": all(bool(np.isnan(v).any()) for v in dparams.values()),
            })
print(json.dumps(out))
"""


def test_a_nan_in_the_input_propagates_without_crash_or_hang():
    """Run in a child process with a time limit, so that a crash or a hang fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", NAN_SCRIPT, *CELLS], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == len(BACKENDS) * 2 * len(CELLS)  # two dtypes
    for row in rows:
        # the NaN reaches every unit of its own batch row, from step 0 on, forward and back
        assert row["ys_row0_all_nan"] and row["final_row0_nan"], row
        assert row["dxs_row0_nan"] and row["dparams_nan"], row
        # and nothing else: batch rows are independent
        assert row["row1_finite"], row
