"""A trained model as export sees it: recurrent layers (cellgen cells), an optional dense head,
and the framework's own function of it, for the golden outputs of the generated test."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..cell import CellSpec
from ..interop import InteropError

# xs (T, I) float64 -> ys (T, O) float64: the framework's computation, batch 1, zero state
Reference = Callable[[np.ndarray], np.ndarray]


@functools.cache
def cell_spec(cell: str) -> CellSpec:
    """The equations of a built-in cell (what its sizes, states and output are)."""
    from ..registry import load_cell, resolve

    return load_cell(resolve(cell))


@dataclass(frozen=True)
class Layer:
    """One recurrent layer: a cellgen cell and its parameters (float64 holding the values the
    export dtype can represent). Its sizes come from the cell's spec and the parameters'
    shapes: a state or the output may be H or any size the cell declares (lstmp's P)."""

    cell: str
    params: dict[str, np.ndarray]

    @property
    def spec(self) -> CellSpec:
        return cell_spec(self.cell)

    @property
    def sizes(self) -> dict[str, int]:
        """I, H and the cell's declared sizes, in the order its C entry points take them."""
        spec, found = self.spec, {}
        for param in spec.params:
            for name, n in zip(param.shape, np.shape(self.params[param.name]), strict=True):
                found.setdefault(name, int(n))
        if spec.input_hidden:  # I = H: no parameter has I
            found.setdefault("I", found["H"])
        return {name: found[name] for name in spec.all_sizes}

    @property
    def extra_sizes(self) -> dict[str, int]:
        """The declared sizes besides I and H (lstmp's P), by name."""
        return {n: v for n, v in self.sizes.items() if n not in ("I", "H")}

    @property
    def input_size(self) -> int:
        return self.sizes["I"]

    @property
    def hidden_size(self) -> int:
        return self.sizes["H"]

    @property
    def state_sizes(self) -> dict[str, int]:
        """Each state's size (lstmp: h is P, c is H)."""
        sized, sizes = dict(self.spec.symbol_sizes), self.sizes
        return {s: sizes[sized[s]] for s in self.spec.states}

    @property
    def output(self) -> str:
        return self.spec.output

    @property
    def output_is_state(self) -> bool:
        """False for an output that is an equation (sru's h): it then needs its own buffer."""
        return self.spec.output in self.spec.states

    @property
    def output_size(self) -> int:
        """What the layer gives the next one: its output's size (P for lstmp, else mostly H)."""
        return self.sizes[dict(self.spec.symbol_sizes)[self.spec.output]]


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
        return int(self.dense.weight.shape[0]) if self.dense else self.layers[-1].output_size


def checked(model: Model) -> Model:
    """The model, after checking that each layer's input is the size of the one below."""
    if not model.layers:
        raise InteropError(f"{model.source}: no recurrent layer; export needs at least one")
    for k in range(1, len(model.layers)):
        below, layer = model.layers[k - 1], model.layers[k]
        if layer.input_size != below.output_size:
            raise InteropError(
                f"layer {k} ({layer.cell}) takes inputs of size {layer.input_size}, but layer "
                f"{k - 1} gives {below.output_size}: the layers do not form a chain"
            )
    if model.dense is not None:
        O, H = model.dense.weight.shape
        if model.layers[-1].output_size != H or model.dense.bias.shape != (O,):
            raise InteropError(
                f"the dense layer takes {H} inputs with a bias of shape "
                f"{model.dense.bias.shape}; the last recurrent layer gives "
                f"{model.layers[-1].output_size}"
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
