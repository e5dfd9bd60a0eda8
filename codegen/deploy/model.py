"""A trained model as export sees it: recurrent layers (cellgen cells), an optional dense head,
and the framework's own function of it, for the golden outputs of the generated test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..interop import InteropError

# xs (T, I) float64 -> ys (T, O) float64: the framework's computation, batch 1, zero state
Reference = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Layer:
    """One recurrent layer: a cellgen cell and its parameters (float64 holding the values the
    export dtype can represent)."""

    cell: str
    params: dict[str, np.ndarray]

    @property
    def input_size(self) -> int:
        return int(next(p for n, p in self.params.items() if n.startswith("W_")).shape[1])

    @property
    def hidden_size(self) -> int:
        return int(next(p for n, p in self.params.items() if n.startswith("U_")).shape[0])


@dataclass(frozen=True)
class Dense:
    """y = weight @ h + bias: weight (O, H), bias (O,)."""

    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class Model:
    """What export writes: layers bottom first, then the dense head if any."""

    layers: tuple[Layer, ...]
    dense: Dense | None
    source: str  # one line saying what the model was made from
    framework: str  # what computes `reference`, for the generated test's comments
    reference: Reference

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return int(self.dense.weight.shape[0]) if self.dense else self.layers[-1].hidden_size


def checked(model: Model) -> Model:
    """The model, after checking that each layer's input is the size of the one below."""
    if not model.layers:
        raise InteropError(f"{model.source}: no recurrent layer; export needs at least one")
    for k in range(1, len(model.layers)):
        below, layer = model.layers[k - 1], model.layers[k]
        if layer.input_size != below.hidden_size:
            raise InteropError(
                f"layer {k} ({layer.cell}) takes inputs of size {layer.input_size}, but layer "
                f"{k - 1} gives {below.hidden_size}: the layers do not form a chain"
            )
    if model.dense is not None:
        O, H = model.dense.weight.shape
        if model.layers[-1].hidden_size != H or model.dense.bias.shape != (O,):
            raise InteropError(
                f"the dense layer takes {H} inputs with a bias of shape "
                f"{model.dense.bias.shape}; the last recurrent layer gives "
                f"{model.layers[-1].hidden_size}"
            )
    for k, layer in enumerate(model.layers):
        for name, value in layer.params.items():
            if not np.all(np.isfinite(value)):
                raise InteropError(f"layer {k} ({layer.cell}): {name} holds inf or NaN")
    if model.dense is not None and not (
        np.all(np.isfinite(model.dense.weight)) and np.all(np.isfinite(model.dense.bias))
    ):
        raise InteropError("the dense layer's weights hold inf or NaN")
    return model


def rounded(array: np.ndarray, dtype: str) -> np.ndarray:
    """The array's values in the export dtype, held as float64 (exact)."""
    return np.asarray(array).astype(dtype).astype(np.float64)
