"""Equations as one line of plain text, for the comments of generated code.

Products print as `W_f @ x`, and terms print in the order of the papers: input products, then
recurrent products, then the rest, then biases.
"""

from __future__ import annotations

import sympy
from sympy.printing.str import StrPrinter

from .cell import CellSpec, Equation


def term_rank(cell: CellSpec, term: sympy.Expr) -> int:
    """Sort key placing W x before U h before other terms before parameters."""
    names = {s.name for s in term.free_symbols}
    products = {m.name: m for m in cell.matmuls}
    if any(products[n].operand == cell.input for n in names if n in products):
        return 0
    if any(n in products for n in names):
        return 1
    if names and all(cell.kind(n) == "vector" for n in names if n in dict(cell.kinds)):
        return 3
    return 2


def factor_rank(cell: CellSpec, factor: sympy.Expr) -> tuple:
    """Sort key for the factors of a product: f * c_prev, not c_prev * f, as papers write it.

    Numbers, then adjoints, then the cell's intermediates in the order they are defined, then
    sums and functions, then previous states.
    """
    order = {eq.name: k for k, eq in enumerate(cell.equations)}
    if factor.is_Number:
        return (0, 0, "")
    if isinstance(factor, sympy.Symbol):
        name = factor.name
        if name.startswith("d_"):
            return (1, 0, name)
        if name in order:
            return (2, order[name], name)
        if name.endswith("_prev"):
            return (4, 0, name)
        return (2, len(order), name)
    return (3, 0, str(factor))


class _TextPrinter(StrPrinter):
    def __init__(self, cell: CellSpec) -> None:
        super().__init__({"order": "none"})
        self.cell = cell
        self.products = {m.name: m for m in cell.matmuls}

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        m = self.products.get(expr.name)
        if m is None:
            return expr.name
        operand = self._print(m.operand_expr)
        if not isinstance(m.operand_expr, sympy.Symbol):
            operand = f"({operand})"
        return f"{m.matrix} @ {operand}"

    def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
        terms = sorted(
            expr.args, key=lambda t: (term_rank(self.cell, t), sympy.default_sort_key(t))
        )
        out = self._print(terms[0])
        for term in terms[1:]:
            text = self._print(term)
            if text.startswith("-"):
                out += " - " + text[1:]
            else:
                out += " + " + text
        return out

    def _print_Mul(self, expr: sympy.Mul) -> str:
        coeff, factors = expr.as_coeff_mul()
        factors = sorted(factors, key=lambda f: factor_rank(self.cell, f))
        parts = [self.parenthesize(f, 50) for f in factors]
        if coeff == -1:
            return "-" + " * ".join(parts)
        if coeff != 1:
            parts.insert(0, self._print(coeff))
        return " * ".join(parts)


def expression_text(cell: CellSpec, expr: sympy.Expr) -> str:
    return _TextPrinter(cell).doprint(expr)


def equation_text(cell: CellSpec, eq: Equation) -> str:
    """`f = sigmoid(W_f @ x + U_f @ h_prev + b_f)  (forget gate)`"""
    text = f"{eq.name} = {expression_text(cell, eq.expr)}"
    return f"{text}  ({eq.doc})" if eq.doc else text
