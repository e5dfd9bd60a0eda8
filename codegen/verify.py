"""Gradient verification: the backward kernels against finite differences of the forward.

The loss is L = <dys, ys> + sum over states of <dfinal[s], final[s]> with random dys and dfinal,
so backward(dys, dfinal) must return dL/d(every input). Each entry of each tensor (xs, every
initial state, every parameter) is checked against a central difference of L at a small size,
so a single wrong entry cannot hide behind an average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .load import CellKernel, load

# The central difference (L(x + h) - L(x - h)) / 2h has truncation error ~ h^2 |L'''| and
# rounding error ~ eps |L| / h; h = 1e-6 balances them near 1e-10 in float64.
STEP = 1e-6
TOLERANCE = 1e-6  # relative to the largest entry of the reference gradient
SIZES = {"T": 3, "B": 2, "I": 3, "H": 4}


@dataclass(frozen=True)
class Row:
    """The check of one gradient tensor."""

    cell: str
    backend: str
    tensor: str
    shape: tuple[int, ...]
    method: str
    max_abs: float
    max_rel: float
    tolerance: float
    verdict: str
    worst: tuple[int, ...]  # index of the largest error
    analytic: float  # the backward's value there
    reference: float  # the finite difference there

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    """A random test point: inputs, and the loss weights dys and dfinal."""

    xs: np.ndarray
    state0: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    dys: np.ndarray
    dfinal: dict[str, np.ndarray]

    def tensors(self) -> dict[str, np.ndarray]:
        """Every differentiable input, by the name a report uses."""
        out = {"xs": self.xs}
        out.update({f"state0[{s}]": v for s, v in self.state0.items()})
        out.update(self.params)
        return out


def random_problem(kernel: CellKernel, seed: int, sizes: dict[str, int] = SIZES) -> Problem:
    rng = np.random.default_rng(seed)
    T, B, I, H = sizes["T"], sizes["B"], sizes["I"], sizes["H"]
    params = {
        name: rng.uniform(-1, 1, shape) / np.sqrt(H)
        for name, shape in kernel.param_shapes(I, H).items()
    }
    return Problem(
        xs=rng.normal(size=(T, B, I)),
        state0={s: rng.uniform(-0.8, 0.8, (B, H)) for s in kernel.states},
        params=params,
        dys=rng.normal(size=(T, B, H)),
        dfinal={s: rng.normal(size=(B, H)) for s in kernel.states},
    )


def loss_function(kernel: CellKernel, p: Problem) -> Callable[[], float]:
    """L at the current values of p's arrays (which the checks perturb in place)."""

    def loss() -> float:
        ys, final, _ = kernel.forward(p.xs, p.state0, p.params)
        total = np.sum(p.dys * ys)
        for s in kernel.states:
            total += np.sum(p.dfinal[s] * final[s])
        return float(total)

    return loss


def analytic_gradients(kernel: CellKernel, p: Problem) -> dict[str, np.ndarray]:
    _, _, cache = kernel.forward(p.xs, p.state0, p.params)
    dxs, dstate0, dparams = kernel.backward(p.dys, cache, p.dfinal)
    out = {"xs": dxs}
    out.update({f"state0[{s}]": v for s, v in dstate0.items()})
    out.update(dparams)
    return out


def central_differences(array: np.ndarray, loss: Callable[[], float], step: float) -> np.ndarray:
    """dL/d(array), entry by entry."""
    grad = np.empty_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + step
        plus = loss()
        array[index] = original - step
        minus = loss()
        array[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def compare(
    cell: str,
    backend: str,
    tensor: str,
    analytic: np.ndarray,
    reference: np.ndarray,
    method: str,
    tolerance: float,
) -> Row:
    error = np.abs(analytic - reference)
    worst = np.unravel_index(int(np.argmax(error)), error.shape) if error.size else ()
    scale = max(float(np.max(np.abs(reference), initial=0.0)), 1e-300)
    max_abs = float(np.max(error, initial=0.0))
    max_rel = max_abs / scale
    finite = np.all(np.isfinite(analytic))
    return Row(
        cell=cell,
        backend=backend,
        tensor=tensor,
        shape=tuple(analytic.shape),
        method=method,
        max_abs=max_abs,
        max_rel=max_rel,
        tolerance=tolerance,
        verdict="PASS" if finite and max_rel <= tolerance else "FAIL",
        worst=tuple(int(k) for k in worst),
        analytic=float(analytic[worst]) if error.size else 0.0,
        reference=float(reference[worst]) if error.size else 0.0,
    )


def verify(cell: str, backend: str = "numpy", seed: int = 0) -> list[Row]:
    """Every gradient of one cell on one backend, in float64, against central differences."""
    kernel = load(cell, backend=backend, dtype="float64" if backend == "c" else None)
    problem = random_problem(kernel, seed)
    analytic = analytic_gradients(kernel, problem)
    loss = loss_function(kernel, problem)
    rows = []
    for name, array in problem.tensors().items():
        reference = central_differences(array, loss, STEP)
        rows.append(
            compare(kernel.name, backend, name, analytic[name], reference, "central", TOLERANCE)
        )
    return rows
