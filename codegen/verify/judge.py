"""Judging errors against tolerances, and locating the worst entry in words.

A verdict is PASS, FAIL or INCONCLUSIVE (a failure explained by a kink or by the method's own
noise); the deciding entry is mapped back to its gate, row, column or time step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
# The backward's own rounding: each gradient entry is a sum of terms no larger than the
# point's largest gradient entry G, each off by ~eps; and a derivative written from an output
# cancels (1 - sigma is eps / (1 - sigma) off in relative terms at a saturated gate). Errors
# below ANALYTIC_ROUNDING * eps(dtype) * G are rounding, not bugs, whatever the method; they
# are still reported, but do not fail a check.
ANALYTIC_ROUNDING = 16


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
    by a kink the reference cannot resolve (`kinks`: position -> why) or sits where the method's
    noise is above the tolerance, whatever the error: that leaves the check INCONCLUSIVE."""
    rel = np.where(np.isfinite(errors), errors / scale, np.inf)
    failing = [int(k) for k in np.argsort(-rel, kind="stable") if not rel[k] <= tolerance]
    if not failing:
        return Judgement("PASS", int(np.argmax(rel)) if rel.size else -1)
    unresolved = None
    for k in failing:
        if not np.isfinite(rel[k]):
            return Judgement("FAIL", k, "not finite")
        # a method whose own noise is above the tolerance cannot resolve it, and its noise
        # estimate then is no bound either (truncation it does not see): never a FAIL
        noisy = not noise[k] / scale[k] <= tolerance
        if k in kinks:
            unresolved = unresolved or (k, kinks[k] + "; try another --seed")
        elif noisy:
            text = (
                f"the method's noise estimate ({noise[k] / scale[k]:.1e}) exceeds the tolerance "
                f"({tolerance:.0e}), so its error ({rel[k]:.1e}) decides nothing; try "
                "--method complex where the backend runs it, or another --seed"
            )
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
