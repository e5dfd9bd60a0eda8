"""Activation functions as SymPy functions, each with its derivative written from its output.

Writing y' in terms of y (sigmoid: y (1 - y); tanh: 1 - y**2) lets the backward pass reuse the
activations the forward pass saved, so backward kernels never evaluate exp, tanh or sigmoid.
This is also what keeps the sigmoid gradient finite at -800, where SymPy's own
exp(-x)/(1 + exp(-x))**2 is inf/inf.

How each backend spells these functions lives in that backend's printer.
"""

from __future__ import annotations

from typing import ClassVar

import sympy


class Activation(sympy.Function):
    """An elementwise activation y = act(x) with a derivative expressed through y."""

    nargs = 1
    latex_name: ClassVar[str] = ""

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        """dy/dx written in terms of the output y."""
        raise NotImplementedError

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return self.derivative_from_output(self)


class Indicator(sympy.Function):
    """A 0/1 step used inside piecewise derivatives; its own derivative is zero."""

    nargs = 1
    latex_name: ClassVar[str] = ""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.S.Zero


class positive(Indicator):
    """1 where y > 0, else 0."""

    latex_name = r"\mathbb{1}_{>0}"


class inside_unit(Indicator):
    """1 where 0 < y < 1, else 0."""

    latex_name = r"\mathbb{1}_{(0,1)}"


class sign(Indicator):
    """The sign of (the real part of) y: -1, 0 or 1."""

    latex_name = r"\operatorname{sgn}"


class sigmoid(Activation):
    """The logistic function 1 / (1 + exp(-x))."""

    latex_name = r"\sigma"

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        return y * (1 - y)


class tanh(Activation):
    """The hyperbolic tangent."""

    latex_name = r"\tanh"

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        return 1 - y**2


class relu(Activation):
    """max(x, 0)."""

    latex_name = r"\operatorname{relu}"

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        return positive(y)


class softsign(Activation):
    """x / (1 + |x|); its derivative 1 / (1 + |x|)**2 equals (1 - |y|)**2.

    The derivative is continuous but its own derivative jumps at x = 0, so finite differences
    of higher order (Richardson) lose accuracy when a step straddles 0.
    """

    latex_name = r"\operatorname{softsign}"

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        return (1 - y * sign(y)) ** 2


class hard_sigmoid(Activation):
    """clip(x / 5 + 1 / 2, 0, 1), the Keras and ONNX (alpha = 0.2, beta = 0.5) hard sigmoid."""

    latex_name = r"\operatorname{hard\_sigmoid}"
    slope = sympy.Rational(1, 5)

    @classmethod
    def derivative_from_output(cls, y: sympy.Expr) -> sympy.Expr:
        return cls.slope * inside_unit(y)


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.__name__: cls for cls in (sigmoid, tanh, relu, softsign, hard_sigmoid)
}
INDICATORS: dict[str, type[Indicator]] = {
    cls.__name__: cls for cls in (positive, inside_unit, sign)
}
