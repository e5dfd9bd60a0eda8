"""Shared fixtures: random problems for any cell, the built-in cells, the registered backends,
and the plain gradient-check helpers only the tests use (central differences, compare)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import codegen.backends
from codegen.load import CellKernel
from codegen.registry import builtin_cells
from codegen.verify import Problem, Row, judge, locate
from codegen.verify.problems import declared_sizes

CELLS = builtin_cells()
BACKENDS = codegen.backends.names()  # every registered backend, the built-ins first


def make_problem(kernel, T=4, B=3, I=5, H=6, seed=0, dtype=np.float64, declared=None):
    """Random inputs at a moderate scale, where every gate is away from saturation; the cell's
    declared sizes from `declared`, else declared_sizes' choice."""
    rng = np.random.default_rng(seed)
    I = H if kernel.spec.input_hidden else I  # an input used elementwise: I = H
    declared = declared if declared is not None else declared_sizes(kernel, H)
    params = {
        k: (rng.uniform(-1, 1, v) / np.sqrt(H)).astype(dtype)
        for k, v in kernel.param_shapes(I, H, **declared).items()
    }
    xs = rng.normal(size=(T, B, I)).astype(dtype)
    shapes = kernel.state_shapes(B, H, **declared)
    state0 = {s: rng.uniform(-0.8, 0.8, shape).astype(dtype) for s, shape in shapes.items()}
    dys = rng.normal(size=(T, B, kernel.output_size(H, **declared))).astype(dtype)
    dfinal = {s: rng.normal(size=shape).astype(dtype) for s, shape in shapes.items()}
    return xs, state0, params, dys, dfinal


def rel_err(a, b):
    """Largest difference relative to the largest entry of the reference b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


def loss_function(kernel: CellKernel, p: Problem) -> Callable[[], float]:
    """L at the current values of p's arrays (which a caller may perturb in place)."""

    def loss() -> float:
        ys, final, _ = kernel.forward(p.xs, p.state0, p.params)
        total = np.sum(p.dys * ys)
        for s in kernel.states:
            total += np.sum(p.dfinal[s] * final[s])
        return float(total)

    return loss


def central_differences(array: np.ndarray, loss: Callable[[], float], step: float) -> np.ndarray:
    """dL/d(array), entry by entry, perturbing `array` in place."""
    grad = np.empty_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + step
        plus = loss()
        array[index] = original - step
        minus = loss()
        array[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def compare(
    cell: str,
    backend: str,
    tensor: str,
    analytic: np.ndarray,
    reference: np.ndarray,
    method: str,
    tolerance: float,
) -> Row:
    """One tensor's Row from whole analytic and reference gradients (no noise estimate)."""
    analytic = np.asarray(analytic, np.float64)
    reference = np.asarray(reference, np.float64)
    raw = np.where(np.isfinite(analytic), np.abs(analytic - reference), np.inf)
    finite = np.abs(analytic[np.isfinite(analytic)])
    scale = max(float(np.max(np.abs(reference), initial=0.0)), float(np.max(finite, initial=0.0)))
    scale = max(scale, 1e-300)
    verdict = judge(raw.ravel(), np.zeros(raw.size), np.full(raw.size, scale), tolerance, {})
    index = tuple(int(i) for i in np.unravel_index(max(verdict.index, 0), raw.shape))
    where = locate(tensor, index, {})
    return Row(
        cell=cell,
        backend=backend,
        tensor=tensor,
        shape=tuple(raw.shape),
        method=method,
        max_abs=float(np.max(raw, initial=0.0)),
        max_rel=float(np.max(raw, initial=0.0)) / scale,
        tolerance=tolerance,
        verdict=verdict.verdict,
        worst=index,
        analytic=float(analytic[index]),
        reference=float(reference[index]),
        location=where.text,
        time_step=where.time_step,
        row=where.row,
        column=where.column,
        detail=verdict.detail,
    )
