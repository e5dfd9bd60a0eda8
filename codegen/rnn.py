"""codegen.RNN: stacked layers of one cell, one or two directions, as torch.nn.LSTM/GRU stack
them, forward and backward, built on one cell's kernels with per-row lengths.

Layer k > 0 takes the outputs of layer k - 1 (both directions side by side) as its input. The
reverse direction runs each row from its last valid step backwards (torch's and ONNX's reverse
direction), so the two directions' outputs at step t both belong to input t. There is no
dropout between layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .load import CellKernel, load

Arrays = dict[str, np.ndarray]


class RNN:
    """`num_layers` layers of `cell`, each with a forward and, if bidirectional, a reverse
    direction; parameters named like torch's (`l0.W_f`, `l0_reverse.W_f`, `l1.W_f`, ...)."""

    def __init__(
        self,
        cell: str | Path,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        backend: str = "numpy",
        dtype: str | None = None,
        **sizes: int,
    ) -> None:
        """`sizes`: the cell's declared sizes by name (k.sizes), e.g. P=8 for lstmp."""
        for name, value, least in (
            ("input_size", input_size, 1),
            ("hidden_size", hidden_size, 1),
            ("num_layers", num_layers, 1),
        ):
            if int(value) != value or value < least:
                raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
        self.kernel: CellKernel = load(cell, backend=backend, dtype=dtype)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bidirectional = int(num_layers), bool(bidirectional)
        self.directions = 2 if bidirectional else 1
        self.states = self.kernel.states
        self.sizes = {n: int(v) for n, v in sizes.items()}
        self.output_size = self.kernel.output_size(self.hidden_size, **self.sizes)  # checks them
        if self.kernel.spec.input_hidden:  # I = H: every layer's input is hidden-sized
            for layer, size in enumerate((self.input_size, self.directions * self.output_size)):
                if size != self.hidden_size and (layer == 0 or self.num_layers > 1):
                    raise ValueError(
                        f"{self.kernel.name} uses its input elementwise (I = H): layer "
                        f"{layer}'s input size {size} must equal hidden_size {self.hidden_size}"
                    )

    def __repr__(self) -> str:
        named = "".join(f" {n}={v}" for n, v in self.sizes.items())
        return (
            f"<cellgen RNN {self.kernel.name} I={self.input_size} H={self.hidden_size}{named} "
            f"layers={self.num_layers} bidirectional={self.bidirectional} "
            f"backend={self.kernel.backend}>"
        )

    def prefix(self, layer: int, direction: int) -> str:
        """The parameter-name prefix of one layer and direction: l0, l0_reverse, ..."""
        return f"l{layer}" + ("_reverse" if direction else "")

    def _units(self) -> list[tuple[int, int, str, int]]:
        """(layer, direction, prefix, index into the (L*D, B, H) states), in torch's order."""
        return [
            (layer, d, self.prefix(layer, d), layer * self.directions + d)
            for layer in range(self.num_layers)
            for d in range(self.directions)
        ]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape: layer 0 reads the input, later layers D * the output's
        size (H, or the size the cell gives its output)."""
        out = {}
        for layer, _, prefix, _ in self._units():
            size = self.input_size if layer == 0 else self.directions * self.output_size
            shapes = self.kernel.param_shapes(size, self.hidden_size, **self.sizes)
            for name, shape in shapes.items():
                out[f"{prefix}.{name}"] = shape
        return out

    def _layer_params(self, params: Arrays, prefix: str) -> Arrays:
        return {p: params[f"{prefix}.{p}"] for p in self.kernel.params}

    def _check_params(self, params: Any) -> None:
        if not isinstance(params, dict):
            raise ValueError("params: expected a dict named as param_shapes() names them")
        shapes = self.param_shapes()
        missing = [p for p in shapes if p not in params]
        unknown = sorted(set(params) - set(shapes))
        if missing or unknown:
            problem = f"missing '{missing[0]}'" if missing else f"unknown '{unknown[0]}'"
            raise ValueError(f"params: {problem}; see RNN.param_shapes()")

    def _states(self, given: Arrays | None, what: str, B: int, dtype) -> Arrays:
        """States as (L*D, B, size) arrays, zeros where not given."""
        units = self.num_layers * self.directions
        sized = self.kernel.state_shapes(B, self.hidden_size, **self.sizes)
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.states))
        if unknown:
            raise ValueError(f"{what}: unknown state '{unknown[0]}'; states are {self.states}")
        out = {}
        for s in self.states:
            shape = (units, *sized[s])
            value = np.asarray(given[s], dtype) if s in given else np.zeros(shape, dtype)
            if value.shape != shape:
                size = dict(self.kernel.spec.symbol_sizes)[s]
                raise ValueError(
                    f"{what}['{s}']: expected shape (L*D, B, {size}) = {shape}, got {value.shape}"
                )
            out[s] = np.ascontiguousarray(value)
        return out

    def forward(
        self,
        xs: np.ndarray,
        state0: Arrays | None = None,
        params: Arrays | None = None,
        lengths: Any = None,
    ) -> tuple[np.ndarray, Arrays, dict[str, Any]]:
        """ys (T, B, D*H), the directions side by side; final {state: (L*D, B, H)} in torch's
        h_n order (layer-major, direction-minor); and the cache for backward. Row b runs its
        first lengths[b] steps; past them its ys are zero."""
        self._check_params(params)
        xs = np.asarray(xs)
        if xs.ndim != 3 or xs.shape[2] != self.input_size:
            raise ValueError(
                f"xs: expected shape (T, B, I) with I = {self.input_size}, got {xs.shape}"
            )
        dtype = np.asarray(params[f"{self.prefix(0, 0)}.{self.kernel.params[0]}"]).dtype
        state0 = self._states(state0, "state0", xs.shape[1], dtype)
        final = {s: np.empty_like(v) for s, v in state0.items()}
        caches: list[dict] = []
        inputs = xs
        for layer in range(self.num_layers):
            outputs = []
            for _, d, prefix, k in [u for u in self._units() if u[0] == layer]:
                s0 = {s: state0[s][k] for s in self.states}
                p = self._layer_params(params, prefix)
                ys, fin, cache = self.kernel.forward(inputs, s0, p, lengths, reverse=bool(d))
                for s in self.states:
                    final[s][k] = fin[s]
                outputs.append(ys)
                caches.append(cache)
            inputs = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=2)
        return inputs, final, {"rnn": self, "caches": caches, "ys": inputs}

    def backward(
        self, dys: np.ndarray, cache: dict[str, Any], dfinal: Arrays | None = None
    ) -> tuple[np.ndarray, Arrays, Arrays]:
        """dL/dxs, dL/dstate0 ({state: (L*D, B, H)}) and dL/dparams from dL/dys (T, B, D*H)
        and, optionally, dL/dfinal like forward's final (a missing state counts as zero)."""
        if not isinstance(cache, dict) or cache.get("rnn") is not self:
            raise ValueError("cache: pass the cache of this RNN's forward")
        ys = cache["ys"]
        dys = np.asarray(dys, ys.dtype)
        if dys.shape != ys.shape:
            raise ValueError(f"dys: expected shape (T, B, D*H) = {ys.shape}, got {dys.shape}")
        dfinal = self._states(dfinal, "dfinal", ys.shape[1], ys.dtype)
        dstate0 = {s: np.empty_like(v) for s, v in dfinal.items()}
        dparams: Arrays = {}
        Y = self.output_size
        units = self._units()
        d_outputs = dys
        for layer in reversed(range(self.num_layers)):
            d_inputs = None
            for _, d, prefix, k in [u for u in units if u[0] == layer]:
                d_ys = np.ascontiguousarray(d_outputs[:, :, d * Y : (d + 1) * Y])
                d_fin = {s: dfinal[s][k] for s in self.states}
                dxs, ds0, dp = self.kernel.backward(d_ys, cache["caches"][k], d_fin)
                d_inputs = dxs if d_inputs is None else d_inputs + dxs
                for s in self.states:
                    dstate0[s][k] = ds0[s]
                dparams.update({f"{prefix}.{p}": v for p, v in dp.items()})
            d_outputs = d_inputs
        order = self.param_shapes()
        return d_outputs, dstate0, {p: dparams[p] for p in order}
