"""Gradient verification: the backward kernels against derivatives of the forward.

The loss is L = <dys, ys> + sum over states of <dfinal[s], final[s]> with random dys and
dfinal, so backward(dys, dfinal) must return dL/d(every input). Each tensor (xs, every initial
state, every parameter) gets one Row: its worst error relative to the tensor's largest
gradient entry, the method's own noise estimate, and a verdict PASS, FAIL or INCONCLUSIVE; on
FAIL, the worst entry mapped back to its gate, row, column or time step.

Methods (`method=`):
  complex     the complex step, Im L(x + i h e_k) / h with h = 1e-20, entry by entry: exact to
              rounding (~1e-16); needs a complex-capable forward (a backend with complex_step,
              as NumPy), so the others fall back to Richardson. The default where it can run.
  richardson  central differences at h, h/2, h/4, h/8 extrapolated twice (error ~1e-12),
              entry by entry; the default without complex arithmetic (C), and the fallback.
  central     plain central differences (error ~1e-10), entry by entry, for comparison.
  dot         the dot-product test: <w, J v> from a forward-mode derivative (complex step, or
              Richardson for C) against <v, backward(w)>, for random v per tensor.
  taylor      the first-order Taylor remainder |L(x + e v) - L(x) - e <g, v>| must shrink
              like e^2 (rate 2); a wrong gradient leaves a first-order term (rate 1).
The entrywise methods run at tiny sizes (H = 3) where every entry is checked, and add seeded
random projections at a larger size (I != H, odd sizes). A direction-only method that fails
(dot, taylor, or a projection) is followed by an entrywise check at its size to find the entry.

float32 kernels are compared with the float64 derivative of the same backend's float64 forward
at the same (float32-rounded) point, with a float32 tolerance: never with float32 differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import numdiff
from .errors import CellgenError
from .load import CellKernel, load

METHODS = ("complex", "richardson", "central", "dot", "taylor")
ENTRY_SIZES = {"T": 3, "B": 2, "I": 4, "H": 3}
PROJECTION_SIZES = {"T": 5, "B": 3, "I": 7, "H": 9}
PROJECTIONS = 3  # random directions per tensor

# Tolerances, relative to the tensor's largest gradient entry (entrywise) or to sum |v_k g_k|
# (projections), from each method's error model:
# - complex step: no truncation (h^2 = 1e-40) and no cancellation; what remains is rounding in
#   the forward and in the backward's sums over T, B and the gates, a few hundred eps at most.
# - Richardson (Romberg, see numdiff): ~2e-12 typical and 1e-11 at worst on lstm and gru,
#   with a noise estimate up to ~6e-11: 1e-10.
# - central: ~1e-10 to 1e-8 at h = 1e-6 (rounding eps |L| / h), with a margin of 100.
# Both entrywise tolerances are far below 1e-4: one entry off by 1e-4 is caught.
TOLERANCES = {"complex": 1e-13, "richardson": 1e-10, "central": 1e-6}
# float32 against the float64 reference: each value carries ~eps32 = 6e-8 per rounding, and the
# recurrence compounds about one rounding per equation and step; 3 steps of a few equations,
# with cancellation in the sums, stay within ~2^8 eps32 (the conditioning factor) = 1.5e-5.
FLOAT32_TOLERANCE = 256 * float(np.finfo(np.float32).eps)
# Taylor: the fitted rate of the first-order remainder must be at least 2 - 0.2.
TAYLOR_RATE_TOLERANCE = 0.2
# A failing error larger than this multiple of the noise cannot be blamed on the noise.
NOISE_EXCESS = 100.0
# The backward's own rounding: each gradient entry is a sum of terms no larger than the
# point's largest gradient entry G, each off by ~eps; and a derivative written from an output
# cancels (1 - sigma is eps / (1 - sigma) off in relative terms at a saturated gate). Errors
# below ANALYTIC_ROUNDING * eps(dtype) * G are rounding, not bugs, whatever the method; they
# are still reported, but do not fail a check.
ANALYTIC_ROUNDING = 16


@dataclass(frozen=True)
class Row:
    """The check of one gradient tensor (fields after `reference` are optional extras)."""

    cell: str
    backend: str
    tensor: str
    shape: tuple[int, ...]
    method: str
    max_abs: float
    max_rel: float
    tolerance: float
    verdict: str
    worst: tuple[int, ...]  # index of the worst entry (or () when none was located)
    analytic: float  # the backward's value there
    reference: float  # the reference derivative there
    dtype: str = "float64"
    seed: int = 0
    noise: float = 0.0  # the method's own error estimate, relative like max_rel
    projections: int = 0  # random directions checked
    projection_rel: float | None = None  # their worst relative error
    rate: float | None = None  # taylor: fitted rate of the first-order remainder
    location: str = ""  # the worst entry in words: gate, row, column, time step
    gate: str | None = None
    time_step: int | None = None
    row: int | None = None
    column: int | None = None
    detail: str = ""  # why a row is INCONCLUSIVE, or what a direction-only method saw

    def as_dict(self) -> dict[str, Any]:
        """The row for JSON: tuples as lists, non-finite numbers as null."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


# test points --------------------------------------------------------------------------------


@dataclass
class Problem:
    """A test point: inputs, and the loss weights dys and dfinal."""

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
        )


def random_problem(kernel: CellKernel, seed: int, sizes: dict[str, int] = ENTRY_SIZES) -> Problem:
    """Random inputs at a moderate scale, where smooth gates are away from saturation."""
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


def analytic_gradients(kernel: CellKernel, p: Problem) -> dict[str, np.ndarray]:
    """backward(dys, dfinal) at p, by tensor name."""
    _, _, cache = kernel.forward(*p.inputs())
    dtype = p.xs.dtype
    dfinal = {s: np.asarray(v, dtype) for s, v in p.dfinal.items()}
    dxs, dstate0, dparams = kernel.backward(np.asarray(p.dys, dtype), cache, dfinal)
    out = {"xs": dxs}
    out.update({f"state0[{s}]": v for s, v in dstate0.items()})
    out.update(dparams)
    return out


def loss_function(kernel: CellKernel, p: Problem) -> Callable[[], float]:
    """L at the current values of p's arrays (which a caller may perturb in place)."""

    def loss() -> float:
        ys, final, _ = kernel.forward(p.xs, p.state0, p.params)
        total = np.sum(p.dys * ys)
        for s in kernel.states:
            total += np.sum(p.dfinal[s] * final[s])
        return float(total)

    return loss


def central_differences(array: np.ndarray, loss: Callable[[], float], step: float) -> np.ndarray:
    """dL/d(array), entry by entry, perturbing `array` in place."""
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


# the loss along a line ------------------------------------------------------------------------


class Loss:
    """L near one test point, for one kernel: differences along lines, complex-step slopes."""

    def __init__(self, kernel: CellKernel, problem: Problem) -> None:
        self.kernel = kernel
        self.problem = problem
        self.weights = np.concatenate(
            [problem.dys.ravel()] + [problem.dfinal[s].ravel() for s in kernel.states]
        ).astype(np.float64)
        self.out0 = self.outputs()
        # the size of L's terms: rounding in one evaluation of L(x + t v) - L(x) is ~eps of it
        self.magnitude = float(np.sum(np.abs(self.weights * self.out0)))
        self.delta = numdiff.EPS * self.magnitude

    @property
    def complex_capable(self) -> bool:
        return is_complex_capable(self.kernel)

    def outputs(self, changed: dict[str, np.ndarray] | None = None, dtype: Any = None):
        ys, final, _ = self.kernel.forward(*self.problem.inputs(changed, dtype))
        return np.concatenate([ys.ravel()] + [final[s].ravel() for s in self.kernel.states])

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


# judging ----------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """The verdict on a set of errors, and the entry (or direction) that decided it."""

    verdict: str
    index: int  # flat position of the deciding error, -1 for none
    detail: str = ""


def judge(
    errors: np.ndarray,
    noise: np.ndarray,
    scale: np.ndarray,
    tolerance: float,
    kinks: dict[int, str],
) -> Judgement:
    """PASS when every error is within tolerance; else FAIL, unless every failure is explained
    by a kink the reference cannot resolve (`kinks`: position -> why) or by the method's noise
    above the tolerance, which leaves the check INCONCLUSIVE."""
    rel = np.where(np.isfinite(errors), errors / scale, np.inf)
    failing = [int(k) for k in np.argsort(-rel, kind="stable") if not rel[k] <= tolerance]
    if not failing:
        return Judgement("PASS", int(np.argmax(rel)) if rel.size else -1)
    unresolved = None
    for k in failing:
        if not np.isfinite(rel[k]):
            return Judgement("FAIL", k, "not finite")
        noisy = noise[k] / scale[k] > tolerance and rel[k] <= NOISE_EXCESS * noise[k] / scale[k]
        if k in kinks:
            unresolved = unresolved or (k, kinks[k] + "; try another --seed")
        elif noisy:
            text = "the method's noise estimate exceeds the tolerance; try --method complex"
            unresolved = unresolved or (k, text)
        else:
            return Judgement("FAIL", k)
    k, text = unresolved
    return Judgement("INCONCLUSIVE", k, text)


# locating an entry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where an entry sits: its gate (parameter's equation, or state), row, column, step."""

    gate: str | None
    time_step: int | None
    row: int | None
    column: int | None
    text: str


def gates_of(spec: Any) -> dict[str, str]:
    """Each parameter's gate: the equation it enters first, with its description."""
    out: dict[str, str] = {}
    if spec is None:
        return out
    matrix_of = {m.name: m.matrix for m in spec.matmuls}
    for eq in spec.equations:
        names = sorted(s.name for s in eq.expr.free_symbols)
        for name in names:
            param = matrix_of.get(name, name)
            if param not in out and any(p.name == param for p in spec.params):
                out[param] = f"{eq.name} ({eq.doc})" if eq.doc else eq.name
    return out


def locate(tensor: str, index: tuple[int, ...], gates: dict[str, str]) -> Location:
    """An entry of a gradient tensor in words: time step, batch row, column, gate."""
    where = f"{tensor}[{', '.join(str(k) for k in index)}]"
    if not index:
        return Location(None, None, None, None, "")
    if tensor == "xs":
        t, b, i = index
        return Location(None, t, b, i, f"{where}: time step {t}, batch row {b}, input {i}")
    if tensor.startswith("state0["):
        b, j = index
        state = tensor[len("state0[") : -1]
        return Location(state, None, b, j, f"{where}: initial {state}, batch row {b}, unit {j}")
    gate = gates.get(tensor, tensor)
    if len(index) == 1:
        return Location(gate, None, index[0], None, f"{where}: gate {gate}, row {index[0]}")
    j, k = index
    return Location(gate, None, j, k, f"{where}: gate {gate}, row {j}, column {k}")


def compare(
    cell: str,
    backend: str,
    tensor: str,
    analytic: np.ndarray,
    reference: np.ndarray,
    method: str,
    tolerance: float,
) -> Row:
    """One tensor's Row from whole analytic and reference gradients (no noise estimate)."""
    analytic = np.asarray(analytic, np.float64)
    reference = np.asarray(reference, np.float64)
    raw = np.where(np.isfinite(analytic), np.abs(analytic - reference), np.inf)
    finite = np.abs(analytic[np.isfinite(analytic)])
    scale = max(float(np.max(np.abs(reference), initial=0.0)), float(np.max(finite, initial=0.0)))
    scale = max(scale, 1e-300)
    verdict = judge(raw.ravel(), np.zeros(raw.size), np.full(raw.size, scale), tolerance, {})
    index = tuple(int(i) for i in np.unravel_index(max(verdict.index, 0), raw.shape))
    where = locate(tensor, index, {})
    return Row(
        cell=cell,
        backend=backend,
        tensor=tensor,
        shape=tuple(raw.shape),
        method=method,
        max_abs=float(np.max(raw, initial=0.0)),
        max_rel=float(np.max(raw, initial=0.0)) / scale,
        tolerance=tolerance,
        verdict=verdict.verdict,
        worst=index,
        analytic=float(analytic[index]),
        reference=float(reference[index]),
        location=where.text,
        time_step=where.time_step,
        row=where.row,
        column=where.column,
        detail=verdict.detail,
    )


# the checks -----------------------------------------------------------------------------------


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

    kinks, beside = _resolve_kinks(loss, name, units, slopes, flat, reference, noise,
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


def _resolve_kinks(
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


def directions(shape: tuple[int, ...], seed: int, name: str, count: int) -> list[np.ndarray]:
    """`count` seeded random directions of unit length, different for each tensor name, so
    that a step t moves the point by t whatever the tensor's size."""
    salt = sum(ord(c) * 31**k for k, c in enumerate(name)) % 2**32
    rng = np.random.default_rng([seed, salt])
    vs = [rng.normal(size=shape) for _ in range(count)]
    return [v / np.linalg.norm(v) for v in vs]


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
        kinks, _ = _resolve_kinks(loss, name, vs, slopes, products, reference, noise,
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


# putting it together ------------------------------------------------------------------------


def is_complex_capable(kernel: CellKernel) -> bool:
    """Whether the kernel's forward runs complex128 inputs (its backend's complex_step)."""
    return "complex128" in getattr(kernel, "input_dtypes", ())


def default_method(kernel: CellKernel) -> str:
    """The complex step where the forward is complex-capable (NumPy), else Richardson."""
    return "complex" if is_complex_capable(kernel) else "richardson"


def verify(
    cell: str | Path,
    backend: str = "numpy",
    seed: int = 0,
    method: str | None = None,
    dtype: str = "float64",
) -> list[Row]:
    """Every gradient of one cell on one backend: one Row per tensor."""
    if dtype not in ("float64", "float32"):
        raise CellgenError(f"unsupported dtype '{dtype}'; choose float64 or float32")
    if method is not None and method not in METHODS:
        raise CellgenError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    reference = load(cell, backend=backend)  # float64, or following its inputs
    if dtype == "float64":
        return verify_kernel(reference, method=method, seed=seed)
    kernel = load(cell, backend=backend, dtype="float32")
    return verify_kernel(kernel, method=method, seed=seed, reference=reference)


def verify_kernel(
    kernel: Any,
    *,
    method: str | None = None,
    seed: int = 0,
    spec: Any = None,
    reference: Any = None,
    entry_problem: Problem | None = None,
    projection_problem: Problem | None = None,
) -> list[Row]:
    """Check `kernel`'s backward; with `reference` (a float64 kernel), check `kernel` (float32)
    against the float64 derivative of `reference`'s forward instead of its own."""
    ref_kernel = reference or kernel
    wanted = method or default_method(ref_kernel)
    if wanted not in METHODS:
        raise CellgenError(f"unknown method '{wanted}'; choose one of {', '.join(METHODS)}")
    if reference is not None and wanted == "taylor":
        raise CellgenError(
            "--dtype float32 is checked against the float64 reference; the Taylor test checks "
            "a gradient against its own forward: use --method complex, richardson, central or dot"
        )
    if spec is None:
        spec = getattr(kernel, "spec", None)
    ctx = _Context(kernel, ref_kernel, wanted, seed, gates_of(spec), reference is not None)
    small = entry_problem or random_problem(ref_kernel, seed, ENTRY_SIZES)
    large = projection_problem or random_problem(ref_kernel, seed + 1, PROJECTION_SIZES)
    if wanted in ("dot", "taylor"):
        return [ctx.directional_row(name, large) for name in large.tensors()]
    small_at, large_at = ctx.at(small), ctx.at(large)
    return [ctx.entry_row(name, small_at, large_at) for name in small.tensors()]


@dataclass
class _Point:
    """A test point evaluated: the reference loss and the analytic gradients of the kernel."""

    problem: Problem
    loss: Loss
    analytic: dict[str, np.ndarray]
    atol: float  # the backward's own rounding, ANALYTIC_ROUNDING eps G


@dataclass
class _Context:
    """One verify_kernel call: the kernel under test, its reference, the method, the points."""

    kernel: Any
    ref_kernel: Any
    method: str
    seed: int
    gates: dict[str, str]
    mixed: bool  # float32 kernel against a float64 reference
    _points: dict[int, _Point] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        return self.kernel.dtype or "float64"

    def entry_method(self, loss: Loss) -> str:
        """The entrywise (or tangent) method: complex falls back to Richardson without a
        complex-capable forward; dot and taylor locate entries with the backend default."""
        method = self.method if self.method in TOLERANCES else default_method(loss.kernel)
        if method == "complex" and not loss.complex_capable:
            return "richardson"
        return method

    def tolerance(self, method: str) -> float:
        return FLOAT32_TOLERANCE if self.mixed else TOLERANCES[method]

    def at(self, problem: Problem) -> _Point:
        key = id(problem)
        if key not in self._points:
            if self.mixed:  # the kernel's own dtype, and the reference at the rounded point
                problem = problem.astype(np.float32)
                analytic = analytic_gradients(self.kernel, problem)
                problem = problem.astype(np.float64)
            else:
                analytic = analytic_gradients(self.kernel, problem)
            biggest = max(float(np.max(np.abs(g), initial=0.0)) for g in analytic.values())
            eps = float(np.finfo(self.kernel.dtype or "float64").eps)
            atol = ANALYTIC_ROUNDING * eps * biggest if np.isfinite(biggest) else 0.0
            self._points[key] = _Point(problem, Loss(self.ref_kernel, problem), analytic, atol)
        return self._points[key]

    def row(self, name: str, point: _Point, method: str, **fields: Any) -> Row:
        values: dict[str, Any] = {
            "cell": self.kernel.name,
            "backend": self.kernel.backend,
            "tensor": name,
            "shape": tuple(point.problem.tensors()[name].shape),
            "method": method,
            "max_abs": 0.0,
            "max_rel": 0.0,
            "tolerance": self.tolerance(method) if method in TOLERANCES else 0.0,
            "verdict": "PASS",
            "worst": (),
            "analytic": 0.0,
            "reference": 0.0,
            "dtype": self.dtype,
            "seed": self.seed,
        }
        return Row(**{**values, **fields})

    def located(self, row: Row, name: str, check: EntryCheck) -> Row:
        """`row` with the entry that decided `check` filled in."""
        k = check.judgement.index
        if k < 0:
            return row
        index = tuple(int(i) for i in np.unravel_index(k, check.errors.shape))
        where = locate(name, index, self.gates)
        return replace(
            row,
            worst=index,
            analytic=float(check.analytic[index]),
            reference=float(check.reference[index]),
            location=where.text,
            gate=where.gate,
            time_step=where.time_step,
            row=where.row,
            column=where.column,
        )

    def entry_row(self, name: str, small: _Point, large: _Point) -> Row:
        method = self.entry_method(small.loss)
        tol = self.tolerance(method)
        entries = check_entries(small.loss, name, small.analytic[name], method, tol, small.atol)
        vs = directions(large.problem.tensors()[name].shape, self.seed, name, 2 * PROJECTIONS)
        g = large.analytic[name]
        proj = check_directions(
            large.loss, name, g, method, tol, vs[:PROJECTIONS], vs[PROJECTIONS:], large.atol
        )
        row = self.row(
            name,
            small,
            method,
            max_abs=entries.max_abs,
            max_rel=max(entries.max_rel, proj.max_rel),
            noise=entries.noise_rel,
            projections=PROJECTIONS,
            projection_rel=proj.max_rel,
        )
        row = self.located(row, name, entries)
        verdict, detail = entries.judgement.verdict, entries.judgement.detail
        if verdict == "FAIL":
            return replace(row, verdict="FAIL", detail=detail)
        if proj.judgement.verdict == "FAIL":
            return self.localise(row, name, large, "a random projection at the larger size")
        if verdict == "INCONCLUSIVE":
            return replace(row, verdict="INCONCLUSIVE", detail=detail)
        if proj.judgement.verdict == "INCONCLUSIVE":
            row = replace(row, worst=(), location="", gate=None, row=None, column=None)
            detail = f"a random projection at the larger size: {proj.judgement.detail}"
            return replace(row, verdict="INCONCLUSIVE", detail=detail)
        if not detail and method != self.method:
            detail = f"{self.method} needs a complex-capable forward: {method} instead"
        return replace(row, detail=detail or self.rounding_note(row))

    def rounding_note(self, row: Row) -> str:
        """Why a passing row may show an error above its tolerance."""
        if row.max_rel <= row.tolerance:
            return ""
        return (
            f"errors within the backward's own rounding ({ANALYTIC_ROUNDING} eps times the "
            "largest gradient entry), as at saturated gates"
        )

    def directional_row(self, name: str, problem: Problem) -> Row:
        point = self.at(problem)
        vs = directions(point.problem.tensors()[name].shape, self.seed, name, PROJECTIONS)
        if self.method == "taylor":
            taylor = check_taylor(point.loss, name, point.analytic[name], vs)
            rate = taylor.rate
            row = self.row(
                name,
                point,
                "taylor",
                max_abs=taylor.remainder,
                max_rel=max(0.0, 2 - rate) if rate is not None else math.inf,
                projections=len(vs),
                rate=rate,
                detail=(f"rate {rate:.2f}" if rate is not None else taylor.judgement.detail),
            )
            row = replace(row, tolerance=TAYLOR_RATE_TOLERANCE, verdict=taylor.judgement.verdict)
            if row.verdict == "FAIL":
                return self.localise(row, name, point, f"Taylor remainder rate {rate:.2f}")
            return row
        tangent = self.entry_method(point.loss)
        tol = self.tolerance(tangent)
        spare = directions(point.problem.tensors()[name].shape, self.seed, name, 2 * PROJECTIONS)
        dot = check_directions(
            point.loss,
            name,
            point.analytic[name],
            tangent,
            tol,
            vs,
            spare[PROJECTIONS:],
            point.atol,
        )
        k = dot.judgement.index
        row = self.row(
            name,
            point,
            "dot",
            max_abs=float(np.max(dot.errors, initial=0.0)),
            max_rel=dot.max_rel,
            noise=float(np.max(dot.noise / dot.scales, initial=0.0)),
            projections=len(vs),
            projection_rel=dot.max_rel,
            detail=f"<w, J v> by {tangent}",
        )
        row = replace(row, tolerance=tol, verdict=dot.judgement.verdict)
        if row.verdict == "FAIL":
            return self.localise(row, name, point, f"direction {k}")
        if row.verdict == "INCONCLUSIVE":
            return replace(row, detail=dot.judgement.detail)
        return replace(row, detail=self.rounding_note(row) or row.detail)

    def localise(self, row: Row, name: str, point: _Point, seen: str) -> Row:
        """A direction-only failure, followed by an entrywise check at the same point."""
        method = self.entry_method(point.loss)
        tol = self.tolerance(method)
        entries = check_entries(point.loss, name, point.analytic[name], method, tol, point.atol)
        detail = f"failed on {seen}; entry located by {method} at this size"
        row = replace(row, verdict="FAIL", detail=detail)
        if entries.judgement.verdict == "PASS":
            return replace(row, detail=f"failed on {seen}; no single entry stands out")
        return self.located(row, name, entries)
