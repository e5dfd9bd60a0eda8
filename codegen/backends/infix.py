"""Infix arithmetic with whole powers, as C prints expressions (a backend subclasses it).

Subclasses say how to spell numbers, functions and symbols. (The NumPy backend lowers
expressions to calls with out= instead; see backends/numpy/lowering.py.)
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter


class InfixPrinter(StrPrinter):
    """Prints +, -, *, / and whole powers; powers become repeated products (x**2 -> x*x)."""

    times = " * "

    def __init__(self, symbol: Callable[[str], str]) -> None:
        super().__init__({"order": "none"})
        self.symbol_text = symbol

    def number(self, value: sympy.Number) -> str:
        raise NotImplementedError

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return self.symbol_text(expr.name)

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return self.number(expr)

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return self.number(expr)

    def _print_Float(self, expr: sympy.Float) -> str:
        return self.number(expr)

    def _print_One(self, expr: sympy.Number) -> str:
        return self.number(expr)

    def _print_NegativeOne(self, expr: sympy.Number) -> str:
        return self.number(expr)

    def _print_Half(self, expr: sympy.Number) -> str:
        return self.number(expr)

    def _print_Zero(self, expr: sympy.Number) -> str:
        return self.number(expr)

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if not exp.is_Integer:
            raise ValueError(f"cannot print the power {expr}")
        k = int(exp)
        factor = self.parenthesize(base, precedence(sympy.Mul(2, 3, evaluate=False)) + 1)
        product = self.times.join([factor] * abs(k))
        if k > 0:
            return product
        if k == 0:
            return self.number(sympy.S.One)
        return f"{self.number(sympy.S.One)} / " + (product if abs(k) == 1 else f"({product})")

    def _print_Mul(self, expr: sympy.Mul) -> str:
        coeff, factors = expr.as_coeff_mul()
        if coeff < 0:
            return "-" + self._print_Mul_positive(-coeff, factors)
        return self._print_Mul_positive(coeff, factors)

    def _print_Mul_positive(self, coeff: sympy.Number, factors: tuple) -> str:
        prec = precedence(sympy.Mul(2, 3, evaluate=False))
        parts = [] if coeff == 1 else [self.number(coeff)]
        numer = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
        denom = [f.base ** (-f.exp) for f in factors if f.is_Pow and f.exp.is_negative]
        parts += [self.parenthesize(f, prec) for f in numer]
        text = self.times.join(parts) if parts else self.number(sympy.S.One)
        for d in denom:
            inner = self.parenthesize(d, prec + 1)
            if d.is_Pow or d.is_Mul:  # a power prints as a product: x / (u * u), not x / u * u
                inner = f"({inner})"
            text += " / " + inner
        return text

    def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
        terms = sorted(expr.args, key=_term_order)
        out = self._print(terms[0])
        for term in terms[1:]:
            text = self._print(term)
            out += f" - {text[1:]}" if text.startswith("-") else f" + {text}"
        return out


def _term_order(term: sympy.Expr) -> tuple:
    """Positive terms first, then by SymPy's stable key: deterministic output."""
    negative = term.could_extract_minus_sign()
    return (negative, sympy.default_sort_key(term))
