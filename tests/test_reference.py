"""The generated forward against a direct NumPy transcription of the issue's formulas."""

from __future__ import annotations

import numpy as np
import pytest

import codegen

from conftest import BACKENDS, make_problem, rel_err


def sigma(x):
    return 1 / (1 + np.exp(-x))


def lstm_reference(xs, state0, p):
    h, c = state0["h"], state0["c"]
    ys = []
    for x in xs:
        f = sigma(x @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
        i = sigma(x @ p["W_i"].T + h @ p["U_i"].T + p["b_i"])
        c_tilde = np.tanh(x @ p["W_c"].T + h @ p["U_c"].T + p["b_c"])
        c = f * c + i * c_tilde
        o = sigma(x @ p["W_o"].T + h @ p["U_o"].T + p["b_o"])
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), {"h": h, "c": c}


def gru_reference(xs, state0, p):
    h = state0["h"]
    ys = []
    for x in xs:
        z = sigma(x @ p["W_z"].T + h @ p["U_z"].T + p["b_z"])
        r = sigma(x @ p["W_r"].T + h @ p["U_r"].T + p["b_r"])
        h_hat = np.tanh(x @ p["W_h"].T + (r * h) @ p["U_h"].T + p["b_h"])
        h = (1 - z) * h + z * h_hat
        ys.append(h)
    return np.stack(ys), {"h": h}


REFERENCES = {"lstm": lstm_reference, "gru": gru_reference}


@pytest.mark.parametrize("cell", sorted(REFERENCES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_the_formulas(cell, backend):
    kernel = codegen.load(cell, backend)
    xs, state0, params, _, _ = make_problem(kernel, T=6, B=2, I=3, H=5, seed=4)
    ys, final = REFERENCES[cell](xs, state0, params)
    got_ys, got_final, _ = kernel.forward(xs, state0, params)
    assert rel_err(got_ys, ys) <= 1e-13
    for s in kernel.states:
        assert rel_err(got_final[s], final[s]) <= 1e-13


def test_the_lstm_state_and_parameter_names_are_the_documented_ones():
    k = codegen.load("lstm")
    assert k.states == ("h", "c")
    assert k.param_shapes(3, 5) == {
        **{f"W_{g}": (5, 3) for g in "fico"},
        **{f"U_{g}": (5, 5) for g in "fico"},
        **{f"b_{g}": (5,) for g in "fico"},
    }
    g = codegen.load("gru")
    assert g.states == ("h",)
    assert set(g.param_shapes(3, 5)) == {f"{m}_{k}" for m in "WUb" for k in "zrh"}
