"""Numbers as C literals that round-trip exactly: the shortest decimal that reads back as the
same float32 or float64 (compilers round decimal literals correctly), F-suffixed for float."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

C_TYPE = {"float32": "float", "float64": "double"}
SUFFIX = {"float32": "f32", "float64": "f64"}


def c_literal(value: float, dtype: str) -> str:
    """One finite number of `dtype` as a C literal: 0.1F, -1.5e-07F, 0.1, 1e+300."""
    if not np.isfinite(value):
        raise ValueError(f"{value} has no C literal; the weights must be finite")
    if dtype == "float32":
        return str(np.float32(value)) + "F"  # NumPy prints the shortest round-trip digits
    return repr(float(value))  # Python too; always with a "." or an exponent


def c_numbers(values: Iterable[float], dtype: str, per_line: int = 6, indent: int = 4) -> str:
    """The body of a C array initializer: `per_line` literals a line, comma-separated."""
    literals = [c_literal(v, dtype) for v in np.asarray(values, np.float64).ravel()]
    lines = [
        " " * indent + ", ".join(literals[k : k + per_line]) + ","
        for k in range(0, len(literals), per_line)
    ]
    return "\n".join(lines)
