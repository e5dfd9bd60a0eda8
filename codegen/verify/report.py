"""The report: one Row per gradient tensor, and the rows as a table or as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from .problems import ENTRY_SIZES, PROJECTION_SIZES, PROJECTIONS

VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")


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


def as_json(rows: list[Row]) -> str:
    """The rows for machines."""
    return json.dumps([r.as_dict() for r in rows], indent=1)


def table(rows: list[Row], seed: int) -> str:
    """The rows for people: what was checked, one line per tensor, and the counts."""

    def sizes(d: dict[str, int]) -> str:
        return " ".join(f"{k}={v}" for k, v in d.items())

    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines = [
        f"seed {seed}; entry by entry at {sizes(ENTRY_SIZES)}, {PROJECTIONS} random "
        f"projections per tensor at {sizes(PROJECTION_SIZES)}; errors relative to the "
        "tensor's largest entry",
        f"{'cell':<14} {'backend':<7} {'tensor':<12} {'shape':<9} {'dtype':<7} "
        f"{'method':<10} {'max abs':>8} {'rel':>8} {'noise':>8} {'proj rel':>8} "
        f"{'tol':>7}  verdict",
        *(line(r) for r in rows),
        f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive",
    ]
    return "\n".join(lines)


def line(r: Row) -> str:
    """One row of the table; a FAIL names its worst entry, never whole tensors."""

    def num(x: float | None) -> str:
        return f"{x:8.1e}" if x is not None else f"{'-':>8}"

    shape = "x".join(str(k) for k in r.shape)
    text = (
        f"{r.cell:<14} {r.backend:<7} {r.tensor:<12} {shape:<9} {r.dtype:<7} {r.method:<10} "
        f"{num(r.max_abs)} {num(r.max_rel)} {num(r.noise)} {num(r.projection_rel)} "
        f"{r.tolerance:7.0e}  {r.verdict}"
    )
    if r.method == "taylor" and r.rate is not None:
        text += f"  rate {r.rate:.2f}"
    if r.verdict == "FAIL" and r.location:
        text += f"  worst {r.location}: analytic {r.analytic:.10g} vs reference {r.reference:.10g}"
    if r.verdict != "PASS" and r.detail:
        text += f"  ({r.detail})"
    return text
