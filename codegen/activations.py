"""Activation functions: each one's definition, derivative rule and LaTeX, side by side.

An activation is a SymPy function with a derivative rule beside it (micrograd's and Tangent's
style). Most rules are written from the output (sigmoid: y (1 - y); tanh: 1 - y**2), so the
backward reuses what the forward saved and evaluates no exp, tanh or sigmoid; this is also what
keeps the sigmoid gradient finite at -800, where SymPy's own exp(-x)/(1 + exp(-x))**2 is inf/inf.
Where the output does not determine the derivative (softplus, silu), the rule reads the input,
and the kernel plan then saves the input instead (`saves = "input"`).

How a backend spells a function: by default it calls a helper named after the function, which
the backend defines in `templates/functions/<name>.<ext>.jinja`; `spellings` names a backend's
own function instead (NumPy's np.tanh). `requires` lists the helpers a helper itself calls.
Adding an activation: one class here, plus per backend at most one helper template.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy


class Function(sympy.Function):
    """An elementwise function the generated code calls: an activation or an indicator."""

    nargs = 1
    latex_name: ClassVar[str] = ""
    plain: ClassVar[str] = ""  # as plain text, where the LaTeX name does not read as one (√)
    spellings: ClassVar[dict[str, str]] = {}  # backend -> its own function, else the helper
    requires: ClassVar[tuple[str, ...]] = ()  # helpers this one's helper calls
    definition: ClassVar[str] = ""  # the formula, for documentation and LaTeX sheets


class Activation(Function):
    """An elementwise activation y = act(x) with its derivative rule."""

    saves: ClassVar[Literal["output", "input"]] = "output"  # what the derivative rule reads

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        """dy/dx, written from the output y where `saves` is "output", else from the input x."""
        raise NotImplementedError

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return self.derivative(self.args[0], self)


class Indicator(Function):
    """A 0/1 step used inside piecewise derivatives; its own derivative is zero."""

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sympy.S.Zero


# indicators: the pieces of piecewise derivatives ---------------------------------------------


class positive(Indicator):
    """1 where y > 0, else 0."""

    latex_name = r"\mathbb{1}_{>0}"


class inside_unit(Indicator):
    """1 where 0 < y < 1, else 0."""

    latex_name = r"\mathbb{1}_{(0,1)}"


class sign(Indicator):
    """The sign of (the real part of) y: -1, 0 or 1."""

    latex_name = r"\operatorname{sgn}"


# activations -----------------------------------------------------------------------------------


class sigmoid(Activation):
    """The logistic function."""

    latex_name = r"\sigma"
    definition = "1 / (1 + exp(-x))"
    requires = ("exp",)

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return y * (1 - y)


class tanh(Activation):
    """The hyperbolic tangent."""

    latex_name = r"\tanh"
    definition = "tanh(x)"
    spellings: ClassVar[dict[str, str]] = {"numpy": "np.tanh"}
    requires = ("exp",)

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return 1 - y**2


class relu(Activation):
    """max(x, 0); at the kink x = 0 the derivative is taken as 0."""

    latex_name = r"\operatorname{relu}"
    definition = "max(x, 0)"

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return positive(y)


class softsign(Activation):
    """x / (1 + |x|); its derivative 1 / (1 + |x|)**2 equals (1 - |y|)**2.

    The derivative is continuous but its own derivative jumps at x = 0, so finite differences
    of higher order (Richardson) lose accuracy when a step straddles 0.
    """

    latex_name = r"\operatorname{softsign}"
    definition = "x / (1 + |x|)"

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return (1 - y * sign(y)) ** 2


class hard_sigmoid(Activation):
    """clip(x / 5 + 1 / 2, 0, 1), the Keras and ONNX (alpha = 0.2, beta = 0.5) hard sigmoid."""

    latex_name = r"\operatorname{hard\_sigmoid}"
    definition = "clip(x / 5 + 1 / 2, 0, 1)"
    slope = sympy.Rational(1, 5)

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return cls.slope * inside_unit(y)


class softplus(Activation):
    """log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) so that it never overflows.

    Its derivative, sigmoid(x), is not a function of the output alone in floating point (the
    output rounds to x for large x), so the rule reads the saved input.
    """

    latex_name = r"\operatorname{softplus}"
    definition = "log(1 + exp(x))"
    saves = "input"
    requires = ("exp",)

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return sigmoid(x)


class silu(Activation):
    """x sigmoid(x), also called swish; its derivative needs the input."""

    latex_name = r"\operatorname{silu}"
    definition = "x / (1 + exp(-x))"
    saves = "input"
    requires = ("sigmoid",)

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        s = sigmoid(x)
        return s * (1 + x * (1 - s))


# roots: what layer norm needs ---------------------------------------------------------------


class sqrt(Activation):
    """The square root, for norms; defined for x >= 0 (add an eps to keep x away from 0)."""

    latex_name = r"\sqrt{\cdot}"
    plain = "√"
    definition = "sqrt(x)"
    spellings: ClassVar[dict[str, str]] = {"numpy": "np.sqrt"}

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return 1 / (2 * y)


class rsqrt(Activation):
    """1 / sqrt(x), layer norm's scale; its derivative -y**3 / 2 needs no division."""

    latex_name = r"1/\sqrt{\cdot}"
    plain = "1/√"
    definition = "1 / sqrt(x)"

    @classmethod
    def derivative(cls, x: sympy.Expr, y: sympy.Expr) -> sympy.Expr:
        return -(y**3) / 2


# the gate activations: any of them may wrap any argument (sqrt and rsqrt need x > 0)
ACTIVATIONS: dict[str, type[Activation]] = {
    cls.__name__: cls for cls in (sigmoid, tanh, relu, softsign, hard_sigmoid, softplus, silu)
}
ROOTS: dict[str, type[Activation]] = {cls.__name__: cls for cls in (sqrt, rsqrt)}
# every function an equation may call
ELEMENTWISE: dict[str, type[Activation]] = {**ACTIVATIONS, **ROOTS}
INDICATORS: dict[str, type[Indicator]] = {
    cls.__name__: cls for cls in (positive, inside_unit, sign)
}
FUNCTIONS: dict[str, type[Function]] = {**ELEMENTWISE, **INDICATORS}


def helpers(used: set[str]) -> list[str]:
    """The helpers a kernel calling `used` needs, each after the helpers it calls."""
    out: list[str] = []

    def add(name: str) -> None:
        if name in out:
            return
        for dependency in getattr(FUNCTIONS.get(name), "requires", ()):
            add(dependency)
        out.append(name)

    for name in sorted(used):
        add(name)
    return out
