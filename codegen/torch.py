"""Train any cell in PyTorch through cellgen's generated kernels: `codegen.torch.RNN`.

    rnn = codegen.torch.RNN("mut3.py", input_size=8, hidden_size=32, num_layers=2)
    ys, final = rnn(x)  # x (T, B, I); ys (T, B, H); final {state: (L, B, H)}
    loss(ys).backward()  # through the generated backward, not a loop of small autograd ops

One `torch.autograd.Function` runs a whole layer's forward and backward (the generated NumPy or
C kernels, over CPU tensors shared with NumPy where the layout allows). torch is imported only
here, so `import codegen` does not need it (pip install "cellgen[torch]").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CellgenError
from .load import load as _load

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


class RNN(torch.nn.Module):
    """A stack of layers of one cell, as a torch module whose passes run cellgen's kernels.

    Parameters are registered per layer as `l{k}_<name>` (torch names cannot hold a dot) and
    initialised as torch initialises its RNNs, uniform in ±1/√H; `cellgen_params()` maps the
    cellgen names (`l0.W_f`, ...) to them. The module follows `.double()` and `.to(dtype)`:
    the kernels are loaded for the parameters' dtype when first used.
    """

    def __init__(
        self,
        cell: str | Path | Any,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        backend: str = "c",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype}: codegen.torch.RNN runs float32 or float64")
        if bidirectional:
            raise ValueError("bidirectional=True needs the sequence kernels (not yet available)")
        if int(num_layers) < 1:
            raise ValueError(f"num_layers: expected at least 1, got {num_layers}")
        self.cell, self.backend = cell, backend
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers = int(num_layers)
        self._kernels: dict[str, Any] = {}
        reference = _load(cell, backend="numpy")
        self.states: tuple[str, ...] = reference.states
        self.cell_name = reference.name
        bound = 1 / math.sqrt(self.hidden_size)
        for layer in range(self.num_layers):
            size = self.input_size if layer == 0 else self.hidden_size
            for name, shape in reference.param_shapes(size, self.hidden_size).items():
                value = torch.empty(shape, dtype=dtype).uniform_(-bound, bound)
                self.register_parameter(f"l{layer}_{name}", torch.nn.Parameter(value))
        self._names = reference.params

    def cellgen_params(self) -> dict[str, torch.nn.Parameter]:
        """The module's own parameters under cellgen's names: {"l0.W_f": Parameter, ...}."""
        return {
            f"l{layer}.{name}": getattr(self, f"l{layer}_{name}")
            for layer in range(self.num_layers)
            for name in self._names
        }

    def load_cellgen_params(self, params: dict[str, Any]) -> None:
        """Copy values in, by cellgen name (arrays or tensors of the parameters' shapes)."""
        own = self.cellgen_params()
        unknown = sorted(set(params) - set(own))
        if unknown:
            raise ValueError(f"params: unknown parameter '{unknown[0]}'; expected {list(own)}")
        with torch.no_grad():
            for name, value in params.items():
                target = own[name]
                value = torch.as_tensor(np.asarray(value), dtype=target.dtype)
                if value.shape != target.shape:
                    raise ValueError(
                        f"params['{name}']: expected shape {tuple(target.shape)}, "
                        f"got {tuple(value.shape)}"
                    )
                target.copy_(value)

    def kernel(self, dtype: torch.dtype):
        """The cell's kernels on this module's backend, for one dtype (loaded once)."""
        name = _DTYPES[dtype]
        if name not in self._kernels:
            self._kernels[name] = _load(self.cell, backend=self.backend, dtype=name)
        return self._kernels[name]

    def forward(
        self, x: torch.Tensor, state0: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (T, B, I) -> ys (T, B, H) and the final states, each (L, B, H)."""
        params = self.cellgen_params()
        dtype = next(iter(params.values())).dtype
        _check_tensor("x", x, dtype, 3)
        B = x.shape[1]
        L, H = self.num_layers, self.hidden_size
        if state0 is None:
            state0 = {s: x.new_zeros((L, B, H)) for s in self.states}
        for s in self.states:
            if s not in state0:
                raise ValueError(f"state0: missing state '{s}' of shape (L, B, H) = {(L, B, H)}")
            _check_tensor(f"state0['{s}']", state0[s], dtype, 3)
        kernel = self.kernel(dtype)
        finals: dict[str, list[torch.Tensor]] = {s: [] for s in self.states}
        ys = x
        for layer in range(L):
            weights = [params[f"l{layer}.{n}"] for n in self._names]
            states = [state0[s][layer] for s in self.states]
            ys, *final = _Layer.apply(kernel, ys, *states, *weights)
            for s, value in zip(self.states, final, strict=True):
                finals[s].append(value)
        return ys, {s: torch.stack(v) for s, v in finals.items()}


class _Layer(torch.autograd.Function):
    """One layer's forward and backward through a cellgen kernel."""

    @staticmethod
    def forward(ctx, kernel, x, *tensors):
        n = len(kernel.states)
        state0 = {s: _array(t) for s, t in zip(kernel.states, tensors[:n], strict=True)}
        params = {p: _array(t) for p, t in zip(kernel.params, tensors[n:], strict=True)}
        ys, final, cache = kernel.forward(_array(x), state0, params)
        ctx.kernel, ctx.cache = kernel, cache
        return (torch.from_numpy(ys), *(torch.from_numpy(final[s]) for s in kernel.states))

    @staticmethod
    def backward(ctx, dys, *dfinal):
        kernel = ctx.kernel
        given = {s: _array(d) for s, d in zip(kernel.states, dfinal, strict=True) if d is not None}
        dxs, dstate0, dparams = kernel.backward(_array(dys), ctx.cache, given)
        grads = [torch.from_numpy(dxs)]
        grads += [torch.from_numpy(dstate0[s]) for s in kernel.states]
        grads += [torch.from_numpy(dparams[p]) for p in kernel.params]
        return (None, *grads)


def _array(t: torch.Tensor) -> np.ndarray:
    """A tensor's data as a C-contiguous NumPy array, shared with the tensor where it can be."""
    return np.ascontiguousarray(t.detach().numpy())


def _check_tensor(name: str, t: Any, dtype: torch.dtype, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise CellgenError(
            f"{name}: a {t.device.type} tensor; cellgen's kernels run on the CPU "
            f"(move it with .cpu(), or use torch's own RNNs on {t.device.type})"
        )
    if t.dtype != dtype:
        raise ValueError(f"{name}: dtype {t.dtype} does not match the parameters' {dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
