"""Train any cell in PyTorch through cellgen's generated kernels: `codegen.torch.RNN`.

    rnn = codegen.torch.RNN("mut3.py", input_size=8, hidden_size=32, num_layers=2)
    ys, final = rnn(x, lengths=lengths)  # x (T, B, I) or a PackedSequence; ys (T, B, D H)
    loss(ys).backward()  # through the generated backward, not a loop of small autograd ops

One `torch.autograd.Function` runs the whole stack's forward and backward (codegen.RNN over the
generated NumPy or C kernels, on CPU tensors shared with NumPy where the layout allows). torch is
imported only here, so `import codegen` does not need it (pip install "cellgen[torch]").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .errors import CellgenError
from .rnn import RNN as _RNN

_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


class RNN(torch.nn.Module):
    """codegen.RNN as a torch module: stacked layers of one cell, one or two directions, per-row
    lengths, whose forward and backward run cellgen's kernels.

    Parameters are registered as `l{k}_<name>` and `l{k}_reverse_<name>` (torch names cannot hold
    a dot) and initialised as torch initialises its RNNs, uniform in ±1/√H; `cellgen_params()`
    maps codegen.RNN's names (`l0.W_f`, `l0_reverse.W_f`, ...) to them. The module follows
    `.double()` and `.to(dtype)`: the kernels are loaded for the parameters' dtype when first used.
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
        **sizes: int,
    ) -> None:
        """`sizes`: the cell's declared sizes by name, e.g. P=8 for lstmp."""
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype}: codegen.torch.RNN runs float32 or float64")
        self.cell, self.backend = cell, backend
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bidirectional = int(num_layers), bool(bidirectional)
        self.sizes = dict(sizes)
        self._stacks: dict[str, Any] = {}
        reference = self.stack(dtype)  # checks the sizes and the cell
        self.states: tuple[str, ...] = reference.states
        self._shapes = reference.param_shapes()
        bound = 1 / math.sqrt(self.hidden_size)
        for name, shape in self._shapes.items():
            value = torch.empty(shape, dtype=dtype).uniform_(-bound, bound)
            self.register_parameter(name.replace(".", "_"), torch.nn.Parameter(value))

    def stack(self, dtype: torch.dtype):
        """The codegen.RNN behind this module, for one dtype (loaded once)."""
        name = _DTYPES[dtype]
        if name not in self._stacks:
            self._stacks[name] = _RNN(
                self.cell, self.input_size, self.hidden_size, self.num_layers,
                self.bidirectional, backend=self.backend, dtype=name, **self.sizes,
            )  # fmt: skip
        return self._stacks[name]

    def cellgen_params(self) -> dict[str, torch.nn.Parameter]:
        """The module's own parameters under codegen.RNN's names: {"l0.W_f": Parameter, ...}."""
        return {name: getattr(self, name.replace(".", "_")) for name in self._shapes}

    def load_cellgen_params(self, params: dict[str, Any]) -> None:
        """Copy values in, by codegen.RNN's names (arrays or tensors of the right shapes)."""
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

    def forward(
        self,
        x: torch.Tensor | PackedSequence,
        state0: dict[str, torch.Tensor] | None = None,
        lengths: Any = None,
    ) -> tuple[torch.Tensor | PackedSequence, dict[str, torch.Tensor]]:
        """x (T, B, I), or a PackedSequence -> ys (T, B, D H), or a PackedSequence like torch's
        RNNs return, and the final states, each (L D, B, H) in torch's h_n order. Row b runs its
        first lengths[b] steps (a PackedSequence brings its own)."""
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence brings its own; pass one or the other")
            x, lengths = pad_packed_sequence(x)
        params = self.cellgen_params()
        dtype = next(iter(params.values())).dtype
        _check_tensor("x", x, dtype, 3)
        B = x.shape[1]
        stack = self.stack(dtype)
        units = self.num_layers * (2 if self.bidirectional else 1)
        shapes = {
            s: (units, *v)
            for s, v in stack.kernel.state_shapes(B, self.hidden_size, **self.sizes).items()
        }
        if state0 is None:
            state0 = {s: x.new_zeros(shapes[s]) for s in self.states}
        for s in self.states:
            if s not in state0:
                raise ValueError(
                    f"state0: missing state '{s}' of shape (L*D, B, "
                    f"{dict(stack.kernel.spec.symbol_sizes)[s]}) = {shapes[s]}"
                )
            _check_tensor(f"state0['{s}']", state0[s], dtype, 3)
        if isinstance(lengths, torch.Tensor):
            lengths = lengths.cpu().numpy()
        states = [state0[s] for s in self.states]
        ys, *final = _Stack.apply(stack, lengths, x, *states, *params.values())
        if packed:
            ys = pack_padded_sequence(ys, torch.as_tensor(lengths), enforce_sorted=False)
        return ys, dict(zip(self.states, final, strict=True))


class _Stack(torch.autograd.Function):
    """A whole stack's forward and backward through codegen.RNN."""

    @staticmethod
    def forward(ctx, stack, lengths, x, *tensors):
        n = len(stack.states)
        state0 = {s: _array(t) for s, t in zip(stack.states, tensors[:n], strict=True)}
        names = list(stack.param_shapes())
        params = {p: _array(t) for p, t in zip(names, tensors[n:], strict=True)}
        ys, final, cache = stack.forward(_array(x), state0, params, lengths)
        ctx.stack, ctx.cache, ctx.names = stack, cache, names
        return (torch.from_numpy(ys), *(torch.from_numpy(final[s]) for s in stack.states))

    @staticmethod
    def backward(ctx, dys, *dfinal):
        stack = ctx.stack
        given = {s: _array(d) for s, d in zip(stack.states, dfinal, strict=True) if d is not None}
        dxs, dstate0, dparams = stack.backward(_array(dys), ctx.cache, given)
        grads = [torch.from_numpy(dxs)]
        grads += [torch.from_numpy(dstate0[s]) for s in stack.states]
        grads += [torch.from_numpy(dparams[p]) for p in ctx.names]
        return (None, None, *grads)


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
