"""ln_lstm against an independent transcription of haste's LayerNormLSTM in torch (autograd).

The transcription follows haste's layout, not ours: W (I, 4 H) and R (H, 4 H) with the gates in
haste's order i, g, f, o; gamma (2, 4 H) for the normalised input and recurrent products;
gamma_h, beta_h (H,) for the cell state; layer norm by torch.nn.functional.layer_norm (biased
variance, eps inside the square root). Our parameters are mapped into that layout, so a gate
mixed up, a gain on the wrong product or a norm over the wrong units shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import codegen

from conftest import BACKENDS, rel_err

T, B, I, H = 4, 3, 5, 6
EPS = 1e-5
HASTE_GATES = "icfo"  # haste's i, g (our candidate c), f, o


def haste_layer_norm_lstm(x, h0, c0, W, R, b, gamma, gamma_h, beta_h):
    """haste's LayerNormLSTM forward (Ba et al. 2016, supplement eqs. 20-22), one step a time."""
    h, c, ys = h0, c0, []
    for t in range(x.shape[0]):
        Wx = F.layer_norm(x[t] @ W, (4 * H,), weight=gamma[0], eps=EPS)
        Rh = F.layer_norm(h @ R, (4 * H,), weight=gamma[1], eps=EPS)
        i, g, f, o = (Wx + Rh + b).split(H, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), gamma_h, beta_h, eps=EPS))
        ys.append(h)
    return torch.stack(ys), h, c


def to_haste(params):
    """Our parameters in haste's layout."""
    cat = np.concatenate
    return {
        "W": cat([params[f"W_{g}"] for g in HASTE_GATES]).T,
        "R": cat([params[f"U_{g}"] for g in HASTE_GATES]).T,
        "b": cat([params[f"b_{g}"] for g in HASTE_GATES]),
        "gamma": np.stack(
            [
                cat([params[f"gamma_x_{g}"] for g in HASTE_GATES]),
                cat([params[f"gamma_h_{g}"] for g in HASTE_GATES]),
            ]
        ),
        "gamma_h": params["gamma_c"],
        "beta_h": params["beta_c"],
    }


def from_haste(grads):
    """haste-layout gradients as ours."""
    out = {"gamma_c": grads["gamma_h"], "beta_c": grads["beta_h"]}
    for k, g in enumerate(HASTE_GATES):
        cols = slice(k * H, (k + 1) * H)
        out[f"W_{g}"] = grads["W"][:, cols].T
        out[f"U_{g}"] = grads["R"][:, cols].T
        out[f"b_{g}"] = grads["b"][cols]
        out[f"gamma_x_{g}"] = grads["gamma"][0, cols]
        out[f"gamma_h_{g}"] = grads["gamma"][1, cols]
    return out


def problem(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    k = codegen.load("ln_lstm", backend="numpy")
    params = {n: rng.uniform(-0.6, 0.6, s) for n, s in k.param_shapes(I, H).items()}
    for n in params:
        if n.startswith("gamma"):
            params[n] = 1 + params[n]  # gains about 1, as trained ones start
    xs = scale * rng.normal(size=(T, B, I))
    state0 = {s: scale * rng.uniform(-0.8, 0.8, (B, H)) for s in ("h", "c")}
    dys = rng.normal(size=(T, B, H))
    dfinal = {s: rng.normal(size=(B, H)) for s in ("h", "c")}
    return xs, state0, params, dys, dfinal


def reference(xs, state0, params, dys, dfinal):
    """The transcription's outputs and every gradient, by torch autograd in float64."""
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    haste = {n: leaf(v) for n, v in to_haste(params).items()}
    x, h0, c0 = leaf(xs), leaf(state0["h"]), leaf(state0["c"])
    ys, h, c = haste_layer_norm_lstm(x, h0, c0, **haste)
    loss = (ys * torch.tensor(dys)).sum()
    loss = loss + (h * torch.tensor(dfinal["h"])).sum() + (c * torch.tensor(dfinal["c"])).sum()
    loss.backward()
    grads = from_haste({n: v.grad.numpy() for n, v in haste.items()})
    final = {"h": h.detach().numpy(), "c": c.detach().numpy()}
    dstate0 = {"h": h0.grad.numpy(), "c": c0.grad.numpy()}
    return ys.detach().numpy(), final, x.grad.numpy(), dstate0, grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_ln_lstm_equals_haste_layer_norm_lstm_forward_and_every_gradient(backend):
    xs, state0, params, dys, dfinal = problem()
    ys, final, dxs, dstate0, dparams = reference(xs, state0, params, dys, dfinal)
    k = codegen.load("ln_lstm", backend=backend)
    got_ys, got_final, cache = k.forward(xs, state0, params)
    got_dxs, got_dstate0, got_dparams = k.backward(dys, cache, dfinal)
    assert rel_err(got_ys, ys) <= 1e-10
    assert rel_err(got_dxs, dxs) <= 1e-10
    for s in ("h", "c"):
        assert rel_err(got_final[s], final[s]) <= 1e-10, s
        assert rel_err(got_dstate0[s], dstate0[s]) <= 1e-10, s
    assert set(got_dparams) == set(dparams)
    for name, want in dparams.items():
        assert rel_err(got_dparams[name], want) <= 1e-10, name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_of_scale_1e4_stay_finite_and_match_the_transcription(backend, dtype):
    """Products of 1e4 inputs are normalised away: outputs and gradients stay finite (eps
    keeps a variance from 0), and equal the transcription's within the dtype's rounding."""
    xs, state0, params, dys, dfinal = problem(seed=1, scale=1e4)
    want = reference(xs, state0, params, dys, dfinal)
    k = codegen.load("ln_lstm", backend=backend, dtype=dtype)
    cast = lambda a: np.asarray(a, dtype)  # noqa: E731
    ys, final, cache = k.forward(cast(xs), {s: cast(v) for s, v in state0.items()},
                                 {n: cast(v) for n, v in params.items()})  # fmt: skip
    dxs, dstate0, dparams = k.backward(cast(dys), cache, {s: cast(v) for s, v in dfinal.items()})
    got = [ys, *final.values(), dxs, *dstate0.values(), *dparams.values()]
    assert all(np.isfinite(a).all() and a.dtype == np.dtype(dtype) for a in got)
    tol = 1e-9 if dtype == "float64" else 2e-3
    assert rel_err(ys, want[0]) <= tol
    # the gradient with respect to a 1e4-scale input is 1e-4 of the others: compare it alone
    assert rel_err(dxs, want[2]) <= tol
    for name, value in want[4].items():
        assert rel_err(dparams[name], value) <= tol, name


def test_a_row_of_constant_products_has_zero_variance_and_stays_finite():
    """All units equal: the variance is exactly 0 and only eps keeps the division finite."""
    xs, state0, params, dys, dfinal = problem(seed=2)
    for g in "fico":
        params[f"W_{g}"][:] = 0.0  # every input product 0: mean 0, variance 0
    for backend in BACKENDS:
        k = codegen.load("ln_lstm", backend=backend)
        ys, final, cache = k.forward(xs, state0, params)
        grads = k.backward(dys, cache, dfinal)
        arrays = [ys, *final.values(), grads[0], *grads[1].values(), *grads[2].values()]
        assert all(np.isfinite(a).all() for a in arrays), backend
        want = reference(xs, state0, params, dys, dfinal)
        assert rel_err(ys, want[0]) <= 1e-10
        assert rel_err(grads[2]["gamma_x_f"], want[4]["gamma_x_f"]) <= 1e-10
