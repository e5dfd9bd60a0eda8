"""A torch recurrent stack (nn.LSTM / nn.GRU of any depth, an LSTM with proj_size as lstmp
layers, LSTMCell / GRUCell, optionally followed by one nn.Linear) as an export Model, with torch
itself as the reference."""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np

from .. import interop
from ..interop import InteropError
from .model import Dense, Layer, Model, checked


def is_torch_model(model: Any) -> bool:
    """True for a torch module, or a list or tuple of them (torch is imported already if so)."""
    torch = sys.modules.get("torch")
    items = model if isinstance(model, (list, tuple)) else [model]
    return torch is not None and bool(items) and all(isinstance(m, torch.nn.Module) for m in items)


def from_torch(model: Any, dtype: str) -> Model:
    """The model's layers with weights rounded to `dtype` (held in float64), and a reference
    that runs a float64 copy of the torch modules holding those rounded weights."""
    import torch

    items = list(model) if isinstance(model, (list, tuple)) else [model]
    for k, m in enumerate(items):
        if not isinstance(m, torch.nn.Module):
            raise InteropError(f"model[{k}] is a {type(m).__name__}, not a torch module")
    head = items[-1] if isinstance(items[-1], torch.nn.Linear) else None
    recurrent = items[:-1] if head is not None else items
    # weights rounded to the export dtype, then float64: the biases' sums are then exact
    modules = [
        copy.deepcopy(m).cpu().to(getattr(torch, dtype)).to(torch.float64).eval() for m in items
    ]
    layers: list[Layer] = []
    for k, m in enumerate(modules[: len(recurrent)]):
        try:
            converted = interop.from_torch_layers(m)
        except InteropError as err:
            where = f"model[{k}]: " if isinstance(model, (list, tuple)) else ""
            raise InteropError(
                f"{where}{err}; export takes recurrent layers and one final torch.nn.Linear"
            ) from None
        layers += [Layer(c.cell, c.params) for c in converted]
    dense = None
    if head is not None:
        linear = modules[-1]
        weight = linear.weight.detach().numpy().copy()
        bias = (
            linear.bias.detach().numpy().copy()
            if linear.bias is not None
            else np.zeros(weight.shape[0])
        )
        dense = Dense(weight, bias)
    source = " + ".join(_describe(m) for m in items)

    def reference(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            h = torch.from_numpy(np.asarray(xs, np.float64))
            for m in modules:
                h = _apply(m, h)
            return h.numpy().copy()

    return checked(Model(tuple(layers), dense, source, f"torch {torch.__version__}", reference))


def _apply(module: Any, h: Any) -> Any:
    """One module on a (T, features) sequence of batch 1, from the zero state."""
    import torch

    if isinstance(module, torch.nn.RNNBase):
        axis = 0 if module.batch_first else 1
        return module(h.unsqueeze(axis))[0].squeeze(axis)
    if isinstance(module, (torch.nn.LSTMCell, torch.nn.GRUCell)):
        state, outputs = None, []
        for t in range(h.shape[0]):
            state = module(h[t : t + 1], state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
        return torch.cat(outputs)
    return module(h)


def _describe(module: Any) -> str:
    """torch.nn.LSTM(3, 5, num_layers=2, batch_first=True) and the like, in one line."""
    return "torch.nn." + " ".join(repr(module).split())
