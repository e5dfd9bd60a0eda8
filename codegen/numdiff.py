"""Numerical derivatives of one real parameter t, each with its own noise estimate.

Every method differentiates phi(t) = L(x + t v) - L(x) at t = 0 for a fixed direction v; the
callers compute phi by differencing the outputs of the forward before contracting them with
the loss weights, so that the outputs v does not touch cancel exactly. `delta` is the rounding
error of one evaluation of phi (a few float64 eps times the size of the loss's terms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = float(np.finfo(np.float64).eps)

# The complex step: f'(x) v = Im f(x + i h v) / h + O(h^2 f'''), with no subtractive
# cancellation, so h can be tiny and the only error is rounding in the forward (~eps).
COMPLEX_STEP = 1e-20
# Richardson (Romberg): D(h) = (phi(h) - phi(-h)) / 2h = phi'(0) + c2 h^2 + c4 h^4 + c6 h^6 + ...
# plus rounding ~delta / h. At h, h/2, h/4, h/8 two rounds of extrapolation remove the h^2 and
# h^4 terms; with h = 2e-2 the h^6 term (~1e-11 h^6-scaled) and the rounding (~1e-13 of |L|)
# leave ~1e-12 of the gradient's size (measured: 2e-12 typical, 1e-11 worst on lstm and gru).
RICHARDSON_STEP = 2e-2
# Plain central differences balance c2 h^2 against delta / h near h = 1e-6 (error ~1e-10).
CENTRAL_STEP = 1e-6
# Taylor remainders are measured over these steps (factor 4 apart) down to the rounding floor.
TAYLOR_STEPS = tuple(1e-2 / 4**k for k in range(13))


@dataclass(frozen=True)
class Estimate:
    """A derivative and the method's own bound on its error."""

    value: float
    noise: float


class Line:
    """phi(t), cached: each t costs one forward pass."""

    def __init__(self, phi: Callable[[float], float]) -> None:
        self._phi = phi
        self._values: dict[float, float] = {0.0: 0.0}

    def __call__(self, t: float) -> float:
        if t not in self._values:
            self._values[t] = self._phi(t)
        return self._values[t]


def central(line: Line, delta: float, h: float = CENTRAL_STEP) -> Estimate:
    """(phi(h) - phi(-h)) / 2h; the noise is the change when h halves, plus rounding."""
    d1 = (line(h) - line(-h)) / (2 * h)
    d2 = (line(h / 2) - line(-h / 2)) / h
    return Estimate(d1, 4 / 3 * abs(d1 - d2) + delta / h)


def richardson(line: Line, delta: float, h: float = RICHARDSON_STEP) -> Estimate:
    """Central differences at h, h/2, h/4, h/8, extrapolated twice (Romberg); the estimate from
    the finer three is returned.

    The two sixth-order estimates (coarser three, finer three) differ by about the coarser one's
    error, which bounds the finer one's; 11 delta / h is the rounding in the finer one, whose
    weights (64 D(h/8) - 20 D(h/4) + D(h/2)) / 45 amplify delta / (h/8).
    """
    d = [(line(s) - line(-s)) / (2 * s) for s in (h, h / 2, h / 4, h / 8)]
    r = [(4 * d[k + 1] - d[k]) / 3 for k in range(3)]
    q = [(16 * r[k + 1] - r[k]) / 15 for k in range(2)]
    return Estimate(q[1], abs(q[1] - q[0]) + 11 * delta / h)


def complex_step(value: float, magnitude: float) -> Estimate:
    """Im f(x + i h v) / h, given; its error is rounding in the forward, ~eps of its terms."""
    return Estimate(value, 8 * EPS * magnitude)


def at_kink(line: Line, delta: float, h: float = RICHARDSON_STEP) -> bool:
    """Whether phi has a kink within h of 0: the one-sided slopes disagree in a way no smooth
    function explains.

    The gap between the forward and backward slopes, g(s) = |phi(s) + phi(-s)| / s, is
    s |phi''| + O(s^3) for smooth phi, so it halves with s; across a kink it tends to the jump
    in slope instead. Gaps within rounding (2 delta / s) carry no information.
    """
    steps = (h, h / 2, h / 4)
    gaps = [abs(line(s) + line(-s)) / s for s in steps]
    noise = [2 * delta / s for s in steps]
    for k in range(2):
        if gaps[k] > 40 * noise[k] or gaps[k + 1] > 40 * noise[k + 1]:
            ratio = gaps[k + 1] / gaps[k] if gaps[k] > 0 else math.inf
            if not 0.35 <= ratio <= 0.65:
                return True
    return False


ONE_SIDED_ROUNDING = 80


def one_sided(line: Line, delta: float, side: int, h: float = RICHARDSON_STEP) -> Estimate:
    """The derivative from one side only (side +1 or -1), for a kink on the other side.

    D(s) = side * phi(side * s) / s = phi'(0) + c1 s + c2 s^2 + ... at s = h, h/2, ..., h/16,
    with four rounds of extrapolation removing the s to s^4 terms. The last round's change
    bounds its error; 80 delta / h (ONE_SIDED_ROUNDING) is the rounding, D(h/16)'s 16 delta / h
    amplified by the weights 2 * 4/3 * 8/7 * 16/15 and the coarser terms.
    """
    table = [side * line(side * s) / s for s in (h / 2**k for k in range(5))]
    previous = table[-1]
    for order in range(1, 5):
        previous = table[-1]
        factor = 2**order
        table = [(factor * table[k + 1] - table[k]) / (factor - 1) for k in range(len(table) - 1)]
    return Estimate(table[0], abs(table[0] - previous) + ONE_SIDED_ROUNDING * delta / h)


@dataclass(frozen=True)
class TaylorResult:
    """The convergence rate of the first-order remainder and the steps it was fitted on."""

    rate: float | None  # None: too few remainders above the rounding floor
    steps: tuple[float, ...]
    remainders: tuple[float, ...]


def taylor_rate(line: Line, slope: float, delta: float, fitted: int = 3) -> TaylorResult:
    """The rate at which |phi(e) - e slope| shrinks as e -> 0: 2 if slope = phi'(0), else 1.

    Only remainders well above rounding (30 delta) count; the rate is the least-squares slope
    of log r against log e over the `fitted` smallest such steps, where the asymptotic
    behaviour shows and higher-order terms have died out.
    """
    steps, remainders = [], []
    for e in TAYLOR_STEPS:
        r = abs(line(e) - e * slope)
        if r <= 30 * delta:
            continue  # rounding, or a sign change of the remainder: no information
        steps.append(e)
        remainders.append(r)
    if len(steps) < 3:
        return TaylorResult(None, tuple(steps), tuple(remainders))
    x = np.log(steps[-fitted:])
    y = np.log(remainders[-fitted:])
    rate = float(np.polyfit(x, y, 1)[0])
    return TaylorResult(rate, tuple(steps), tuple(remainders))
