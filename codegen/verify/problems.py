"""Test points for the gradient checks: random inputs and loss weights, random directions.

`cellgen bench` times the kernels on the same problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..load import CellKernel

ENTRY_SIZES = {"T": 3, "B": 2, "I": 4, "H": 3}
PROJECTION_SIZES = {"T": 5, "B": 3, "I": 7, "H": 9}
PROJECTIONS = 3  # random directions per tensor

Run = tuple[Any, bool]  # a forward pass: (lengths or None, reverse)
PLAIN: tuple[Run, ...] = ((None, False),)


def sequence_runs(T: int, B: int) -> tuple[Run, ...]:
    """The passes every check weighs: unequal lengths (the first row all T steps, the others
    fewer, down to one), forwards and reversed, so that masking and direction are verified
    with every gradient."""
    lengths = np.maximum(T - np.arange(B), 1)
    lengths[-1] = min(lengths[-1], max(1, T // 2))
    return ((lengths, False), (lengths, True))


@dataclass
class Problem:
    """A test point: inputs, and the loss weights dys and dfinal."""

    xs: np.ndarray
    state0: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    dys: np.ndarray
    dfinal: dict[str, np.ndarray]
    # the loss is the sum over these forward passes of <dys, ys> + <dfinal, final>
    runs: tuple[Run, ...] = PLAIN

    def tensors(self) -> dict[str, np.ndarray]:
        """Every differentiable input, by the name a report uses."""
        out = {"xs": self.xs}
        out.update({f"state0[{s}]": v for s, v in self.state0.items()})
        out.update(self.params)
        return out

    def inputs(
        self, changed: dict[str, np.ndarray] | None = None, dtype: Any = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(xs, state0, params) for forward, with some tensors replaced, all in one dtype."""
        tensors = {**self.tensors(), **(changed or {})}
        dtype = dtype or self.xs.dtype
        cast = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in tensors.items()}
        state0 = {s: cast[f"state0[{s}]"] for s in self.state0}
        return cast["xs"], state0, {p: cast[p] for p in self.params}

    def astype(self, dtype: Any) -> Problem:
        def conv(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=dtype)

        return Problem(
            conv(self.xs),
            {k: conv(v) for k, v in self.state0.items()},
            {k: conv(v) for k, v in self.params.items()},
            conv(self.dys),
            {k: conv(v) for k, v in self.dfinal.items()},
            self.runs,
        )

    def forward(self, kernel: Any, inputs: tuple, run: Run) -> tuple:
        """kernel.forward on `inputs` for one of the runs (plain ones without lengths, so that
        any kernel works)."""
        lengths, reverse = run
        if lengths is None and not reverse:
            return kernel.forward(*inputs)
        return kernel.forward(*inputs, lengths=lengths, reverse=reverse)


def random_problem(
    kernel: CellKernel,
    seed: int,
    sizes: dict[str, int] = ENTRY_SIZES,
    runs: tuple[Run, ...] = PLAIN,
) -> Problem:
    """Random inputs at a moderate scale, where smooth gates are away from saturation."""
    rng = np.random.default_rng(seed)
    T, B, I, H = sizes["T"], sizes["B"], sizes["I"], sizes["H"]
    I = H if kernel.spec.input_hidden else I  # the input used elementwise
    declared = declared_sizes(kernel, H)
    params = {
        name: rng.uniform(-1, 1, shape) / np.sqrt(H)
        for name, shape in kernel.param_shapes(I, H, **declared).items()
    }
    states = kernel.state_shapes(B, H, **declared)
    return Problem(
        xs=rng.normal(size=(T, B, I)),
        state0={s: rng.uniform(-0.8, 0.8, shape) for s, shape in states.items()},
        params=params,
        dys=rng.normal(size=(T, B, kernel.output_size(H, **declared))),
        dfinal={s: rng.normal(size=shape) for s, shape in states.items()},
        runs=runs,
    )


def declared_sizes(kernel: CellKernel, H: int) -> dict[str, int]:
    """A value for each size the cell declares besides I and H: H // 2 + 1, another size than
    H, so that a kernel that mixed them up would fail."""
    return {name: H // 2 + 1 for name in kernel.sizes}


def entry_problem(kernel: CellKernel, seed: int) -> Problem:
    """verify's point for the entrywise checks: unequal lengths, both directions."""
    runs = sequence_runs(ENTRY_SIZES["T"], ENTRY_SIZES["B"])
    return random_problem(kernel, seed, ENTRY_SIZES, runs)


def projection_problem(kernel: CellKernel, seed: int) -> Problem:
    """verify's point for the random projections: the plain pass and a reversed one with
    unequal lengths."""
    runs = PLAIN + sequence_runs(PROJECTION_SIZES["T"], PROJECTION_SIZES["B"])[1:]
    return random_problem(kernel, seed, PROJECTION_SIZES, runs)


def analytic_gradients(kernel: CellKernel, p: Problem) -> dict[str, np.ndarray]:
    """backward(dys, dfinal) at p, by tensor name, summed over p's runs."""
    dtype = p.xs.dtype
    dfinal = {s: np.asarray(v, dtype) for s, v in p.dfinal.items()}
    total: dict[str, np.ndarray] = {}
    for run in p.runs:
        _, _, cache = p.forward(kernel, p.inputs(), run)
        dxs, dstate0, dparams = kernel.backward(np.asarray(p.dys, dtype), cache, dfinal)
        out = {"xs": dxs}
        out.update({f"state0[{s}]": v for s, v in dstate0.items()})
        out.update(dparams)
        total = {k: total[k] + v for k, v in out.items()} if total else out
    return total


def directions(shape: tuple[int, ...], seed: int, name: str, count: int) -> list[np.ndarray]:
    """`count` seeded random directions of unit length, different for each tensor name, so
    that a step t moves the point by t whatever the tensor's size."""
    salt = sum(ord(c) * 31**k for k, c in enumerate(name)) % 2**32
    rng = np.random.default_rng([seed, salt])
    vs = [rng.normal(size=shape) for _ in range(count)]
    return [v / np.linalg.norm(v) for v in vs]
