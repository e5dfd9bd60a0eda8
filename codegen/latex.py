"""LaTeX of a cell's equations and of its derived adjoints.

Conventions of the issue and the papers: row vectors, `W x` for the product, ⊙ (`\\odot`) for
the elementwise product, σ for the logistic sigmoid, time subscripts t and t-1. Adjoints print
as δ (`\\delta`), the derivative of the loss with respect to the quantity.
"""

from __future__ import annotations

import sympy
from sympy.printing.latex import LatexPrinter

from .activations import Activation, Indicator
from .cell import CellSpec, prev_name
from .derive import Derivation, derive
from .kernel import build_kernel
from .text import factor_rank, term_rank

_ACCENTS = {"tilde": r"\tilde", "hat": r"\hat", "bar": r"\bar"}
_GREEK = set(
    [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "rho",
        "sigma",
        "tau",
        "phi",
        "chi",
        "psi",
        "omega",
    ]
)


def _base(name: str) -> str:
    """`c_tilde` -> `\\tilde{c}`, `h` -> `h`, `gate` -> `\\mathrm{gate}`."""
    head, _, tail = name.partition("_")
    core = f"\\{head}" if head in _GREEK else head if len(head) == 1 else rf"\mathrm{{{head}}}"
    if tail in _ACCENTS:
        return f"{_ACCENTS[tail]}{{{core}}}"
    if tail:
        return f"{core}_{{{tail}}}" if head == core else rf"\mathrm{{{name}}}".replace("_", r"\_")
    return core


class CellLatexPrinter(LatexPrinter):
    """Prints a cell's symbols as the papers do; `adjoint` names print as δ(...)."""

    def __init__(self, cell: CellSpec, derivation: Derivation | None = None) -> None:
        super().__init__({"mul_symbol": None})
        self.cell = cell
        self.kinds = dict(cell.kinds)
        self.products = {m.name: m for m in cell.matmuls}
        self.params = {p.name for p in cell.params}
        self.definitions: dict[str, sympy.Expr] = {}
        if derivation is not None:
            sources = {e.name for e in cell.equations}
            for p in derivation.forward:
                lifted = p.name not in sources and not p.name.endswith("_pre")
                if lifted:
                    self.definitions[p.name] = p.expr
        for e in cell.equations:
            if e.auto:
                self.definitions[e.name] = e.expr

    def name(self, name: str) -> str:
        if name in self.products:
            m = self.products[name]
            operand = self._print(m.operand_expr)
            if not isinstance(m.operand_expr, sympy.Symbol):
                operand = rf"\left({operand}\right)"
            return f"{_base(m.matrix)} {operand}"
        if name in self.params:
            return _base(name)
        if name in self.definitions:
            return self._print(self.definitions[name])
        if name.endswith("_prev") and name[: -len("_prev")] in self.cell.states:
            return f"{_base(name[: -len('_prev')])}_{{t-1}}"
        if name.endswith("_pre"):
            return rf"{_base(name[: -len('_pre')])}^{{\mathrm{{pre}}}}_{{t}}"
        return f"{_base(name)}_{{t}}"

    def adjoint(self, name: str) -> str:
        """δ of a forward quantity, or of a state's incoming / product-borne adjoint."""
        for state in self.cell.states:
            if name == f"{state}_in":
                return rf"\delta {_base(state)}_{{t}}^{{\mathrm{{in}}}}"
        if name.endswith("_mm"):
            return rf"\delta\left({self.name(name[: -len('_mm')])}\right)^{{\mathrm{{mm}}}}"
        inner = self.name(name)
        if name in self.products or name in self.definitions:
            return rf"\delta\left({inner}\right)"
        return rf"\delta {inner}"

    def _print_Symbol(self, expr: sympy.Symbol, style: str = "plain") -> str:
        if expr.name.startswith("d_"):
            return self.adjoint(expr.name[2:])
        return self.name(expr.name)

    def _print_Function(self, expr: sympy.Function, exp: str | None = None) -> str:
        if isinstance(expr, (Activation, Indicator)):
            args = ", ".join(self._print(a) for a in expr.args)
            text = rf"{type(expr).latex_name}\left({args}\right)"
            return f"{text}^{{{exp}}}" if exp else text
        return super()._print_Function(expr, exp)

    def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
        terms = sorted(
            expr.args, key=lambda t: (term_rank(self.cell, t), sympy.default_sort_key(t))
        )
        # keep positive terms first so the line does not start with a minus sign
        terms = sorted(terms, key=lambda t: t.could_extract_minus_sign())
        out = self._print(terms[0])
        for term in terms[1:]:
            text = self._print(term)
            out += f" - {text[1:].lstrip()}" if text.startswith("-") else f" + {text}"
        return out

    def _print_Mul(self, expr: sympy.Mul) -> str:
        coeff, rest = expr.as_coeff_Mul()
        factors = sympy.Mul.make_args(rest)
        sign = ""
        if coeff < 0:
            sign, coeff = "-", -coeff
        parts = [] if coeff == 1 else [self._print(coeff)]
        vectors = []
        for f in sorted(factors, key=lambda f: factor_rank(self.cell, f)):
            text = self._print(f)
            if isinstance(f, sympy.Add):
                text = rf"\left({text}\right)"
            vectors.append(text)
        body = r" \odot ".join(vectors)
        return sign + " ".join([*parts, body] if body else parts)

    def _print_Pow(self, expr: sympy.Pow) -> str:
        base, exp = expr.args
        text = self._print(base)
        if isinstance(base, (sympy.Add, sympy.Mul)):
            text = rf"\left({text}\right)"
        if exp == -1:
            return rf"\frac{{1}}{{{self._print(base)}}}"
        return f"{text}^{{{self._print(exp)}}}"


def forward_latex(cell: CellSpec) -> list[str]:
    """One aligned line per equation of the cell, as written in its file."""
    printer = CellLatexPrinter(cell)
    lines = []
    for eq in cell.equations:
        if eq.auto:
            continue
        lhs = printer.name(eq.name)
        lines.append(rf"{lhs} &= {printer.doprint(eq.expr)}")
    return lines


def backward_latex(cell: CellSpec) -> list[str]:
    """The adjoint equations of one step, then the matrix-product and parameter gradients.

    `+=` marks a sum over steps (parameters) or a share that other lines add to.
    """
    derivation = derive(cell)
    kernel = build_kernel(cell, derivation)
    printer = CellLatexPrinter(cell, derivation)
    vectors = {p.name for p in cell.params if p.kind == "vector"}
    prevs = {prev_name(s) for s in cell.states}
    accumulate = r"\mathrel{+}="
    lines = []
    for adj in derivation.backward:
        if adj.expr == 0:
            continue
        lhs = printer.adjoint(adj.target)
        op = accumulate if adj.target in vectors | prevs else "="
        lines.append(rf"{lhs} &{op} {printer.doprint(adj.expr)}")
    for g in kernel.gemms:
        operand = printer.name(g.operand) if g.operand != cell.input else f"{cell.input}_{{t}}"
        if g.operand in printer.definitions:
            operand = rf"\left({operand}\right)"
        if g.operand == cell.input:
            target = rf"\delta {cell.input}_{{t}}"
        elif g.operand in prevs:
            target = printer.adjoint(g.operand)
        else:
            target = printer.adjoint(f"{g.operand}_mm")
        for matrix, product in zip(g.matrices, g.products, strict=True):
            d_product = printer.adjoint(product)
            lines.append(rf"\delta {_base(matrix)} &{accumulate} {d_product}^{{\top}} {operand}")
            lines.append(rf"{target} &{accumulate} {d_product} {_base(matrix)}")
    return lines


def document(lines: list[str]) -> str:
    """The lines in an `aligned` environment, ready for a display-math block."""
    body = " \\\\\n".join(f"  {line}" for line in lines)
    return "\\begin{aligned}\n" + body + "\n\\end{aligned}\n"
