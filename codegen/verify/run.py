"""verify and verify_kernel: every gradient tensor of a kernel checked, one Row each.

The method comes from the kernel's capabilities: the complex step where its forward runs
complex numbers (a backend with complex_step), else Richardson-extrapolated differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CellgenError
from ..load import CellKernel, load
from . import problems
from .checks import EntryCheck, check_directions, check_entries, check_taylor
from .judge import (
    ANALYTIC_ROUNDING,
    FLOAT32_TOLERANCE,
    TAYLOR_RATE_TOLERANCE,
    TOLERANCES,
    gates_of,
    locate,
)
from .problems import PROJECTIONS, Problem, analytic_gradients, directions
from .references import Loss, is_complex_capable
from .report import Row

METHODS = ("complex", "richardson", "central", "dot", "taylor")


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
    spec = getattr(kernel, "spec", None)  # for naming gates; a kernel may come without one
    ctx = _Context(kernel, ref_kernel, wanted, seed, gates_of(spec), reference is not None)
    small = entry_problem or problems.entry_problem(ref_kernel, seed)
    large = projection_problem or problems.projection_problem(ref_kernel, seed + 1)
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
