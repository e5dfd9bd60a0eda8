"""lstmp, sru and indrnn against PyTorch: forward and every gradient, float64, both backends.

- lstmp against torch.nn.LSTM(proj_size=P) itself, its parameters converted by
  codegen.interop (which must also write them back: a round trip).
- sru (Lei et al. 2018, with the highway) and indrnn (Li et al. 2018) against transcriptions of
  their papers' equations into torch ops, written here independently of the equation files;
  their gradients come from autograd.

Every array agrees to a relative error of 1e-10 (largest difference over the largest entry).
torch is imported unconditionally: without it this file fails, it never skips.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import codegen
from codegen import interop

from conftest import BACKENDS, rel_err

TOL = 1e-10
T, B, I, H, P = 5, 3, 4, 6, 3
F64 = torch.float64


def assert_close(got, want, what):
    assert np.shape(got) == np.shape(want), f"{what}: {np.shape(got)} != {np.shape(want)}"
    err = rel_err(got, want)
    assert err <= TOL, f"{what}: relative error {err:.3e} > {TOL:g}"


def ours(cell, backend, xs, state0, params, dys, dfinal):
    k = codegen.load(cell, backend, dtype="float64")
    ys, final, cache = k.forward(xs, state0, params)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal)
    return ys, final, {"xs": dxs, **{f"state0[{s}]": v for s, v in dstate0.items()}, **dparams}


# lstmp = torch.nn.LSTM(proj_size=P) -------------------------------------------------------


def torch_lstmp_gradients(module, xs, h0, c0, dys, dfinal):
    """ys, (h_n, c_n) and autograd's gradients of <dys, ys> + <dfinal, final>, by torch name."""
    x = torch.tensor(xs, requires_grad=True)
    h = torch.tensor(h0[None], requires_grad=True)
    c = torch.tensor(c0[None], requires_grad=True)
    module.zero_grad()
    ys, (hn, cn) = module(x, (h, c))
    loss = (ys * torch.tensor(dys)).sum()
    loss = (
        loss + (hn[0] * torch.tensor(dfinal["h"])).sum() + (cn[0] * torch.tensor(dfinal["c"])).sum()
    )
    loss.backward()
    grads = {"xs": x.grad.numpy(), "state0[h]": h.grad[0].numpy(), "state0[c]": c.grad[0].numpy()}
    grads |= {n: p.grad.numpy() for n, p in module.named_parameters()}
    return ys.detach().numpy(), {"h": hn[0].detach().numpy(), "c": cn[0].detach().numpy()}, grads


def torch_gate_rows(name: str) -> slice:
    """The rows of our gate g (f, i, c, o) in torch's stacked weights, ordered i, f, g, o."""
    k = "ifco".index(name[-1])
    return slice(k * H, (k + 1) * H)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstmp_is_torch_lstm_with_proj_size(backend):
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, proj_size=P, dtype=F64)
    params = interop.from_torch_lstm(module)
    assert set(params) == set(codegen.load("lstmp").params)
    rng = np.random.default_rng(1)
    xs, h0, c0 = rng.normal(size=(T, B, I)), rng.normal(size=(B, P)), rng.normal(size=(B, H))
    dys = rng.normal(size=(T, B, P))
    dfinal = {"h": rng.normal(size=(B, P)), "c": rng.normal(size=(B, H))}
    ys, final, grads = ours("lstmp", backend, xs, {"h": h0, "c": c0}, params, dys, dfinal)
    ys_t, final_t, grads_t = torch_lstmp_gradients(module, xs, h0, c0, dys, dfinal)
    assert_close(ys, ys_t, "ys")
    for s in ("h", "c"):
        assert_close(final[s], final_t[s], f"final[{s}]")
    for name in ("xs", "state0[h]", "state0[c]"):
        assert_close(grads[name], grads_t[name], name)
    assert_close(grads["W_p"], grads_t["weight_hr_l0"], "W_p")
    for g in "fico":
        rows = torch_gate_rows(g)
        assert_close(grads[f"W_{g}"], grads_t["weight_ih_l0"][rows], f"W_{g}")
        assert_close(grads[f"U_{g}"], grads_t["weight_hh_l0"][rows], f"U_{g}")
        assert_close(grads[f"b_{g}"], grads_t["bias_ih_l0"][rows], f"b_{g}")  # b = b_ih + b_hh


def test_lstmp_parameters_round_trip_through_torch():
    torch.manual_seed(3)
    module = torch.nn.LSTM(I, H, proj_size=P, dtype=F64)
    params = interop.from_torch_lstm(module)
    rebuilt = interop.to_torch_lstm(params)  # a new module, proj_size from W_p
    assert (rebuilt.input_size, rebuilt.hidden_size, rebuilt.proj_size) == (I, H, P)
    again = interop.from_torch_lstm(rebuilt)
    assert list(again) == list(params)
    for name in params:
        np.testing.assert_array_equal(again[name], params[name])
    x = torch.randn(T, B, I, dtype=F64)
    assert torch.allclose(rebuilt(x)[0], module(x)[0], rtol=1e-12, atol=1e-14)
    written = interop.to_torch_lstm(params, torch.nn.LSTM(I, H, proj_size=P, dtype=F64))
    assert torch.allclose(written(x)[0], module(x)[0], rtol=1e-12, atol=1e-14)
    with pytest.raises(interop.InteropError, match="pass W_p exactly when the module projects"):
        interop.to_torch_lstm(params, torch.nn.LSTM(I, H, dtype=F64))
    with pytest.raises(ValueError, match=r"params\['W_p'\]: expected shape \(3, 6\)"):
        interop.to_torch_lstm({**params, "W_p": np.zeros((P, H + 1))})


# sru and indrnn against torch transcriptions --------------------------------------------


def sru_torch(x, c, p):
    """Lei et al. 2018, eqs. 3-6 with the highway: f, r from W x, v ⊙ c_{t-1} and b; output h."""
    ys = []
    for x_t in x:
        f = torch.sigmoid(x_t @ p["W_f"].T + p["v_f"] * c + p["b_f"])
        r = torch.sigmoid(x_t @ p["W_r"].T + p["v_r"] * c + p["b_r"])
        c = f * c + (1 - f) * (x_t @ p["W"].T)
        ys.append(r * c + (1 - r) * x_t)
    return torch.stack(ys), {"c": c}


def indrnn_torch(x, h, p):
    """Li et al. 2018: h_t = relu(W x_t + u ⊙ h_{t-1} + b)."""
    ys = []
    for x_t in x:
        h = torch.relu(x_t @ p["W"].T + p["u"] * h + p["b"])
        ys.append(h)
    return torch.stack(ys), {"h": h}


TRANSCRIPTIONS = {"sru": (sru_torch, H), "indrnn": (indrnn_torch, I)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(TRANSCRIPTIONS))
def test_a_cell_equals_its_torch_transcription(cell, backend):
    step, inputs = TRANSCRIPTIONS[cell]
    k = codegen.load(cell)
    rng = np.random.default_rng(4)
    params = {n: rng.uniform(-0.6, 0.6, s) for n, s in k.param_shapes(inputs, H).items()}
    xs = rng.normal(size=(T, B, inputs))
    state0 = {s: rng.uniform(-0.8, 0.8, (B, H)) for s in k.states}
    dys = rng.normal(size=(T, B, H))
    dfinal = {s: rng.normal(size=(B, H)) for s in k.states}
    ys, final, grads = ours(cell, backend, xs, state0, params, dys, dfinal)

    tensors = {"xs": xs, **{f"state0[{s}]": v for s, v in state0.items()}, **params}
    leaves = {n: torch.tensor(v, requires_grad=True) for n, v in tensors.items()}
    s0 = {s: leaves[f"state0[{s}]"] for s in k.states}
    ys_t, final_t = step(leaves["xs"], *s0.values(), {n: leaves[n] for n in params})
    loss = (ys_t * torch.tensor(dys)).sum()
    loss = loss + sum((final_t[s] * torch.tensor(dfinal[s])).sum() for s in k.states)
    loss.backward()
    assert_close(ys, ys_t.detach().numpy(), "ys")
    for s in k.states:
        assert_close(final[s], final_t[s].detach().numpy(), f"final[{s}]")
    assert set(grads) == set(leaves)
    for name, leaf in leaves.items():
        assert_close(grads[name], leaf.grad.numpy(), name)
