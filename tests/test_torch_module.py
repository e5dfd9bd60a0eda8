"""codegen.torch.RNN: torch's autograd through the generated kernels.

gradcheck in float64 for every built-in cell and a user's file, on every backend; the same
outputs, final states, gradients and SGD trajectory as torch.nn.LSTM / torch.nn.GRU; the
training example converges."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import codegen.torch as cgt
from codegen import interop
from codegen.bench_train import loop_cell, loop_forward
from codegen.errors import CellgenError
from codegen.registry import load_cell

from conftest import BACKENDS, CELLS

ROOT = Path(__file__).resolve().parents[1]
MUT3 = ROOT / "examples" / "mut3.py"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", [*CELLS, str(MUT3)])
def test_gradcheck_in_float64(cell, backend):
    """Two layers, both directions, unequal lengths (one row stops early)."""
    torch.manual_seed(0)
    spec = load_cell(cell)
    # sru's input is hidden-sized (I = H): one direction, so that layer 1 reads H numbers too
    I, two = (4, False) if spec.input_hidden else (3, True)
    sizes = {n: 3 for n in spec.sizes}  # lstmp's P
    rnn = cgt.RNN(cell, I, 4, num_layers=2, bidirectional=two, backend=backend,
                  dtype=torch.float64, **sizes)  # fmt: skip
    x = torch.randn(4, 2, I, dtype=torch.float64, requires_grad=True)
    shapes = rnn.stack(torch.float64).kernel.state_shapes(2, 4, **sizes)
    units = 4 if two else 2
    state0 = {
        s: torch.randn(units, *shapes[s], dtype=torch.float64, requires_grad=True)
        for s in rnn.states
    }
    lengths = np.array([4, 2])

    def run(x, *inputs):
        states = dict(zip(rnn.states, inputs, strict=True))
        ys, final = rnn(x, states, lengths=lengths)
        return (ys, *final.values())

    assert torch.autograd.gradcheck(run, (x, *state0.values()), eps=1e-6, atol=1e-8)
    # and the parameters, through the same function
    assert torch.autograd.gradcheck(
        lambda *p: rnn(x, lengths=lengths)[0], tuple(rnn.parameters()), eps=1e-6, atol=1e-8
    )


def test_the_module_matches_its_cell_written_as_a_torch_loop():
    """The same function as the equation file evaluated step by step with torch ops."""
    torch.manual_seed(1)
    rnn = cgt.RNN(MUT3, 3, 5, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    step = loop_cell(MUT3)
    params = {name.split(".", 1)[1]: p for name, p in rnn.cellgen_params().items()}
    expected, final = loop_forward(step, x, {"h": torch.zeros(2, 5, dtype=torch.float64)}, params)
    ys, got = rnn(x)
    assert torch.allclose(ys, expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(got["h"][0], final["h"], rtol=1e-12, atol=1e-14)


def _one_bias(module):
    """torch adds two biases where cellgen has one (b = b_ih + b_hh): SGD would move their sum
    twice as fast. Fold b_hh into b_ih and keep it at zero, except GRU's b_hn, which cellgen
    keeps apart too."""
    H = module.hidden_size
    kept = 2 * H if isinstance(module, torch.nn.GRU) else 0  # GRU: r, z folded; n kept
    with torch.no_grad():
        for name, b_hh in module.named_parameters():
            if not name.startswith("bias_hh"):
                continue
            b_ih = getattr(module, name.replace("bias_hh", "bias_ih"))
            cut = kept or b_hh.shape[0]
            b_ih[:cut] += b_hh[:cut]
            b_hh[:cut] = 0
            b_hh.register_hook(lambda g, cut=cut: torch.cat([g[:cut] * 0, g[cut:]]))
    return module


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "cell, layer, convert",
    [("lstm", torch.nn.LSTM, interop.from_torch_lstm), ("gru_reset_after", torch.nn.GRU,
     interop.from_torch_gru)],
)  # fmt: skip
def test_same_outputs_gradients_and_sgd_steps_as_torch(cell, layer, convert, backend):
    """Two layers, bidirectional, a packed batch of unequal lengths (1 and T among them)."""
    torch.manual_seed(2)
    I, H, L, T = 3, 5, 2, 7
    reference = _one_bias(layer(I, H, num_layers=L, bidirectional=True, dtype=torch.float64))
    rnn = cgt.RNN(cell, I, H, num_layers=L, bidirectional=True, backend=backend,
                  dtype=torch.float64)  # fmt: skip
    rnn.load_cellgen_params(convert(reference))
    lengths = torch.tensor([T, 1, 4])
    x = torch.randn(T, 3, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    target = torch.randn(T, 3, 2 * H, dtype=torch.float64)
    ours = torch.optim.SGD(rnn.parameters(), lr=0.1)
    theirs = torch.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(5):
        out, final = rnn(packed)
        out_ref, states_ref = reference(packed)
        ys, _ = pad_packed_sequence(out)
        ys_ref, _ = pad_packed_sequence(out_ref)
        h_ref = states_ref[0] if cell == "lstm" else states_ref
        assert torch.allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
        assert torch.allclose(final["h"], h_ref, rtol=1e-10, atol=1e-12)
        loss, loss_ref = ((ys - target) ** 2).mean(), ((ys_ref - target) ** 2).mean()
        assert abs(loss.item() - loss_ref.item()) <= 1e-10 * abs(loss_ref.item())
        for opt in (ours, theirs):
            opt.zero_grad()
        loss.backward()
        loss_ref.backward()
        if step == 0:  # every weight's gradient, mapped through interop's gate order
            grads = {n: p.grad.numpy() for n, p in rnn.cellgen_params().items()}
            expected = _gradients_of(reference, convert)
            assert expected and set(expected) <= set(grads)
            for name, g in expected.items():
                np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-12)
        ours.step()
        theirs.step()


def _gradients_of(module, convert) -> dict[str, np.ndarray]:
    """The torch module's weight gradients, named as cellgen's (matrices only: torch's two
    biases are one in cellgen)."""
    grads = type(module)(module.input_size, module.hidden_size, num_layers=module.num_layers,
                         bidirectional=module.bidirectional, dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        for (name, p), g in zip(module.named_parameters(), grads.parameters(), strict=True):
            g.copy_(p.grad if "weight" in name else torch.zeros_like(p))
    return {k: v for k, v in convert(grads).items() if ".b_" not in k}


def test_parameters_follow_torch_conventions():
    rnn = cgt.RNN("lstm", 3, 16)
    params = rnn.cellgen_params()
    names = ["W_f", "W_i", "W_c", "W_o", "U_f", "U_i", "U_c", "U_o", "b_f", "b_i", "b_c", "b_o"]
    assert set(params) == {f"l0.{n}" for n in names}
    assert all(p.abs().max() <= 0.25 for p in params.values())  # uniform ±1/√16
    assert set(rnn.state_dict()) == {n.replace(".", "_") for n in params}
    assert rnn.double().cellgen_params()["l0.W_f"].dtype == torch.float64
    ys, _ = rnn(torch.randn(2, 1, 3, dtype=torch.float64))
    assert ys.dtype == torch.float64


def test_errors_are_clear():
    rnn = cgt.RNN("gru", 3, 4)
    with pytest.raises(ValueError, match=r"dtype torch\.float64 does not match"):
        rnn(torch.randn(2, 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="runs float32 or float64"):
        cgt.RNN("gru", 3, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="state0: missing state 'h'"):
        rnn(torch.randn(2, 1, 3), {})
    with pytest.raises(ValueError, match=r"params\['l0.W_z'\]: expected shape \(4, 3\)"):
        rnn.load_cellgen_params({"l0.W_z": np.zeros((3, 3))})
    meta = torch.randn(2, 1, 3, device="meta")
    with pytest.raises(CellgenError, match="run on the CPU"):
        rnn(meta)


def test_importing_codegen_does_not_import_torch():
    code = "import sys, codegen, codegen.load; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_training_example_learns_the_adding_problem():
    spec = importlib.util.spec_from_file_location("train_mut3", ROOT / "examples" / "train_mut3.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.train(steps=300, length=20)
    last = sum(losses[-20:]) / 20
    # answering the mean target, 1, scores 1/6; an untrained model scores about that or worse
    assert losses[0] > 0.15 and last < 0.03, (losses[0], last)


def test_the_training_bench_times_every_implementation_on_each_problem():
    from codegen.bench import Shape
    from codegen.bench_train import run, table

    rows, meta = run(["gru_reset_after", str(MUT3)], [Shape(3, 2, 2, 4)], rounds=1,
                     min_time=0.0, settle=0.0)  # fmt: skip
    got = {(r.cell, r.impl) for r in rows}
    assert got == {("gru_reset_after", "cellgen-c"), ("gru_reset_after", "loop"),
                   ("gru_reset_after", "torch.nn"), (str(MUT3), "cellgen-c"),
                   (str(MUT3), "loop")}  # fmt: skip
    for r in rows:
        assert r.ms > 0 and r.shape == "T3,B2,I2,H4"
        assert (r.vs_loop is None) == (r.impl == "loop")
    assert "| gru_reset_after | T3,B2,I2,H4 | loop |" in table(rows) and meta["rounds"] == 1
