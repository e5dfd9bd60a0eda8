"""The checks of one gradient tensor: entry by entry, along random directions (the dot-product
test), and the Taylor remainder test; each judged (judge.py) against a reference (references.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import numdiff
from .judge import TAYLOR_RATE_TOLERANCE, Judgement, judge
from .references import Loss, resolve_kinks


@dataclass
class EntryCheck:
    """Every entry of one tensor against a reference derivative."""

    analytic: np.ndarray
    reference: np.ndarray
    errors: np.ndarray  # beyond the backward's own rounding (atol)
    raw: np.ndarray  # |analytic - reference|
    scale: float
    noise: np.ndarray
    judgement: Judgement

    @property
    def max_abs(self) -> float:
        return float(np.max(self.raw, initial=0.0))

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.scale

    @property
    def noise_rel(self) -> float:
        return float(np.max(self.noise, initial=0.0)) / self.scale


def check_entries(
    loss: Loss, name: str, analytic: np.ndarray, method: str, tolerance: float, atol: float = 0.0
) -> EntryCheck:
    """Each entry of dL/d(name) against `method` (complex, richardson or central); errors
    count beyond `atol`, the backward's own rounding."""
    x = loss.problem.tensors()[name]
    analytic = np.asarray(analytic, np.float64)
    units, slopes = [], []
    for index in np.ndindex(x.shape):
        e = np.zeros(x.shape)
        e[index] = 1.0
        units.append(e)
        slopes.append(loss.slope(method, name, e))
    reference = np.array([sl.estimate.value for sl in slopes])
    noise = np.array([sl.estimate.noise for sl in slopes])
    flat = analytic.ravel()

    def scale() -> float:  # the tensor's largest entry, whichever side has it, or rounding
        biggest = np.max(np.abs(reference), initial=0.0)
        return max(float(biggest), float(np.max(np.abs(flat), initial=0.0)), atol, 1e-300)

    kinks, beside = resolve_kinks(loss, name, units, slopes, flat, reference, noise,
                                   lambda k: tolerance * scale() + atol)  # fmt: skip
    raw = np.where(np.isfinite(flat), np.abs(flat - reference), np.inf)
    errors = np.maximum(raw - atol, 0.0)
    judgement = judge(errors, noise, np.full(errors.size, scale()), tolerance, kinks)
    if beside and judgement.verdict == "PASS":
        judgement.detail = f"{beside} entries re-checked by one-sided differences (a kink or noise)"
    return EntryCheck(
        analytic,
        reference.reshape(x.shape),
        errors.reshape(x.shape),
        raw.reshape(x.shape),
        scale(),
        noise.reshape(x.shape),
        judgement,
    )


@dataclass
class DirectionCheck:
    """Random directions through one tensor: <g, v> against a derivative along v."""

    errors: np.ndarray  # |<v, g> - reference|
    scales: np.ndarray
    noise: np.ndarray
    judgement: Judgement

    @property
    def max_rel(self) -> float:
        return float(np.max(self.errors / self.scales, initial=0.0))


def check_directions(
    loss: Loss,
    name: str,
    analytic: np.ndarray,
    method: str,
    tolerance: float,
    vs: list[np.ndarray],
    spare: list[np.ndarray] | None = None,
    atol: float = 0.0,
) -> DirectionCheck:
    """The dot-product test: <v, backward(w)> against <w, J v> for each direction v.

    A direction along which kinks of piecewise activations crowd the step on both sides says
    nothing; it is replaced by one of the `spare` directions while they last.
    """
    analytic = np.asarray(analytic, np.float64)
    vs, spare = list(vs), list(spare or [])
    n = len(vs)
    slopes = [loss.slope(method, name, v) for v in vs]
    products, scales, atols = np.empty(n), np.empty(n), np.empty(n)
    reference, noise = np.empty(n), np.empty(n)

    def measure(k: int) -> None:
        products[k] = float(np.sum(vs[k] * analytic))
        atols[k] = atol * float(np.sum(np.abs(vs[k])))
        scales[k] = max(float(np.sum(np.abs(vs[k] * analytic))), atols[k], 1e-300)
        reference[k], noise[k] = slopes[k].estimate.value, slopes[k].estimate.noise

    for k in range(n):
        measure(k)
    while True:
        kinks, _ = resolve_kinks(loss, name, vs, slopes, products, reference, noise,
                                  lambda k: tolerance * scales[k] + atols[k])  # fmt: skip
        if not kinks or not spare:
            break
        for k in kinks:
            if spare:
                vs[k] = spare.pop(0)
                slopes[k] = loss.slope(method, name, vs[k])
                measure(k)
    raw = np.where(np.isfinite(products), np.abs(products - reference), np.inf)
    errors = np.maximum(raw - atols, 0.0)
    return DirectionCheck(raw, scales, noise, judge(errors, noise, scales, tolerance, kinks))


@dataclass
class TaylorCheck:
    """The Taylor remainder test of one tensor: its rate (median over directions)."""

    rate: float | None
    judgement: Judgement
    remainder: float


def check_taylor(loss: Loss, name: str, analytic: np.ndarray, vs: list[np.ndarray]) -> TaylorCheck:
    """The Taylor remainder test along each direction; the median rate decides."""
    rates = []
    smallest = math.inf  # the smallest remainder that counted
    for v in vs:
        slope = float(np.sum(v * np.asarray(analytic, np.float64)))
        result = numdiff.taylor_rate(loss.line(name, v), slope, loss.delta)
        if result.remainders:
            smallest = min(smallest, result.remainders[-1])
        if result.rate is not None:
            rates.append(result.rate)
    if not rates:
        text = "every remainder is at the rounding level: L is (nearly) linear along v"
        return TaylorCheck(None, Judgement("INCONCLUSIVE", -1, text), smallest)
    # the median: a direction along which L's curvature nearly vanishes reaches its asymptotic
    # rate only at steps below rounding, while a wrong gradient slows every direction
    rate = float(np.median(rates))
    ok = rate >= 2 - TAYLOR_RATE_TOLERANCE
    return TaylorCheck(rate, Judgement("PASS" if ok else "FAIL", -1), smallest)
