"""Shared fixtures: random problems for any cell, the built-in cells, the registered backends."""

from __future__ import annotations

import numpy as np
import pytest

import codegen.backends
from codegen.registry import builtin_cells

CELLS = builtin_cells()
BACKENDS = codegen.backends.names()  # every registered backend, the built-ins first


def make_problem(kernel, T=4, B=3, I=5, H=6, seed=0, dtype=np.float64):
    """Random inputs at a moderate scale, where every gate is away from saturation."""
    rng = np.random.default_rng(seed)
    params = {
        k: (rng.uniform(-1, 1, v) / np.sqrt(H)).astype(dtype)
        for k, v in kernel.param_shapes(I, H).items()
    }
    xs = rng.normal(size=(T, B, I)).astype(dtype)
    state0 = {s: rng.uniform(-0.8, 0.8, (B, H)).astype(dtype) for s in kernel.states}
    dys = rng.normal(size=(T, B, H)).astype(dtype)
    dfinal = {s: rng.normal(size=(B, H)).astype(dtype) for s in kernel.states}
    return xs, state0, params, dys, dfinal


def rel_err(a, b):
    """Largest difference relative to the largest entry of the reference b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param
