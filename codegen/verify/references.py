"""Numerical references: derivatives of the loss along a line, and kinks within a step.

The loss is L = <dys, ys> + sum over states of <dfinal[s], final[s]>; its derivative along a
direction comes from the complex step or from differences (numdiff), and where a piecewise
activation's kink lies within the step, from the smooth side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import numdiff
from .problems import Problem

if TYPE_CHECKING:
    from ..load import CellKernel


def is_complex_capable(kernel: CellKernel) -> bool:
    """Whether the kernel's forward runs complex128 inputs (its backend's complex_step)."""
    return "complex128" in getattr(kernel, "input_dtypes", ())


class Loss:
    """L near one test point, for one kernel: differences along lines, complex-step slopes."""

    def __init__(self, kernel: CellKernel, problem: Problem) -> None:
        self.kernel = kernel
        self.problem = problem
        weights = [problem.dys.ravel()] + [problem.dfinal[s].ravel() for s in kernel.states]
        self.weights = np.concatenate(weights * len(problem.runs)).astype(np.float64)
        self.out0 = self.outputs()
        # the size of L's terms: rounding in one evaluation of L(x + t v) - L(x) is ~eps of it
        self.magnitude = float(np.sum(np.abs(self.weights * self.out0)))
        self.delta = numdiff.EPS * self.magnitude

    @property
    def complex_capable(self) -> bool:
        return is_complex_capable(self.kernel)

    def outputs(self, changed: dict[str, np.ndarray] | None = None, dtype: Any = None):
        """ys and the final states of every run of the problem, one flat array."""
        inputs = self.problem.inputs(changed, dtype)
        parts = []
        for run in self.problem.runs:
            ys, final, _ = self.problem.forward(self.kernel, inputs, run)
            parts += [ys.ravel()] + [final[s].ravel() for s in self.kernel.states]
        return np.concatenate(parts)

    def line(self, name: str, direction: np.ndarray) -> numdiff.Line:
        """phi(t) = L(x + t v) - L(x), the outputs differenced before weighting."""
        x = self.problem.tensors()[name]

        def phi(t: float) -> float:
            moved = self.outputs({name: x + t * direction})
            return float(np.dot(self.weights, moved - self.out0))

        return numdiff.Line(phi)

    def complex_slope(self, name: str, direction: np.ndarray) -> numdiff.Estimate:
        """dL/dt along v by the complex step through the complex128 forward."""
        h = numdiff.COMPLEX_STEP
        x = self.problem.tensors()[name]
        out = self.outputs({name: x + 1j * h * direction}, np.complex128)
        tangent = out.imag / h
        value = float(np.dot(self.weights, tangent))
        return numdiff.complex_step(value, float(np.sum(np.abs(self.weights * tangent))))

    def slope(self, method: str, name: str, direction: np.ndarray) -> Slope:
        """dL/dt along v by an entrywise method, with its noise and its line (for kinks)."""
        if method == "complex":
            return Slope(self.complex_slope(name, direction), None)
        line = self.line(name, direction)
        if method == "richardson":
            return Slope(numdiff.richardson(line, self.delta), line)
        return Slope(numdiff.central(line, self.delta), line)

    def near_kink(
        self, slope: Slope, name: str, direction: np.ndarray, tol: float, noisy: bool = False
    ) -> Kink | None:
        """If a kink of a piecewise activation lies within the step along v (or, for a `noisy`
        estimate, may lie there unseen): the derivative from a smooth side, or why there is
        none. None when the line is smooth.

        One-sided differences are tried at the full step, then at 1/4 and 1/16 of it, until a
        side is free of kinks (its extrapolations agree within `tol`, rounding included).
        """
        line = slope.line or self.line(name, direction)
        kinked = numdiff.at_kink(line, self.delta)
        if not kinked and not noisy:
            return None
        found = None
        for h in (numdiff.RICHARDSON_STEP / 4**k for k in range(3)):
            left = numdiff.one_sided(line, self.delta, -1, h)
            right = numdiff.one_sided(line, self.delta, +1, h)
            # a side is smooth when its extrapolations agree to the tolerance or to a few
            # times their rounding; a kink inside it would leave a change of order the jump
            bound = max(tol, 4 * numdiff.ONE_SIDED_ROUNDING * self.delta / h)
            smooth = [e for e in (left, right) if e.noise <= bound]
            if len(smooth) == 2 and abs(left.value - right.value) > tol + left.noise + right.noise:
                text = f"on a kink: left derivative {left.value:.9g}, right {right.value:.9g}"
                return Kink(None, text)
            if smooth and found is None:  # the largest step has the least rounding
                found = Kink(min(smooth, key=lambda e: e.noise), "one-sided differences")
            if len(smooth) == 2:
                break  # both sides smooth and agreeing: no kink this close
        if found is not None:
            return found
        return Kink(None, "kinks on both sides, closer than the smallest step") if kinked else None


@dataclass
class Slope:
    """A derivative along a line, and the line itself when it was evaluated (for kinks)."""

    estimate: numdiff.Estimate
    line: numdiff.Line | None


@dataclass
class Kink:
    """A kink within the step: the smooth side's estimate (None if neither side is smooth)."""

    estimate: numdiff.Estimate | None
    text: str


def resolve_kinks(
    loss: Loss,
    name: str,
    directions: list[np.ndarray],
    slopes: list[Slope],
    analytic: np.ndarray,
    reference: np.ndarray,
    noise: np.ndarray,
    tol_abs: Callable[[int], float],
) -> tuple[dict[int, str], int]:
    """Where an estimate fails, look for a kink within the step: replace the estimate by the
    smooth side's (in place), or record why the kink cannot be resolved. Returns the
    unresolved kinks and the number of estimates taken from one side."""
    kinks: dict[int, str] = {}
    beside = 0
    for k in range(len(slopes)):
        if abs(analytic[k] - reference[k]) <= tol_abs(k) or not np.isfinite(analytic[k]):
            continue
        noisy = noise[k] > tol_abs(k)
        kink = loss.near_kink(slopes[k], name, directions[k], tol_abs(k), noisy)
        if kink is None:
            continue
        if kink.estimate is None:
            kinks[k] = kink.text
        else:
            reference[k], noise[k] = kink.estimate.value, kink.estimate.noise
            beside += 1
    return kinks, beside
