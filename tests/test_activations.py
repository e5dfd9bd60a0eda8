"""Activations whose derivative needs the input (softplus, silu): the plan saves the input,
every gradient verifies on every backend and dtype, and extreme inputs stay finite and exact."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import codegen
from codegen.activations import ACTIVATIONS, FUNCTIONS, helpers
from codegen.kernel import build_kernel
from codegen.paths import PACKAGE_DIR
from codegen.registry import load_cell
from codegen.verify import verify

from conftest import BACKENDS
from test_extreme import extreme_problem, reference_forward, run_strict

CELL = """
    from codegen.activations import sigmoid, silu, softplus
    from codegen.cell import Cell

    cell = Cell("smooth", description="softplus and silu", reference="a test")
    x = cell.input("x")
    h_prev, c_prev = cell.states("h c")
    W_a, W_b, U_a, U_b = cell.matrices("W_a W_b U_a U_b")
    b_a, b_b = cell.vectors("b_a b_b")
    a = cell.eq("a", softplus(W_a @ x + U_a @ h_prev + b_a), "softplus gate")
    g = cell.eq("g", sigmoid(W_b @ x + U_b @ h_prev + b_b), "sigmoid gate")
    c = cell.update("c", g * c_prev + (1 - g) * a, "cell")
    h = cell.update("h", silu(c) * g, "hidden")
"""


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    path = tmp_path_factory.mktemp("smooth") / "smooth.py"
    path.write_text(textwrap.dedent(CELL))
    return path


def test_the_plan_saves_the_input_of_an_activation_that_needs_it(smooth):
    kernel = build_kernel(load_cell(smooth))
    assert "a_pre" in kernel.saved  # softplus' = sigmoid(a_pre)
    assert "c" in kernel.states  # silu(c): its input c is a state, kept anyway
    assert {"softplus", "silu", "sigmoid"} <= kernel.functions


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_softplus_and_silu_gradients_verify(smooth, backend, dtype):
    rows = verify(str(smooth), backend, seed=0, dtype=dtype)
    assert rows and all(r.verdict == "PASS" for r in rows), [
        (r.tensor, r.verdict, r.max_rel) for r in rows if r.verdict != "PASS"
    ]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_softplus_and_silu_at_extreme_inputs_are_finite_and_exact(smooth, backend, dtype):
    kernel = codegen.load(smooth, backend, dtype=dtype)
    p = extreme_problem(kernel, dtype)
    A = {"float64": 800.0, "float32": 100.0}[dtype]
    p.params["b_a"][:] = A * np.array([1, -1, 1, -1], dtype)  # softplus at both extremes
    p.params["b_b"][:] = A * np.array([1, 1, -1, -1], dtype)  # each meets g = 1 and g = 0
    ys, final, grads = run_strict(kernel, p)
    dxs, dstate0, dparams = grads
    for a in [ys, *final.values(), dxs, *dstate0.values(), *dparams.values()]:
        assert a.dtype == np.dtype(dtype) and np.isfinite(a).all()
    expected_ys, expected_final = reference_forward(str(smooth), *p.inputs(dtype=np.float64))
    # saturated values may be tiny (silu(-800)): relative to the values' scale, 1 at least
    tol = 1e-13 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(ys, expected_ys, rtol=tol, atol=tol)
    assert np.abs(expected_ys).max() > 1e-3, "the problem must reach silu's growing side too"
    for s in kernel.states:
        np.testing.assert_allclose(final[s], expected_final[s], rtol=tol, atol=tol)


def test_every_function_has_a_helper_or_a_spelling_in_every_builtin_backend():
    """Adding an activation: one class in codegen/activations.py, plus per backend a helper."""
    backends = {"c": ".c.jinja", "numpy": ".py.jinja"}
    for backend, suffix in backends.items():
        folder = PACKAGE_DIR / "backends" / backend / "templates" / "functions"
        for name in helpers(set(FUNCTIONS)):
            spelled = backend in getattr(FUNCTIONS.get(name), "spellings", {})
            native = name not in FUNCTIONS  # exp: C writes its own; NumPy has np.exp
            has_helper = (folder / f"{name}{suffix}").is_file()
            assert spelled or has_helper or (native and backend == "numpy"), (backend, name)
    assert set(ACTIVATIONS) >= {"softplus", "silu"}
