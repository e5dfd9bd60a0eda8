"""How the NumPy module spells things: numbers, functions, and names that cannot clash."""

from __future__ import annotations

import builtins
import keyword

import sympy

from ...activations import FUNCTIONS
from ...kernel import Block, Kernel
from ...names import Identifiers


def function(name: str) -> str:
    """How the module calls a function: NumPy's own, or the module's helper of that name."""
    spelled = FUNCTIONS.get(name)
    return spelled.spellings.get("numpy", name) if spelled else "np." + name


# A user's symbol may not take the name of a Python keyword or builtin, of a global of the
# generated module (its imports, constants, helpers), or of a local of its two functions.
RESERVED = (
    set(keyword.kwlist)
    | set(keyword.softkwlist)
    | set(dir(builtins))
    | set(FUNCTIONS)
    | {
        "np", "threading", "CELL", "STATES", "OUTPUT", "PARAM_SHAPES", "SAVED", "forward",
        "backward", "t", "T", "B", "I", "H", "xs", "ys", "dys", "params", "state0", "final",
        "cache", "dfinal", "dxs", "dstate0", "dparams", "dtype", "work",
    }
)  # fmt: skip
RESERVED_PATTERN = r"_.*"


class NumpyNames(Identifiers):
    """Every identifier of one cell's NumPy module, from one registry."""

    def __init__(self, kernel: Kernel) -> None:
        symbols = set(kernel.roles) | {p.name for p in kernel.cell.params}
        symbols |= {a.name for s in kernel.forward + kernel.backward if isinstance(s, Block)
                    for a in s.assignments}  # fmt: skip
        super().__init__(symbols, RESERVED, RESERVED_PATTERN)


def number(value: sympy.Number) -> str:
    """An integer as itself, anything else as a Python float: weak scalars keep the dtype."""
    if value.is_Integer:
        return f"{int(value)}"
    return repr(float(value))
