"""How the NumPy module spells things: numbers, functions, and names that cannot clash."""

from __future__ import annotations

import re

import sympy

from ...activations import ACTIVATIONS, INDICATORS

# The activations and indicators: helpers of the generated module that write into `out`.
FUNCTIONS = {
    "sigmoid": "sigmoid",
    "tanh": "np.tanh",
    "relu": "relu",
    "softsign": "softsign",
    "hard_sigmoid": "hard_sigmoid",
    "positive": "positive",
    "inside_unit": "inside_unit",
    "sign": "sign",
}
assert set(FUNCTIONS) == set(ACTIVATIONS) | set(INDICATORS)

RESERVED = {
    "np", "t", "T", "B", "I", "H", "xs", "ys", "dys", "params", "state0", "final", "cache",
    "dfinal", "dxs", "dstate0", "dparams", "dtype", "forward", "backward", "range", "out",
    "gates", "d_gates", "threading",
}  # fmt: skip
# the shapes of the template's own names: work arrays, stacked matrices, sequences, buffers
_GENERATED = re.compile(r"tmp\d+|M_.*|MT_.*|.*_seq|.*_products|.*_spare|.*_next|.*_all|.*_sum")


def ident(name: str) -> str:
    """A user's symbol as a Python name that cannot clash with the template's own names."""
    if name in RESERVED or name in FUNCTIONS or _GENERATED.fullmatch(name):
        return f"{name}_"
    return name


def number(value: sympy.Number) -> str:
    """An integer as itself, anything else as a Python float: weak scalars keep the dtype."""
    if value.is_Integer:
        return f"{int(value)}"
    return repr(float(value))
