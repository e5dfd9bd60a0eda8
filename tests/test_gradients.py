"""Every gradient of every built-in cell, on both backends, against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from codegen.verify import verify

from conftest import BACKENDS, central_differences, compare


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_gradient_passes(cell, backend):
    rows = verify(cell, backend)
    tensors = {r.tensor for r in rows}
    assert "xs" in tensors and any(t.startswith("state0[") for t in tensors)
    failed = [r for r in rows if r.verdict != "PASS"]
    assert not failed, failed
    # a central difference in float64 agrees to far better than the tolerance
    assert max(r.max_rel for r in rows) < 1e-7


def test_checker_catches_a_single_wrong_entry():
    """The comparison must flag one entry off by 0.1%, and point at it."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(4, 5))
    analytic = reference.copy()
    analytic[2, 3] *= 1.001
    row = compare("x", "numpy", "W", analytic, reference, "central", 1e-6)
    assert row.verdict == "FAIL"
    assert row.worst == (2, 3)


def test_central_differences_of_a_known_function():
    x = np.array([0.3, -1.2, 2.0])
    grad = central_differences(x, lambda: float(np.sum(np.sin(x))), 1e-6)
    np.testing.assert_allclose(grad, np.cos([0.3, -1.2, 2.0]), rtol=1e-9)
