"""Reductions over the units of vectors: `mean` and `sum`, each a per-row scalar (size 1).

    mu = cell.eq("mu", mean(a_f, a_i, a_c, a_o), "mean over the 4 H stacked units")
    var = cell.eq("var", mean((a_f - mu) ** 2, (a_i - mu) ** 2, ...), "variance")

Several arguments reduce over their units stacked, as one vector (layer norm over all gates);
each argument is an elementwise expression of vectors. A reduction is its own equation: its
result is a per-row scalar that later equations use elementwise with vectors (broadcast),
and only there. The kernels compute it as a stage of its own, like a matrix product: the stage
after it needs every unit of the stage before. In the backward, each operand receives the
result's adjoint broadcast (divided by the count for mean), and a scalar used elementwise with
vectors receives the sum over the units of its contributions.

`sum` is spelled as Python's builtin: `from codegen.reductions import sum` shadows the builtin
in the equation file, which is what an equation means by sum there; given a list it says so.

NumPy's reductions cannot see cellgen's symbols (np.mean(v) would quietly return v): while an
equation file runs, they raise an error naming these (cell.refusing_numpy).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import sympy

from .errors import EquationError


class Reduction(sympy.Function):
    """A per-row scalar from the units of one or more vectors, stacked."""

    latex_name: ClassVar[str] = ""
    what: ClassVar[str] = ""

    def __new__(cls, *args: object, **options: object) -> sympy.Expr:
        name = cls.__name__
        if not args:
            raise EquationError(f"{name}() needs a vector: {name}(v), or {name}(a, b) over both")
        for arg in args:
            if isinstance(arg, (str, bytes)) or (
                isinstance(arg, Iterable) and not isinstance(arg, sympy.Basic)
            ):
                raise EquationError(
                    f"{name}() of a {type(arg).__name__}: pass the vectors themselves, "
                    f"{name}(a, b), for the {cls.what} over their units stacked"
                )
        return super().__new__(cls, *args, **options)

    @property
    def operands(self) -> tuple[sympy.Expr, ...]:
        return self.args

    @classmethod
    def scale(cls, count: sympy.Expr) -> sympy.Expr:
        """d result / d operand unit: 1 / count for a mean, 1 for a sum."""
        raise NotImplementedError


class mean(Reduction):
    """The mean over the units of the arguments, stacked."""

    latex_name = r"\operatorname{mean}"
    what = "mean"

    @classmethod
    def scale(cls, count: sympy.Expr) -> sympy.Expr:
        return 1 / count


class sum(Reduction):  # the equation's sum over units: shadows the builtin on purpose
    """The sum over the units of the arguments, stacked."""

    latex_name = r"\operatorname{sum}"
    what = "sum"

    @classmethod
    def scale(cls, count: sympy.Expr) -> sympy.Expr:
        return sympy.S.One


REDUCTIONS: dict[str, type[Reduction]] = {cls.__name__: cls for cls in (mean, sum)}


def units(size: str) -> sympy.Symbol:
    """The number of units of a size (`H`) inside an expression: the count a mean divides by.

    Named `_H`, which no user symbol can take; printers spell it as the size, converted to the
    real type (`(double)H` in C)."""
    return sympy.Symbol(f"_{size}", integer=True, positive=True)


def units_size(symbol: sympy.Symbol) -> str | None:
    """The size a `units` symbol counts, else None."""
    name = symbol.name
    if name.startswith("_") and name[1:].isidentifier() and symbol.is_integer:
        return name[1:]
    return None


__all__ = ["REDUCTIONS", "Reduction", "mean", "sum", "units", "units_size"]
