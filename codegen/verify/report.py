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


LEGEND = """\
columns: max abs = the largest |backward - reference|; rel = max abs relative to the tensor's
largest gradient entry (dot: to sum |v_k g_k| along each direction); noise = the reference
method's own error estimate, relative like rel (a row whose noise exceeds tol is inconclusive,
not failed); proj rel = the worst relative error of the random projections at the larger size;
tol = the tolerance on rel (taylor: the least rate the remainder must shrink at)."""

ENTRYWISE = ("complex", "richardson", "central")


def table(rows: list[Row], seed: int, method: str | None = None) -> str:
    """The rows for people: what was checked, one aligned line per tensor, a summary per cell
    (when there are several), notes, the legend, and the total last. `method` is the method
    asked for (None: each backend's default), to say where it could not be used."""
    columns = _columns(rows)
    lines = [*_headers(rows, seed), _fit(columns, {name: name for name in COLUMNS})]
    cells = list(dict.fromkeys(r.cell for r in rows))
    for cell in cells:
        mine = [r for r in rows if r.cell == cell]
        lines += [_fit(columns, _cells_of(r)) + _extras(r) for r in mine]
        if len(cells) > 1:
            lines.append(f"-- {cell}: {_counts(mine)}")
    lines += _notes(rows, method)
    lines += [LEGEND, _counts(rows)]
    return "\n".join(lines)


def _headers(rows: list[Row], seed: int) -> list[str]:
    """What was checked, for each kind of method among the rows, at the size it ran at."""

    def sizes(d: dict[str, int]) -> str:
        return " ".join(f"{k}={v}" for k, v in d.items())

    methods = {r.method for r in rows}
    out = []
    if methods & set(ENTRYWISE) or not methods:
        out.append(
            f"seed {seed}; entry by entry at {sizes(ENTRY_SIZES)}, {PROJECTIONS} random "
            f"projections per tensor at {sizes(PROJECTION_SIZES)}; errors relative to the "
            "tensor's largest entry"
        )
    if "dot" in methods:
        out.append(
            f"seed {seed}; dot-product test, <v, backward(w)> against <w, J v>, along "
            f"{PROJECTIONS} random directions per tensor at {sizes(PROJECTION_SIZES)}"
        )
    if "taylor" in methods:
        out.append(
            f"seed {seed}; Taylor remainder test along {PROJECTIONS} random directions per "
            f"tensor at {sizes(PROJECTION_SIZES)}: the remainder must shrink at rate 2"
        )
    return out


COLUMNS = ("cell", "backend", "tensor", "shape", "dtype", "method", "max abs", "rel", "noise",
           "proj rel", "tol", "verdict")  # fmt: skip
_RIGHT = ("max abs", "rel", "noise", "proj rel", "tol")


def _cells_of(r: Row) -> dict[str, str]:
    """A row's text per column; '-' where a number means nothing for its method."""

    def num(x: float | None) -> str:
        return f"{x:.1e}" if x is not None else "-"

    taylor, dot = r.method == "taylor", r.method == "dot"
    return {
        "cell": r.cell,
        "backend": r.backend,
        "tensor": r.tensor,
        "shape": "x".join(str(k) for k in r.shape),
        "dtype": r.dtype,
        "method": r.method,
        "max abs": "-" if taylor else num(r.max_abs),
        "rel": "-" if taylor else num(r.max_rel),
        "noise": "-" if taylor else num(r.noise),
        "proj rel": "-" if taylor or dot else num(r.projection_rel),
        "tol": f">={2 - r.tolerance:.1f}" if taylor else f"{r.tolerance:.0e}",
        "verdict": r.verdict,
    }


def _columns(rows: list[Row]) -> dict[str, int]:
    """Each column's width: its header's, or its longest entry's."""
    widths = {name: len(name) for name in COLUMNS}
    for r in rows:
        for name, text in _cells_of(r).items():
            widths[name] = max(widths[name], len(text))
    widths["verdict"] = 0  # the last column: not padded
    return widths


def _fit(columns: dict[str, int], texts: dict[str, str]) -> str:
    parts = []
    for name, width in columns.items():
        text = texts[name]
        parts.append(text.rjust(width) if name in _RIGHT else text.ljust(width))
    return " ".join(parts).rstrip()


def _extras(r: Row) -> str:
    """After the verdict: a Taylor rate, a FAIL's worst entry, why a row did not pass."""
    text = ""
    if r.method == "taylor" and r.rate is not None:
        text += f"  rate {r.rate:.2f}"
    if r.verdict == "FAIL" and r.location:
        text += f"  worst {r.location}: analytic {r.analytic:.9e} vs reference {r.reference:.9e}"
    if r.verdict != "PASS" and r.detail:
        text += f"  ({r.detail})"
    return text


def _notes(rows: list[Row], method: str | None) -> list[str]:
    """Where the method asked for could not run: the complex step needs complex arithmetic."""
    if method != "complex":
        return []
    fell_back = list(dict.fromkeys(r.backend for r in rows if r.method != "complex"))
    return [
        f"note: {backend}: richardson instead of complex, as its forward cannot run complex numbers"
        for backend in fell_back
    ]


def _counts(rows: list[Row]) -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    return (
        f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive"
    )
