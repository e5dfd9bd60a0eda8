"""The framework cells and codegen.interop against PyTorch and ONNX: forward and every gradient.

Everything runs in float64 and must agree to a relative error of 1e-10 (largest difference over
the largest entry of the reference), on the NumPy and the C backend. The references, and why
each can be trusted:

- torch.nn.LSTM and torch.nn.GRU are the frameworks' own layers; their gradients come from
  autograd (through torch.func.functional_call, so that the module itself computes).
- The ONNX reference evaluator (onnx.reference) is ONNX's executable transcription of its operator
  specification; it gives the forward of GRU (both linear_before_reset) and of LSTM with P.
- onnxruntime gives the forward of LSTM with input_forget=1, which the reference evaluator ignores.
  Its LSTM kernel runs float32 only ("LSTM operator does not support double yet"), so it pins
  the function down at float32 precision, and the test shows that this precision tells the
  coupled gate from the ordinary one.
- ONNX has no gradients. `onnx_lstm` and `onnx_gru` below transcribe the operator specification
  into torch; each test first checks that transcription's forward against the evaluator (1e-10)
  or onnxruntime (float32), then compares our gradients with its autograd gradients (1e-10).

torch, onnx and onnxruntime are imported unconditionally: without them this file fails, it never
skips.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from torch.func import functional_call

import codegen
from codegen import interop

from conftest import BACKENDS, rel_err

TOL = 1e-10
T, B, I, H = 5, 3, 4, 6
F64 = torch.float64


# our kernels -------------------------------------------------------------------------------


def run_ours(cell, backend, xs, state0, params, dys, dfinal):
    """Forward and backward of a cellgen cell: ys, final, dxs, dstate0, dparams."""
    k = codegen.load(cell, backend, dtype="float64")
    ys, final, cache = k.forward(xs, state0, params)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal)
    return ys, final, dxs, dstate0, dparams


def assert_close(got, want, what):
    err = rel_err(got, want)
    assert np.shape(got) == np.shape(want), f"{what}: shape {np.shape(got)} != {np.shape(want)}"
    assert err <= TOL, f"{what}: relative error {err:.3e} > {TOL:g}"


def loss_weights(states, seed):
    """dys and dfinal: the loss is <dys, ys> + sum over states of <dfinal[s], final[s]>."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, B, H)), {s: rng.normal(size=(B, H)) for s in states}


def sequence(states, seed):
    """xs (T, B, I) and state0 {s: (B, H)}."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, I))
    return xs, {s: rng.uniform(-0.8, 0.8, (B, H)) for s in states}


# autograd of a torch reference -------------------------------------------------------------


def autograd(fn, inputs, dys, dfinal):
    """fn(**inputs) -> (ys, final) in torch; returns them and d loss / d every input, as NumPy."""
    leaves = {k: torch.tensor(v, dtype=F64, requires_grad=True) for k, v in inputs.items()}
    ys, final = fn(**leaves)
    loss = (ys * torch.from_numpy(dys)).sum()
    for s, weight in dfinal.items():
        loss = loss + (final[s] * torch.from_numpy(weight)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {
        k: np.zeros_like(inputs[k]) if g is None else g.numpy()
        for k, g in zip(leaves, grads, strict=True)
    }
    return ys.detach().numpy(), {s: v.detach().numpy() for s, v in final.items()}, grads


def torch_module(module, states):
    """A torch.nn.LSTM/GRU as fn(x, h[, c], **its parameters) -> (ys, final)."""

    def fn(x, h, c=None, **weights):
        hx = (h[None], c[None]) if c is not None else h[None]
        ys, out = functional_call(module, weights, (x, hx))
        out = out if isinstance(out, tuple) else (out,)
        return ys, {s: v[0] for s, v in zip(states, out, strict=True)}

    return fn


def module_inputs(module, xs, state0):
    named = {k: v.detach().numpy() for k, v in module.named_parameters()}
    return {"x": xs, **state0, **named}


def check_all(got, ys, final, grads, state_grads, param_grads):
    """Our forward and gradients against a reference's."""
    got_ys, got_final, dxs, dstate0, dparams = got
    assert_close(got_ys, ys, "ys")
    for s in final:
        assert_close(got_final[s], final[s], f"final[{s}]")
    assert_close(dxs, state_grads["xs"], "dxs")
    for s in final:
        assert_close(dstate0[s], state_grads[s], f"dstate0[{s}]")
    assert set(dparams) == set(param_grads)
    for name, want in param_grads.items():
        assert_close(dparams[name], want, f"d{name}")


# PyTorch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_equals_torch_nn_lstm(backend):
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, dtype=F64)  # both biases random: only their sum may matter
    xs, state0 = sequence(("h", "c"), seed=1)
    dys, dfinal = loss_weights(("h", "c"), seed=2)
    ys, final, g = autograd(
        torch_module(module, ("h", "c")), module_inputs(module, xs, state0), dys, dfinal
    )
    got = run_ours("lstm", backend, xs, state0, interop.from_torch_lstm(module), dys, dfinal)
    want = {}
    for k, gate in enumerate("ifco"):  # torch's gate order i, f, g, o; g is our candidate c
        rows = slice(k * H, (k + 1) * H)
        want[f"W_{gate}"] = g["weight_ih_l0"][rows]
        want[f"U_{gate}"] = g["weight_hh_l0"][rows]
        want[f"b_{gate}"] = g["bias_ih_l0"][rows]  # b = bias_ih + bias_hh: either's gradient
    check_all(got, ys, final, g, {"xs": g["x"], "h": g["h"], "c": g["c"]}, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_reset_after_equals_torch_nn_gru(backend):
    torch.manual_seed(1)
    module = torch.nn.GRU(I, H, dtype=F64)
    xs, state0 = sequence(("h",), seed=3)
    dys, dfinal = loss_weights(("h",), seed=4)
    ys, final, g = autograd(
        torch_module(module, ("h",)), module_inputs(module, xs, state0), dys, dfinal
    )
    params = interop.from_torch_gru(module)
    got = run_ours("gru_reset_after", backend, xs, state0, params, dys, dfinal)
    want = {}
    for k, gate in enumerate("rzn"):  # torch's gate order r, z, n
        rows = slice(k * H, (k + 1) * H)
        want[f"W_{gate}"] = g["weight_ih_l0"][rows]
        want[f"U_{gate}"] = g["weight_hh_l0"][rows]
    want["b_r"] = g["bias_ih_l0"][0:H]
    want["b_z"] = g["bias_ih_l0"][H : 2 * H]
    want["b_in"] = g["bias_ih_l0"][2 * H :]
    want["b_hn"] = g["bias_hh_l0"][2 * H :]  # inside r * (U_n h + b_hn): not summable
    check_all(got, ys, final, g, {"xs": g["x"], "h": g["h"]}, want)


def _random_params(cell, seed):
    shapes = codegen.load(cell).param_shapes(I, H)
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, s) / np.sqrt(H) for k, s in shapes.items()}


@pytest.mark.parametrize(
    ("cell", "to_torch", "from_torch", "states"),
    [
        ("lstm", interop.to_torch_lstm, interop.from_torch_lstm, ("h", "c")),
        ("gru_reset_after", interop.to_torch_gru, interop.from_torch_gru, ("h",)),
    ],
)
def test_parameters_go_to_torch_and_back(cell, to_torch, from_torch, states):
    params = _random_params(cell, seed=5)
    module = to_torch(params)
    assert module.input_size == I and module.hidden_size == H
    back = from_torch(module)
    assert list(back) == list(params)  # the cell's declaration order
    for name in params:
        np.testing.assert_array_equal(back[name], params[name], err_msg=name)
    xs, state0 = sequence(states, seed=6)
    with torch.no_grad():
        ys, _ = torch_module(module, states)(
            torch.from_numpy(xs), *(torch.from_numpy(state0[s]) for s in states)
        )
    ours, _, _ = codegen.load(cell).forward(xs, state0, params)
    assert_close(ours, ys.numpy(), "ys of the module written by to_torch")


def test_to_torch_writes_into_an_existing_float32_module():
    params = _random_params("lstm", seed=7)
    module = torch.nn.LSTM(I, H)
    assert interop.to_torch_lstm(params, module) is module
    assert module.weight_ih_l0.dtype == torch.float32
    expected = np.concatenate([params[f"W_{g}"] for g in "ifco"]).astype(np.float32)
    np.testing.assert_array_equal(module.weight_ih_l0.detach().numpy(), expected)
    np.testing.assert_array_equal(module.bias_hh_l0.detach().numpy(), 0)


@pytest.mark.parametrize(
    ("cell", "make", "convert", "states"),
    [
        ("lstm", torch.nn.LSTMCell, interop.from_torch_lstm, ("h", "c")),
        ("gru_reset_after", torch.nn.GRUCell, interop.from_torch_gru, ("h",)),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_torch_cells_and_bias_free_modules_convert(cell, make, convert, states, bias):
    torch.manual_seed(2)
    module = make(I, H, bias=bias, dtype=F64)
    params = convert(module)
    if not bias:
        assert all(not np.any(v) for k, v in params.items() if k.startswith("b_"))
    xs, state0 = sequence(states, seed=8)
    with torch.no_grad():
        hx = tuple(torch.from_numpy(state0[s]) for s in states)
        out = module(torch.from_numpy(xs[0]), hx if len(hx) > 1 else hx[0])
    out = out if isinstance(out, tuple) else (out,)
    _, final, _ = codegen.load(cell).forward(xs[:1], state0, params)
    for s, value in zip(states, out, strict=True):
        assert_close(final[s], value.numpy(), f"one step, state {s}")


# ONNX: the operator specification transcribed into torch -----------------------------------


def onnx_lstm(X, W, R, B, initial_h, initial_c, P=None, input_forget=0):
    """The ONNX LSTM operator, direction forward, default activations (f=Sigmoid, g=h=Tanh).

    Gates stacked i, o, f, c; B = [Wb, Rb]; P = [p_i, p_o, p_f]; with input_forget, f = 1 - i.
    """
    Wi, Wo, Wf, Wc = W[0].chunk(4)
    Ri, Ro, Rf, Rc = R[0].chunk(4)
    Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = B[0].chunk(8)
    Pi, Po, Pf = P[0].chunk(3) if P is not None else (torch.zeros(Wi.shape[0], dtype=W.dtype),) * 3
    h, c, ys = initial_h[0], initial_c[0], []
    for x in X:
        i = torch.sigmoid(x @ Wi.T + h @ Ri.T + Pi * c + Wbi + Rbi)
        f_pre = x @ Wf.T + h @ Rf.T + Pf * c + Wbf + Rbf
        f = 1 - i if input_forget else torch.sigmoid(f_pre)
        c_cand = torch.tanh(x @ Wc.T + h @ Rc.T + Wbc + Rbc)
        c = f * c + i * c_cand
        o = torch.sigmoid(x @ Wo.T + h @ Ro.T + Po * c + Wbo + Rbo)
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), {"h": h, "c": c}


def onnx_gru(X, W, R, B, initial_h, linear_before_reset=0):
    """The ONNX GRU operator, direction forward, default activations (f=Sigmoid, g=Tanh).

    Gates stacked z, r, h; B = [Wb, Rb]; H_t = (1 - z) * h_t + z * H_{t-1}.
    """
    Wz, Wr, Wh = W[0].chunk(3)
    Rz, Rr, Rh = R[0].chunk(3)
    Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = B[0].chunk(6)
    H_t, ys = initial_h[0], []
    for x in X:
        z = torch.sigmoid(x @ Wz.T + H_t @ Rz.T + Wbz + Rbz)
        r = torch.sigmoid(x @ Wr.T + H_t @ Rr.T + Wbr + Rbr)
        if linear_before_reset:
            h = torch.tanh(x @ Wh.T + r * (H_t @ Rh.T + Rbh) + Wbh)
        else:
            h = torch.tanh(x @ Wh.T + (r * H_t) @ Rh.T + Rbh + Wbh)
        H_t = (1 - z) * h + z * H_t
        ys.append(H_t)
    return torch.stack(ys), {"h": H_t}


# ONNX: models, the evaluator and onnxruntime ------------------------------------------------

OPSET = 21
ONNX_INPUTS = {
    "LSTM": ["X", "W", "R", "B", "", "initial_h", "initial_c", "P"],
    "GRU": ["X", "W", "R", "B", "", "initial_h"],
}


def onnx_feeds(op, seed, peepholes=False, dtype=np.float64):
    """Random X, W, R, B, initial states (and P) in ONNX's layouts, one direction."""
    rng = np.random.default_rng(seed)
    gates = 4 if op == "LSTM" else 3
    scale = 1 / np.sqrt(H)
    feeds = {
        "X": rng.normal(size=(T, B, I)),
        "W": rng.uniform(-scale, scale, (1, gates * H, I)),
        "R": rng.uniform(-scale, scale, (1, gates * H, H)),
        "B": rng.uniform(-scale, scale, (1, 2 * gates * H)),
        "initial_h": rng.uniform(-0.8, 0.8, (1, B, H)),
    }
    if op == "LSTM":
        feeds["initial_c"] = rng.uniform(-0.8, 0.8, (1, B, H))
    if peepholes:
        feeds["P"] = rng.uniform(-1, 1, (1, 3 * H))
    return {k: v.astype(dtype) for k, v in feeds.items()}


def onnx_model(op, feeds, initializers=(), **attrs):
    """A model of one ONNX LSTM or GRU node; names in `initializers` are stored, not fed."""
    elem = TensorProto.DOUBLE if feeds["X"].dtype == np.float64 else TensorProto.FLOAT
    inputs = [n if n in feeds else "" for n in ONNX_INPUTS[op]]
    while not inputs[-1]:
        inputs.pop()
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, inputs, outputs, name=f"the_{op.lower()}", hidden_size=H, **attrs)
    graph = helper.make_graph(
        [node],
        "cell",
        [
            helper.make_tensor_value_info(n, elem, feeds[n].shape)
            for n in inputs
            if n and n not in initializers
        ],
        [
            helper.make_tensor_value_info(n, elem, shape)
            for n, shape in zip(outputs, [(T, 1, B, H), (1, B, H), (1, B, H)], strict=False)
        ],
        initializer=[onnx.numpy_helper.from_array(feeds[n], n) for n in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def run_onnx(op, feeds, runtime, **attrs):
    """ys (T, B, H) and final states of the node, by the reference evaluator or onnxruntime."""
    model = onnx_model(op, feeds, **attrs)
    if runtime == "evaluator":
        outputs = ReferenceEvaluator(model).run(None, feeds)
    else:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, feeds)
    ys = outputs[0][:, 0]  # Y is (T, num_directions, B, H)
    return ys, {s: v[0] for s, v in zip(("h", "c"), outputs[1:], strict=False)}


def ours_on_onnx(converted, backend, feeds, dys, dfinal):
    states = ("h", "c") if "initial_c" in feeds else ("h",)
    state0 = {s: feeds[f"initial_{s}"][0] for s in states}
    return run_ours(converted.cell, backend, feeds["X"], state0, converted.params, dys, dfinal)


def onnx_state_grads(g):
    out = {"xs": g["X"], "h": g["initial_h"][0]}
    if "initial_c" in g:
        out["c"] = g["initial_c"][0]
    return out


def as_onnx_grads(dparams, gates, signs=None):
    """Our parameter gradients as gradients of ONNX's W, R, B (chain rule of the mapping).

    W_g = s_g W_onnx_g, U_g = s_g R_onnx_g, b_g = s_g (Wb_g + Rb_g) with s_g = ±1 (signs), so
    dL/dW_onnx_g = s_g dW_g and both bias halves receive s_g db_g. A gate the cell does not
    have (lstm_cifg's f) receives zero.
    """
    signs = signs or {}

    def stack(prefix):
        parts = []
        for gate in gates:
            d = dparams.get(f"{prefix}_{gate}")
            shape = dparams[f"{prefix}_{gates[0]}"].shape
            parts.append(np.zeros(shape) if d is None else signs.get(gate, 1) * d)
        return np.concatenate(parts)

    b = stack("b")
    return {"W": stack("W")[None], "R": stack("U")[None], "B": np.concatenate([b, b])[None]}


def check_onnx(got, ys, final, g, onnx_grads):
    """Our forward against the reference's, our gradients (as ONNX's) against autograd's."""
    got_ys, got_final, dxs, dstate0, _ = got
    assert_close(got_ys, ys, "ys")
    for s in final:
        assert_close(got_final[s], final[s], f"final[{s}]")
    for name, want in onnx_state_grads(g).items():
        assert_close(dxs if name == "xs" else dstate0[name], want, f"d{name}")
    for name, ours in onnx_grads.items():
        assert_close(ours, g[name], f"dL/d{name}")


@pytest.mark.parametrize(("peepholes", "cell"), [(False, "lstm"), (True, "lstm_peephole")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_and_lstm_peephole_equal_the_onnx_lstm(backend, peepholes, cell):
    feeds = onnx_feeds("LSTM", seed=10, peepholes=peepholes)
    dys, dfinal = loss_weights(("h", "c"), seed=11)
    ys_ref, final_ref = run_onnx("LSTM", feeds, "evaluator")
    ys_t, final_t, g = autograd(onnx_lstm, feeds, dys, dfinal)
    assert_close(ys_t, ys_ref, "the torch transcription against the evaluator")
    for s in final_ref:
        assert_close(final_t[s], final_ref[s], f"the transcription's final {s}")

    converted = interop.from_onnx_lstm(feeds["W"], feeds["R"], feeds["B"], feeds.get("P"))
    assert converted.cell == cell
    assert list(converted.params) == list(codegen.load(cell).params)
    got = ours_on_onnx(converted, backend, feeds, dys, dfinal)
    want = as_onnx_grads(got[4], "iofc")
    if peepholes:
        want["P"] = np.concatenate([got[4][f"p_{g}"] for g in "iof"])[None]
    check_onnx(got, ys_ref, final_ref, g, want)


@pytest.mark.parametrize(("linear_before_reset", "cell"), [(0, "gru"), (1, "gru_reset_after")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_and_gru_reset_after_equal_the_onnx_gru(backend, linear_before_reset, cell):
    feeds = onnx_feeds("GRU", seed=12)
    dys, dfinal = loss_weights(("h",), seed=13)
    lbr = linear_before_reset
    ys_ref, final_ref = run_onnx("GRU", feeds, "evaluator", linear_before_reset=lbr)
    ys_t, final_t, g = autograd(partial(onnx_gru, linear_before_reset=lbr), feeds, dys, dfinal)
    assert_close(ys_t, ys_ref, "the torch transcription against the evaluator")
    assert_close(final_t["h"], final_ref["h"], "the transcription's final h")

    converted = interop.from_onnx_gru(feeds["W"], feeds["R"], feeds["B"], linear_before_reset=lbr)
    assert converted.cell == cell
    assert list(converted.params) == list(codegen.load(cell).params)
    got = ours_on_onnx(converted, backend, feeds, dys, dfinal)
    d = got[4]
    if lbr:  # gru_reset_after: z, r as ONNX's; n is ONNX's h with b_in = Wb_h, b_hn = Rb_h
        names = {"z": "z", "r": "r", "h": "n"}
        want = {
            "W": np.concatenate([d[f"W_{names[k]}"] for k in "zrh"])[None],
            "R": np.concatenate([d[f"U_{names[k]}"] for k in "zrh"])[None],
            "B": np.concatenate([d["b_z"], d["b_r"], d["b_in"], d["b_z"], d["b_r"], d["b_hn"]])[
                None
            ],
        }
    else:  # gru: z = 1 - z_onnx = σ(-a_onnx), so the z weights and biases enter negated
        want = as_onnx_grads(d, "zrh", signs={"z": -1})
    check_onnx(got, ys_ref, final_ref, g, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_cifg_equals_onnxruntime_with_input_forget(backend):
    feeds32 = onnx_feeds("LSTM", seed=14, dtype=np.float32)
    feeds = {k: v.astype(np.float64) for k, v in feeds32.items()}  # the same numbers exactly
    dys, dfinal = loss_weights(("h", "c"), seed=15)
    ys_rt, final_rt = run_onnx("LSTM", feeds32, "onnxruntime", input_forget=1)
    ys_t, final_t, g = autograd(partial(onnx_lstm, input_forget=1), feeds, dys, dfinal)
    # onnxruntime computes in float32: agreement to float32 rounding, accumulated over T steps
    float32_tol = 1e-5
    assert rel_err(ys_t, ys_rt) <= float32_tol
    assert rel_err(final_t["c"], final_rt["c"]) <= float32_tol
    # ... which is far finer than the difference the coupled forget gate makes
    ys_uncoupled, _ = run_onnx("LSTM", feeds32, "onnxruntime", input_forget=0)
    assert rel_err(ys_uncoupled, ys_rt) > 1000 * float32_tol

    converted = interop.from_onnx_lstm(feeds["W"], feeds["R"], feeds["B"], input_forget=True)
    assert converted.cell == "lstm_cifg"
    assert list(converted.params) == list(codegen.load("lstm_cifg").params)
    got = ours_on_onnx(converted, backend, feeds, dys, dfinal)
    assert rel_err(got[0], ys_rt) <= float32_tol  # ours against onnxruntime directly
    check_onnx(got, ys_t, final_t, g, as_onnx_grads(got[4], "iofc"))


# ONNX models -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attrs", "cell"),
    [
        ("LSTM", {}, "lstm_peephole"),
        ("LSTM", {"input_forget": 1}, "lstm_cifg"),
        ("GRU", {"linear_before_reset": 1}, "gru_reset_after"),
        ("GRU", {"activations": ["Sigmoid", "Tanh"], "direction": "forward"}, "gru"),
    ],
)
def test_from_onnx_model_reads_the_node_and_its_initializers(op, attrs, cell, tmp_path):
    peepholes = op == "LSTM" and not attrs
    feeds = onnx_feeds(op, seed=16, peepholes=peepholes)
    stored = ["W", "R", "B", "P"] if peepholes else ["W", "R", "B"]
    model = onnx_model(op, feeds, initializers=stored, **attrs)
    onnx.save(model, tmp_path / "model.onnx")
    converted = interop.from_onnx_model(tmp_path / "model.onnx")
    assert converted.cell == cell
    # the converted cell computes what the model computes
    states = ("h", "c") if op == "LSTM" else ("h",)
    state0 = {s: feeds[f"initial_{s}"][0] for s in states}
    ys, _, _ = codegen.load(cell).forward(feeds["X"], state0, converted.params)
    if attrs.get("input_forget"):  # the evaluator ignores input_forget; onnxruntime is float32
        feeds32 = {k: v.astype(np.float32) for k, v in feeds.items()}
        ys_ref, _ = run_onnx(op, feeds32, "onnxruntime", **attrs)
        assert rel_err(ys, ys_ref) <= 1e-5
    else:
        fed = {k: v for k, v in feeds.items() if k not in stored}
        ys_ref = ReferenceEvaluator(model).run(None, fed)[0][:, 0]
        assert rel_err(ys, ys_ref) <= TOL


# errors and isolation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "convert", "message"),
    [
        (
            lambda: torch.nn.LSTM(I, H, proj_size=2, bidirectional=True),
            interop.from_torch_layers,
            "proj_size=2 is bidirectional",
        ),
        (lambda: torch.nn.GRU(I, H), interop.from_torch_lstm, "expected a torch.nn.LSTM"),
        (lambda: torch.nn.Linear(I, H), interop.from_torch_gru, "got Linear"),
    ],
)
def test_torch_modules_cellgen_cannot_run_are_refused(make, convert, message):
    with pytest.raises(interop.InteropError, match=message) as err:
        convert(make())
    assert isinstance(err.value, ValueError) and isinstance(err.value, codegen.CellgenError)


def test_to_torch_refuses_wrong_parameters():
    params = _random_params("lstm", seed=17)
    with pytest.raises(ValueError, match="input_size and hidden_size must match"):
        interop.to_torch_lstm(params, torch.nn.LSTM(I + 1, H))
    with pytest.raises(ValueError, match="missing 'b_o'"):
        interop.to_torch_lstm({k: v for k, v in params.items() if k != "b_o"})
    with pytest.raises(ValueError, match=r"params\['U_f'\]: expected shape \(6, 6\)"):
        interop.to_torch_lstm({**params, "U_f": np.zeros((H, H + 1))})
    with pytest.raises(ValueError, match="bias=False"):
        interop.to_torch_lstm(params, torch.nn.LSTM(I, H, bias=False))
    with pytest.raises(ValueError, match="unknown 'p_i'"):
        interop.to_torch_gru({**_random_params("gru_reset_after", seed=18), "p_i": np.zeros(H)})


def test_onnx_weights_cellgen_cannot_run_are_refused():
    f = onnx_feeds("LSTM", seed=19, peepholes=True)
    W, R, Bias, P = f["W"], f["R"], f["B"], f["P"]
    with pytest.raises(ValueError, match="num_directions=2"):
        interop.from_onnx_lstm(np.concatenate([W, W]), R)
    with pytest.raises(ValueError, match=r"R: expected shape \(1, 4\*H, H\)"):
        interop.from_onnx_lstm(W, R[:, :-1])
    with pytest.raises(ValueError, match=r"W: expected shape \(1, 4\*H, I\)"):
        interop.from_onnx_lstm(W[:, :-2], R)
    with pytest.raises(ValueError, match=r"B: expected shape \(1, 48\)"):
        interop.from_onnx_lstm(W, R, Bias[:, :-1])
    with pytest.raises(ValueError, match="no peephole weights"):
        interop.from_onnx_lstm(W, R, Bias, P, input_forget=True)
    g = onnx_feeds("GRU", seed=20)
    with pytest.raises(ValueError, match=r"R: expected shape \(1, 3\*H, H\)"):
        interop.from_onnx_gru(g["W"], f["R"])
    # without B and with a zero P, ONNX's defaults: zero biases, and the cell without peepholes
    plain = interop.from_onnx_lstm(W[0], R[0], None, np.zeros(3 * H), input_forget=True)
    assert plain.cell == "lstm_cifg" and not np.any(plain.params["b_i"])


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"direction": "sideways"}, "direction 'sideways'"),
        ({"activations": ["Sigmoid", "Relu"]}, "activations"),
        ({"clip": 3.0}, "clip"),
    ],
)
def test_onnx_nodes_cellgen_cannot_run_are_refused(attrs, message):
    feeds = onnx_feeds("GRU", seed=21)
    model = onnx_model("GRU", feeds, initializers=["W", "R", "B"], **attrs)
    with pytest.raises(interop.InteropError, match=message):
        interop.from_onnx_model(model)


def test_from_onnx_model_needs_the_weights_in_initializers_and_one_node():
    feeds = onnx_feeds("GRU", seed=22)
    with pytest.raises(ValueError, match="not an initializer"):
        interop.from_onnx_model(onnx_model("GRU", feeds))
    model = onnx_model("GRU", feeds, initializers=["W", "R", "B"])
    with pytest.raises(ValueError, match=r"the node 'other'.*GRU 'the_gru'"):
        interop.from_onnx_model(model, node="other")
    assert interop.from_onnx_model(model, node="the_gru").cell == "gru"


def test_import_codegen_imports_neither_torch_nor_onnx():
    code = (
        "import sys, codegen, codegen.interop\n"
        "loaded = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
