"""Property tests (hypothesis): random shapes and values, C equals NumPy, and gradients pass.

Shapes run down to T = 1 and B = 1 with I != H; values from a seed and a scale that reaches
well into saturation. Examples stay few and small so the whole file takes seconds.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import codegen
from codegen.verify import Loss, analytic_gradients, check_directions, directions, random_problem

from conftest import CELLS

SIZES = st.fixed_dictionaries(
    {
        "T": st.integers(1, 4),
        "B": st.integers(1, 3),
        "I": st.integers(1, 5),
        "H": st.integers(1, 5),
    }
)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
EPS = float(np.finfo(np.float64).eps)


def scaled_problem(kernel, sizes, seed, scale):
    """A random point with inputs and weights multiplied by `scale` (gates saturate above ~5)."""
    p = random_problem(kernel, seed, sizes)
    p.xs *= scale
    for value in p.params.values():
        value *= scale
    return p


def _outputs(kernel, p):
    ys, final, cache = kernel.forward(*p.inputs())
    dxs, dstate0, dparams = kernel.backward(p.dys, cache, p.dfinal)
    return {"ys": ys, "dxs": dxs, **{f"final[{s}]": v for s, v in final.items()},
            **{f"d{s}0": v for s, v in dstate0.items()}, **dparams}  # fmt: skip


@SETTINGS
@given(
    cell=st.sampled_from(CELLS),
    sizes=SIZES,
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.05, 20.0),
)
@example(cell="lstm", sizes={"T": 1, "B": 1, "I": 1, "H": 1}, seed=0, scale=1.0)
@example(cell="gru", sizes={"T": 1, "B": 1, "I": 5, "H": 2}, seed=1, scale=1.0)
def test_c_equals_numpy(cell, sizes, seed, scale):
    numpy_kernel = codegen.load(cell, "numpy")
    c_kernel = codegen.load(cell, "c")
    p = scaled_problem(numpy_kernel, sizes, seed, scale)
    expected, got = _outputs(numpy_kernel, p), _outputs(c_kernel, p)
    assert expected.keys() == got.keys()
    # sums run in another order: a few roundings apart, relative to the tensor's largest entry,
    # or to the largest value of all where a saturated gate leaves a tensor near zero
    biggest = max(float(np.max(np.abs(v))) for v in expected.values())
    for name in expected:
        assert got[name].shape == expected[name].shape, name
        assert np.isfinite(got[name]).all(), name
        error = float(np.max(np.abs(got[name] - expected[name])))
        assert error <= 1e-12 * float(np.max(np.abs(expected[name]))) + 64 * EPS * biggest, name


@SETTINGS
@given(
    cell=st.sampled_from(CELLS),
    sizes=SIZES,
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.05, 3.0),
)
@example(cell="lstm", sizes={"T": 1, "B": 1, "I": 3, "H": 2}, seed=0, scale=1.0)
def test_gradients_pass_the_dot_product_test(cell, sizes, seed, scale):
    """<v, backward(w)> against the complex-step derivative of the forward along v, for two
    random directions in every tensor."""
    kernel = codegen.load(cell, "numpy")
    p = scaled_problem(kernel, sizes, seed, scale)
    loss = Loss(kernel, p)
    analytic = analytic_gradients(kernel, p)
    biggest = max(float(np.max(np.abs(g))) for g in analytic.values())
    atol = 16 * np.finfo(np.float64).eps * biggest
    for name, x in p.tensors().items():
        vs = directions(x.shape, seed, name, 2)
        check = check_directions(loss, name, analytic[name], "complex", 1e-12, vs, atol=atol)
        assert check.judgement.verdict == "PASS", (name, check.errors / check.scales)
