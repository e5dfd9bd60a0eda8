"""codegen.RNN and sequences against the frameworks (issue 10 items 2 to 4): two-layer
bidirectional torch.nn.LSTM and torch.nn.GRU on a packed batch of unequal lengths, every output
and gradient; onnxruntime's LSTM and GRU with sequence_lens, reverse and bidirectional."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import codegen
from codegen import interop

from conftest import BACKENDS, rel_err

T, B, I, H = 5, 4, 3, 4
LENGTHS = [3, 5, 1, 4]  # unsorted, with 1 and T
TORCH = {
    "LSTM": ("lstm", interop.from_torch_lstm, ("h", "c")),
    "GRU": ("gru_reset_after", interop.from_torch_gru, ("h",)),
}


def _rnn(cell, backend, **kw):
    dtype = "float64" if codegen.backends.get(backend).default_dtype else None
    return codegen.RNN(cell, I, H, backend=backend, dtype=dtype, **kw)


@pytest.fixture(scope="module", params=list(TORCH))
def torch_run(request):
    """A 2-layer bidirectional torch module on a packed batch: its outputs and gradients."""
    kind = request.param
    cell, convert, states = TORCH[kind]
    torch.manual_seed(1)
    module = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(T, B, I))
    state0 = {s: rng.uniform(-0.8, 0.8, (4, B, H)) for s in states}
    dys = rng.normal(size=(T, B, 2 * H))
    dys[np.arange(T)[:, None] >= np.array(LENGTHS)] = 0  # what pad_packed_sequence pads
    dfinal = {s: rng.normal(size=(4, B, H)) for s in states}
    x = torch.tensor(xs, requires_grad=True)
    s0 = {s: torch.tensor(v, requires_grad=True) for s, v in state0.items()}
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    out, final = module(packed, (s0["h"], s0["c"]) if kind == "LSTM" else s0["h"])
    final = dict(zip(states, final if kind == "LSTM" else (final,), strict=True))
    ys, _ = pad_packed_sequence(out, total_length=T)
    loss = (ys * torch.tensor(dys)).sum()
    loss = loss + sum((final[s] * torch.tensor(dfinal[s])).sum() for s in states)
    loss.backward()
    grads = copy.deepcopy(module)  # the weights' gradients, read as weights by convert
    named = dict(module.named_parameters())
    with torch.no_grad():
        for name, p in grads.named_parameters():
            p.copy_(named[name].grad)
            if name.startswith("bias_hh"):  # a summed bias: its gradient is bias_ih's
                summed = 2 * H if kind == "GRU" else 4 * H
                assert torch.allclose(p[:summed], named[name.replace("hh", "ih")].grad[:summed])
                p[:summed] = 0
    return {
        "kind": kind, "cell": cell, "params": convert(module), "xs": xs, "state0": state0,
        "dys": dys, "dfinal": dfinal, "ys": ys.detach().numpy(),
        "final": {s: v.detach().numpy() for s, v in final.items()},
        "dxs": x.grad.numpy(), "dstate0": {s: v.grad.numpy() for s, v in s0.items()},
        "dparams": convert(grads), "module": module,
    }  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_rnn_equals_torch_on_a_packed_batch(torch_run, backend):
    r = torch_run
    rnn = _rnn(r["cell"], backend, num_layers=2, bidirectional=True)
    assert set(rnn.param_shapes()) == set(r["params"])
    ys, final, cache = rnn.forward(r["xs"], r["state0"], r["params"], lengths=LENGTHS)
    dxs, dstate0, dparams = rnn.backward(r["dys"], cache, r["dfinal"])
    assert ys.shape == (T, B, 2 * H) and rel_err(ys, r["ys"]) <= 1e-10
    for s in r["final"]:
        assert rel_err(final[s], r["final"][s]) <= 1e-10, s
        assert rel_err(dstate0[s], r["dstate0"][s]) <= 1e-10, s
    assert rel_err(dxs, r["dxs"]) <= 1e-10
    assert list(dparams) == list(r["dparams"])
    for p in dparams:
        assert rel_err(dparams[p], r["dparams"][p]) <= 1e-10, p


def test_rnn_parameters_go_back_into_torch(torch_run):
    r = torch_run
    to_torch = interop.to_torch_lstm if r["kind"] == "LSTM" else interop.to_torch_gru
    module = to_torch(r["params"])
    assert (module.num_layers, module.bidirectional) == (2, True)
    x = torch.tensor(r["xs"])
    state = tuple(torch.tensor(r["state0"][s]) for s in r["state0"])
    ours, _ = module(x, state if r["kind"] == "LSTM" else state[0])
    theirs, _ = r["module"](x, state if r["kind"] == "LSTM" else state[0])
    assert rel_err(ours.detach().numpy(), theirs.detach().numpy()) <= 1e-12
    with pytest.raises(ValueError, match="num_layers and bidirectional must match"):
        to_torch(r["params"], getattr(torch.nn, r["kind"])(I, H, dtype=torch.float64))


def test_rnn_refuses_what_it_cannot_run():
    rnn = _rnn("gru", "numpy", num_layers=2)
    params = {p: np.zeros(s) for p, s in rnn.param_shapes().items()}
    assert rnn.param_shapes()["l1.W_z"] == (H, H)  # layer 1 reads layer 0's H outputs
    with pytest.raises(ValueError, match=r"params: missing 'l1\.b_h'"):
        rnn.forward(np.zeros((T, B, I)), None, {k: v for k, v in params.items() if k != "l1.b_h"})
    with pytest.raises(ValueError, match=r"state0\['h'\]: expected shape \(L\*D, B, H\)"):
        rnn.forward(np.zeros((T, B, I)), {"h": np.zeros((1, B, H))}, params)
    with pytest.raises(ValueError, match=r"lengths: each must be in 0\.\.T"):
        rnn.forward(np.zeros((T, B, I)), None, params, lengths=[9, 1, 1, 1])
    _, _, cache = rnn.forward(np.zeros((T, B, I)), None, params)
    with pytest.raises(ValueError, match="cache: pass the cache of this RNN"):
        _rnn("gru", "numpy", num_layers=2).backward(np.zeros((T, B, H)), cache)


# onnxruntime: one layer, sequence_lens, reverse and bidirectional, float32 -------------------

ONNX_INPUTS = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"]


def _onnx_run(op, direction, feeds):
    """Y (T, D, B, H) and Y_h (D, B, H) of one ONNX node by onnxruntime."""
    D = feeds["W"].shape[0]
    inputs = [n for n in ONNX_INPUTS if n in feeds]
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    node = helper.make_node(op, inputs, ["Y", "Y_h"], hidden_size=H, direction=direction)
    graph = helper.make_graph(
        [node], "rnn",
        [helper.make_tensor_value_info(n, elem[feeds[n].dtype], feeds[n].shape) for n in inputs],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (T, D, B, H)),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, (D, B, H))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_sequence_lens_and_direction_equal_onnxruntime(op, direction, backend):
    rng = np.random.default_rng(3)
    D, G = (2 if direction == "bidirectional" else 1), (4 if op == "LSTM" else 3)
    feeds = {
        "X": rng.normal(size=(T, B, I)),
        "W": rng.uniform(-0.5, 0.5, (D, G * H, I)),
        "R": rng.uniform(-0.5, 0.5, (D, G * H, H)),
        "B": rng.uniform(-0.5, 0.5, (D, 2 * G * H)),
        "initial_h": rng.uniform(-0.8, 0.8, (D, B, H)),
    }
    if op == "LSTM":
        feeds["initial_c"] = rng.uniform(-0.8, 0.8, (D, B, H))
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    feeds["sequence_lens"] = np.array(LENGTHS, np.int32)
    Y, Y_h = _onnx_run(op, direction, feeds)
    convert = interop.from_onnx_lstm if op == "LSTM" else interop.from_onnx_gru
    converted = convert(feeds["W"], feeds["R"], feeds["B"], direction=direction)
    assert converted.direction == direction
    states = ("h", "c") if op == "LSTM" else ("h",)
    state0 = {s: feeds[f"initial_{s}"] for s in states}
    dtype = "float32" if codegen.backends.get(backend).default_dtype else None
    if direction == "reverse":
        k = codegen.load(converted.cell, backend, dtype=dtype)
        one = {s: v[0] for s, v in state0.items()}
        ys, final, _ = k.forward(feeds["X"], one, converted.params, LENGTHS, reverse=True)
        ys, final_h = ys[:, None], final["h"][None]
    else:
        rnn = codegen.RNN(converted.cell, I, H, bidirectional=True, backend=backend, dtype=dtype)
        ys, final, _ = rnn.forward(feeds["X"], state0, converted.params, LENGTHS)
        ys, final_h = ys.reshape(T, B, 2, H).transpose(0, 2, 1, 3), final["h"]
    assert rel_err(ys, Y) <= 1e-5 and rel_err(final_h, Y_h) <= 1e-5
    past = np.arange(T)[:, None] >= np.array(LENGTHS)[None, :]  # (T, B)
    assert np.all(ys.transpose(0, 2, 1, 3)[past] == 0)


def test_from_onnx_model_reads_the_direction():
    rng = np.random.default_rng(4)
    W, R = rng.normal(size=(2, 3 * H, I)), rng.normal(size=(2, 3 * H, H))
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=H, direction="bidirectional")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, (T, B, I))],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, (T, 2, B, H))],
        initializer=[onnx.numpy_helper.from_array(W, "W"), onnx.numpy_helper.from_array(R, "R")],
    )  # fmt: skip
    converted = interop.from_onnx_model(helper.make_model(graph))
    assert converted.direction == "bidirectional"
    cell, params = converted  # unpacks as before: the direction is an attribute
    assert cell == "gru" and np.array_equal(params["l0_reverse.U_r"], R[1, H : 2 * H])


def test_the_readme_trains_a_bidirectional_lstm_on_a_padded_batch(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```python\n", readme.index("This trains a 2-layer bidirectional"))
    code = readme[start + len("```python\n") : readme.index("```", start + 3)]
    exec(compile(code, "README.md", "exec"), {})
    losses = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines()]
    assert len(losses) >= 3 and losses[-1] < 0.5 * losses[0]
