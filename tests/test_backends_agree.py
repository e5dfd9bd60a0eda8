"""C against NumPy: float64 to 1e-12, float32 against float64 within float32 accuracy."""

from __future__ import annotations

import numpy as np

import codegen

from conftest import make_problem, rel_err


def _run(kernel, xs, state0, params, dys, dfinal):
    ys, final, cache = kernel.forward(xs, state0, params)
    dxs, dstate0, dparams = kernel.backward(dys, cache, dfinal)
    return {"ys": ys, "dxs": dxs, **{f"final[{s}]": v for s, v in final.items()},
            **{f"d{s}0": v for s, v in dstate0.items()}, **dparams}  # fmt: skip


def test_c_float64_equals_numpy(cell):
    ref = codegen.load(cell, "numpy")
    c = codegen.load(cell, "c", dtype="float64")
    problem = make_problem(ref, T=7, B=3, I=5, H=8, seed=1)
    expected = _run(ref, *problem)
    got = _run(c, *problem)
    assert expected.keys() == got.keys()
    for name in expected:
        assert got[name].dtype == np.float64
        assert rel_err(got[name], expected[name]) <= 1e-12, name


def test_float32_kernels_match_float64(cell):
    ref = codegen.load(cell, "numpy")
    problem64 = make_problem(ref, T=7, B=3, I=5, H=8, seed=2)
    expected = _run(ref, *problem64)
    problem32 = make_problem(ref, T=7, B=3, I=5, H=8, seed=2, dtype=np.float32)
    for kernel in (codegen.load(cell, "c", dtype="float32"), ref):
        got = _run(kernel, *problem32)
        for name in expected:
            assert got[name].dtype == np.float32, (kernel, name)  # never a silent upcast
            # float32 carries 24 bits (6e-8); a few dozen roundings per value stay below 1e-5
            assert rel_err(got[name], expected[name]) <= 1e-5, (kernel, name)
