"""Bad arguments raise ValueError naming the argument and the expected shape, before C runs."""

from __future__ import annotations

import numpy as np
import pytest

import codegen
from codegen.registry import builtin_cells

from conftest import BACKENDS, make_problem


@pytest.fixture(params=BACKENDS)
def kernel(request):
    return codegen.load("lstm", request.param)


def test_wrong_xs_shape(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    with pytest.raises(ValueError, match=r"xs: expected .*\(T, B, I\)"):
        kernel.forward(xs[0], state0, params)


def test_wrong_parameter_shape_names_it_and_the_expected_shape(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    params["U_o"] = params["U_o"][:, :4]
    with pytest.raises(ValueError, match=r"params\['U_o'\]: expected shape \(H, H\) = \(5, 5\)"):
        kernel.forward(xs, state0, params)


def test_missing_parameter(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    del params["W_c"]
    with pytest.raises(ValueError, match=r"missing parameter 'W_c' of shape \(H, I\) = \(5, 4\)"):
        kernel.forward(xs, state0, params)


def test_unknown_parameter(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    params["W_x"] = params["W_f"]
    with pytest.raises(ValueError, match="unknown parameter 'W_x'"):
        kernel.forward(xs, state0, params)


def test_missing_and_misshapen_state(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    with pytest.raises(ValueError, match="missing state 'c'"):
        kernel.forward(xs, {"h": state0["h"]}, params)
    state0["c"] = state0["c"][:2]
    with pytest.raises(ValueError, match=r"state0\['c'\]: expected shape \(B, H\) = \(3, 5\)"):
        kernel.forward(xs, state0, params)


def test_mixed_dtypes(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    params["b_f"] = params["b_f"].astype(np.float32)
    with pytest.raises(ValueError, match=r"params\['b_f'\]: dtype float32 does not match"):
        kernel.forward(xs, state0, params)


def test_integer_data_is_refused(kernel):
    xs, state0, params, _, _ = make_problem(kernel, T=2, B=3, I=4, H=5)
    with pytest.raises(ValueError, match="xs: dtype int64 is not supported"):
        kernel.forward(xs.astype(np.int64), state0, params)


def test_c_refuses_the_other_dtype_and_non_contiguous_data():
    k = codegen.load("gru", "c", dtype="float32")
    xs, state0, params, _, _ = make_problem(k, T=2, B=3, I=4, H=5)
    with pytest.raises(ValueError, match=r"xs: dtype float64 is not supported.*float32"):
        k.forward(xs, state0, params)
    xs, state0, params, _, _ = make_problem(k, T=2, B=3, I=4, H=5, dtype=np.float32)
    params["U_h"] = np.asfortranarray(params["U_h"])
    with pytest.raises(ValueError, match=r"params\['U_h'\]: the C kernel needs C-contiguous"):
        k.forward(xs, state0, params)


def test_backward_checks_its_arguments(kernel):
    xs, state0, params, dys, dfinal = make_problem(kernel, T=2, B=3, I=4, H=5)
    _, _, cache = kernel.forward(xs, state0, params)
    with pytest.raises(ValueError, match=r"dys: expected shape \(T, B, H\) = \(2, 3, 5\)"):
        kernel.backward(dys[:1], cache)
    with pytest.raises(ValueError, match="dfinal: unknown state 'q'"):
        kernel.backward(dys, cache, {"q": dfinal["h"]})
    with pytest.raises(ValueError, match="cache"):
        kernel.backward(dys, {"ys": dys})


def test_unknown_cell_and_backend():
    with pytest.raises(ValueError, match=r"unknown cell 'lsmt'; known cells: .*\blstm\b") as err:
        codegen.load("lsmt")
    for cell in builtin_cells():
        assert cell in str(err.value)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        codegen.load("lstm", backend="cuda")


def test_inputs_are_not_modified(kernel):
    xs, state0, params, dys, dfinal = make_problem(kernel, T=3, B=2, I=4, H=5)
    copies = [xs.copy(), {k: v.copy() for k, v in state0.items()},
              {k: v.copy() for k, v in params.items()}, dys.copy()]  # fmt: skip
    _, _, cache = kernel.forward(xs, state0, params)
    kernel.backward(dys, cache, dfinal)
    np.testing.assert_array_equal(xs, copies[0])
    for k in state0:
        np.testing.assert_array_equal(state0[k], copies[1][k])
    for k in params:
        np.testing.assert_array_equal(params[k], copies[2][k])
    np.testing.assert_array_equal(dys, copies[3])
