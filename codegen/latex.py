"""LaTeX of a cell's equations and of its backward, to paste into a document or compile as is.

Conventions of the papers: column vectors, `W x` for the product, ⊙ (`\\odot`) for the
elementwise product, σ for the logistic sigmoid, time subscripts t and t-1, δq for the gradient
of the loss with respect to q, a_{g,t} for the argument of gate g's activation. The output needs
the packages amsmath (align*) and amssymb (the indicator 𝟙 of relu and hard_sigmoid).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import sympy
from sympy.printing.latex import LatexPrinter

from .activations import Activation, Indicator, rsqrt, sqrt
from .bptt import PRE, Math, Note, Outer, Row, SumOverSteps, SumOverUnits, Transposed, bptt
from .cell import CellSpec, elementwise_size
from .derive import Derivation
from .reductions import Reduction, units, units_size
from .text import factor_rank, term_rank
from .written_order import WrittenOrder

PACKAGES = ("amsmath", "amssymb")
_ACCENTS = {"tilde": r"\tilde", "hat": r"\hat", "bar": r"\bar"}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "lambda",
    "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega",
}  # fmt: skip
ROW_WIDTH = 54  # the width(...) of the widest row that fits a default article page


def _base(name: str) -> str:
    """`c_tilde` -> `\\tilde{c}`, `h` -> `h`, `W_f` -> `W_{f}`, `gate` -> `\\mathrm{gate}`."""
    head, _, tail = name.partition("_")
    core = f"\\{head}" if head in _GREEK else head if len(head) == 1 else rf"\mathrm{{{head}}}"
    if tail in _ACCENTS:
        return f"{_ACCENTS[tail]}{{{core}}}"
    if tail and (head == core or head in _GREEK):  # W_f, gamma_h_f: W_{f}, \gamma_{h,f}
        return f"{core}_{{{tail.replace('_', ',')}}}"
    if tail:
        return rf"\mathrm{{{name}}}".replace("_", r"\_")
    return core


def _bracket(text: str) -> str:
    """Square brackets: the vector whose units a sum runs over."""
    if r"\frac" in text or r"\sum" in text:
        return rf"\left[{text}\right]"
    return f"[{text}]"


def _paren(text: str) -> str:
    """Parentheses; stretchy only around tall content, where plain ones would look too small."""
    if r"\frac" in text or r"\sum" in text:
        return rf"\left({text}\right)"
    return f"({text})"


class CellLatexPrinter(LatexPrinter):
    """Prints a cell's symbols as the papers do; `d_<name>` symbols print as δ."""

    def __init__(self, cell: CellSpec, derivation: Derivation | None = None) -> None:
        super().__init__({"mul_symbol": None})
        self.cell = cell
        self.products = {m.name: m for m in cell.matmuls}
        self.params = {p.name for p in cell.params}
        self.param_order = {p.name: k for k, p in enumerate(cell.params)}
        self.definitions: dict[str, sympy.Expr] = {}
        self.written: WrittenOrder | None = None  # the file as written, for the forward
        self.source: dict[sympy.Expr, ast.AST] = {}  # pieces of the file being printed
        self.owner = derivation.names.owner if derivation is not None else (lambda name: None)
        self.scalars = set(cell.scalars) | (derivation.scalars if derivation is not None else set())
        self.derivation = derivation
        if derivation is not None:
            sources = {e.name for e in cell.equations}
            for p in derivation.forward:
                if p.name not in sources and not PRE.match(p.name):
                    self.definitions[p.name] = p.expr
        for e in cell.equations:
            if e.auto:
                self.definitions[e.name] = e.expr

    # names -------------------------------------------------------------------------------

    def name(self, name: str) -> str:
        size = units_size(sympy.Symbol(name, integer=True, positive=True))
        if size is not None:
            return size  # a mean's count
        if name in self.products:
            m = self.products[name]
            operand = self._print(m.operand_expr)
            if not isinstance(m.operand_expr, sympy.Symbol):
                operand = _paren(operand)
            return f"{_base(m.matrix)} {operand}"
        if name in self.params:
            return _base(name)
        if name in self.definitions:
            return self._print(self.definitions[name])
        if name.endswith("_prev") and name[: -len("_prev")] in self.cell.states:
            return f"{_base(name[: -len('_prev')])}_{{t-1}}"
        pre = PRE.match(name)
        if pre:
            k = f"^{{({pre['k']})}}" if pre["k"] else ""
            return f"a{k}_{{{_base(pre['head'])},t}}"
        base = _base(name)
        if base.endswith("}") and "_{" in base and not base.startswith("\\mathrm"):
            return f"{base[:-1]},t}}"  # mu_r: \mu_{r,t}
        return f"{base}_{{t}}"

    def adjoint(self, name: str) -> str:
        """δ of a forward quantity."""
        inner = self.name(name)
        if name in self.products or name in self.definitions:
            return rf"\delta {_paren(inner)}"
        return rf"\delta {inner}"

    def _print_Symbol(self, expr: sympy.Symbol, style: str = "plain") -> str:
        owner = self.owner(expr.name)  # a symbol of the backward: what it is the adjoint of
        if owner is None:
            return self.name(expr.name)
        kind, symbol = owner
        if kind == "incoming":
            return rf"\delta {_base(symbol)}_{{t}}^{{\mathrm{{in}}}}"
        return self.adjoint(symbol)

    # functions and the nodes of the backward ---------------------------------------------

    def _print_Float(self, expr: sympy.Float) -> str:
        """A float as its shortest decimal: 0.5, 10^{-5}, 2.5 \\cdot 10^{-7} (SymPy writes
        1.0 \\cdot 10^{-5})."""
        text = repr(float(expr))
        if not text[-1].isdigit():  # inf, nan
            return super()._print_Float(expr)
        if "e" not in text:
            return text
        mantissa, exponent = text.split("e")
        sign, mantissa = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
        power = f"10^{{{int(exponent)}}}"
        return sign + (power if float(mantissa) == 1 else f"{mantissa} \\cdot {power}")

    def _print_Function(self, expr: sympy.Function, exp: str | None = None) -> str:
        if isinstance(expr, (sqrt, rsqrt)):
            root = rf"\sqrt{{{self._print(expr.args[0])}}}"
            root = root if isinstance(expr, sqrt) else rf"\frac{{1}}{{{root}}}"
            return rf"\left({root}\right)^{{{exp}}}" if exp else root
        if isinstance(expr, Reduction):
            return self._reduction(expr)
        if isinstance(expr, (Activation, Indicator)):
            node = self.source.get(expr)
            if isinstance(node, ast.Call) and len(node.args) == 1:
                self.source[expr.args[0]] = node.args[0]
            args = ", ".join(self._print(a) for a in expr.args)
            power = f"^{{{exp}}}" if exp else ""
            return f"{type(expr).latex_name}{power}{_paren(args)}"
        return super()._print_Function(expr, exp)

    def _print_Transposed(self, expr: Transposed) -> str:
        matrix, vector = expr.args
        return rf"{_base(matrix.name)}^{{\top}} {self._operand(vector)}"

    def _print_Outer(self, expr: Outer) -> str:
        left, right = expr.args
        return rf"{self._operand(left)}\, {self._operand(right)}^{{\top}}"

    def _reduction(self, expr: Reduction) -> str:
        """mean(a, b) as (1 / 2H) sum_j [a; b]_j: the units of the arguments, stacked."""
        stacked = "; ".join(self._print(a) for a in expr.args)
        return f"{self.reduction_head(expr)}{_bracket(stacked)}_{{j}}"

    def reduction_head(self, expr: Reduction) -> str:
        """What precedes the stacked vectors: a sum over j, after 1 / (4 H) for a mean."""
        count = self._print(sympy.Add(*(units(self._size(a)) for a in expr.args)))
        total = rf"\sum_{{j=1}}^{{{count}}} "
        return rf"\frac{{1}}{{{count}}} {total}" if expr.func.__name__ == "mean" else total

    def _print_SumOverUnits(self, expr: SumOverUnits) -> str:
        head, tail = self.sum_over_units(expr)
        return f"{head}{_bracket(self._print(expr.args[0]))}{tail}"

    def sum_over_units(self, expr: SumOverUnits) -> tuple[str, str]:
        size = self.derivation.expr_size(expr.args[0]) if self.derivation is not None else "H"
        return rf"\sum_{{j=1}}^{{{self._print(units(size))}}} ", "_{j}"

    def _size(self, expr: sympy.Expr) -> str:
        """The size name of a vector expression of the cell's symbols."""
        sizes = dict(self.cell.symbol_sizes)
        size = "1"
        for s in expr.free_symbols:
            size = elementwise_size(size, sizes.get(s.name, "H")) or size
        return size

    def _print_SumOverSteps(self, expr: SumOverSteps) -> str:
        (body,) = expr.args
        text = self._print(body)
        return rf"\sum_{{t=1}}^{{T}} {_paren(text) if isinstance(body, sympy.Add) else text}"

    def _operand(self, expr: sympy.Expr) -> str:
        text = self._print(expr)
        compound = isinstance(expr, (sympy.Add, sympy.Mul)) or (
            isinstance(expr, sympy.Symbol)
            and (expr.name in self.definitions or expr.name[2:] in self.definitions)
        )
        named = isinstance(expr, sympy.Symbol) and text.startswith((r"\delta (", r"\delta \left("))
        if compound and not named:
            return _paren(text)
        return text

    # arithmetic ---------------------------------------------------------------------------

    def terms(self, expr: sympy.Add) -> list[str]:
        """The printed terms of a sum in reading order, each with its sign (`+ a`, `- b`)."""
        return [text for text, _ in self.signed_terms(expr)]

    def signed_terms(self, expr: sympy.Add) -> list[tuple[str, sympy.Expr]]:
        """The terms of a sum in reading order: (`+ a` printed, a)."""
        if self.written is not None and expr in self.source:
            terms = self._as_written(expr.args, self.source[expr], ast.Add)
        else:
            terms = sorted(
                expr.args,
                key=lambda t: (
                    self._backward_rank(t),
                    term_rank(self.cell, t),
                    sympy.default_sort_key(t),
                ),
            )
        # keep positive terms first so the line does not start with a minus sign
        terms = sorted(terms, key=lambda t: t.could_extract_minus_sign())
        out = []
        for term in terms:
            text = self._print(term)
            out.append((f"- {text[1:].lstrip()}" if text.startswith("-") else f"+ {text}", term))
        return out

    def _backward_rank(self, term: sympy.Expr) -> tuple[int, int]:
        """In the backward: incoming adjoints, products carried back (in the file's order of
        their matrices), then the rest."""
        owner = self.owner(term.name) if isinstance(term, sympy.Symbol) else None
        if owner is not None and owner[0] == "incoming":
            return (0, 0)
        if isinstance(term, Transposed):
            return (1, self.param_order[term.args[0].name])
        return (2, 0)

    def _print_Add(self, expr: sympy.Add, order: str | None = None) -> str:
        return " ".join(self.terms(expr))[2:]

    def _as_written(self, parts: tuple, node: ast.AST, kind: type[ast.operator]) -> list:
        """Terms or factors in the order the file writes them; each remembers its piece."""
        assert self.written is not None
        out = []
        for part, piece in self.written.match(parts, node, kind):
            if piece is not None:
                self.source[part] = piece
            out.append(part)
        return out

    def _print_Mul(self, expr: sympy.Mul) -> str:
        coeff, rest = expr.as_coeff_Mul()
        factors = sympy.Mul.make_args(rest)
        sign = ""
        if coeff < 0:
            sign, coeff = "-", -coeff
        parts = [] if coeff == 1 else [self._print(coeff)]
        if self.written is not None and expr in self.source:
            ordered = self._as_written(factors, self.source[expr], ast.Mult)
        else:
            ordered = sorted(factors, key=self._factor_rank)
        below = [f.base**-f.exp for f in ordered if f.is_Pow and f.exp.is_negative]
        if below and all(self._scalar(f) for f in below):  # a normalisation: a fraction
            above = [f for f in ordered if not (f.is_Pow and f.exp.is_negative)]
            numerator = self._factors(above) or "1"
            if coeff.is_Rational and coeff.q != 1:
                parts = [] if coeff.p == 1 else [self._print(coeff.p)]
                below.insert(0, sympy.Integer(coeff.q))
            numerator = " ".join([*parts, numerator]) if numerator != "1" or not parts else parts[0]
            return sign + rf"\frac{{{numerator}}}{{{self._factors(below)}}}"
        body = self._factors(ordered)
        return sign + " ".join([*parts, body] if body else parts)

    def _factors(self, factors: list) -> str:
        """Factors joined by the elementwise product; numbers by juxtaposition."""
        vectors: list[str] = []
        counts: list[str] = []  # numbers and counts multiply by juxtaposition: 4 H
        for f in factors:
            text = self._print(f)
            if f.is_Number or (isinstance(f, sympy.Symbol) and units_size(f) is not None):
                counts.append(text)
            else:
                vectors.append(_paren(text) if isinstance(f, sympy.Add) else text)
        return " ".join([*counts, r" \odot ".join(vectors)] if vectors else counts)

    def _scalar(self, expr: sympy.Expr) -> bool:
        """A per-row scalar (a count, a reduction, a function of them): the denominator of a
        normalisation, printed as a fraction."""
        return all(units_size(s) is not None or s.name in self.scalars for s in expr.free_symbols)

    def _factor_rank(self, factor: sympy.Expr) -> tuple:
        return factor_rank(self.cell, factor)

    def _print_Pow(self, expr: sympy.Pow) -> str:
        base, exp = expr.args
        if exp.is_negative:
            return rf"\frac{{1}}{{{self._print(base**-exp)}}}"
        shown = self.definitions.get(base.name, base) if isinstance(base, sympy.Symbol) else base
        if isinstance(shown, (Activation, Indicator)):
            return self._print_Function(shown, exp=self._print(exp))
        text = self._print(base)
        if isinstance(base, (sympy.Add, sympy.Mul)) or (
            isinstance(base, sympy.Symbol) and base.name in self.definitions
        ):
            text = _paren(text)
        return f"{text}^{{{self._print(exp)}}}"


# rows, notes and the documents they go into ---------------------------------------------


@dataclass(frozen=True)
class Equations:
    """Aligned rows: `lhs`, then `rhs` over one or more lines (a long sum is broken)."""

    rows: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Paragraph:
    """Text with inline math between `$` signs."""

    text: str


Block = Equations | Paragraph


def _row(printer: CellLatexPrinter, lhs: str, rhs: sympy.Expr) -> tuple[str, tuple[str, ...]]:
    """One row; a sum too wide for the page (or an activation of one) continues on further
    lines, split at + and -."""
    whole = printer.doprint(rhs)
    if width(lhs + whole) <= ROW_WIDTH:
        return lhs, (whole,)
    head = tail = ""
    inner = rhs
    if isinstance(rhs, Activation) and isinstance(rhs.args[0], sympy.Add):
        printer.doprint(rhs)  # records where the file writes the argument's terms
        head, tail, inner = rf"{type(rhs).latex_name}\bigl(", r"\bigr)", rhs.args[0]
    pieces = _pieces(printer, inner)
    if pieces is None:
        return lhs, (whole,)
    lines: list[str] = []
    for term in pieces:
        room = ROW_WIDTH - (width(lhs + head) if not lines else 6)
        if lines and width(lines[-1] + term) <= room:
            lines[-1] += f" {term}"
        else:
            lines.append(term)
    lines[0] = head + _unsigned(lines[0])
    lines[-1] += tail
    return lhs, tuple(lines)


def _unsigned(piece: str) -> str:
    """A first piece without its `+ `; a minus stays."""
    return piece[2:] if piece.startswith("+ ") else f"-{piece[2:]}"


def _pieces(printer: CellLatexPrinter, expr: sympy.Expr) -> list[str] | None:
    """A wide expression in pieces that may go on lines of their own (each but the first
    starting with + or -, or continuing a bracket), or None where it cannot be broken: a sum at
    its terms, and, within a term too wide for a line, a product carried back, a sum over steps
    or over units, or a reduction over several vectors, at their terms or vectors."""
    if isinstance(expr, sympy.Add):
        out = []
        for text, term in printer.signed_terms(expr):
            inner = _pieces(printer, term) if width(text) > ROW_WIDTH - 6 else None
            if inner is None or text.startswith("-"):
                out.append(text)
            else:
                out += [f"+ {inner[0][2:]}", *inner[1:]]
        return out
    head, body, tail = _wrapped(printer, expr)
    if body is None:
        return None
    inner = _pieces(printer, body) if isinstance(body, sympy.Add) else None
    if isinstance(body, tuple):  # the stacked vectors of a reduction
        last = len(body) - 1
        inner = [printer.doprint(v) + (";" if k < last else "") for k, v in enumerate(body)]
        inner[0] = f"+ {inner[0]}"
    if inner is None:
        return None
    if len(inner) == 1:
        return [f"+ {head}{_unsigned(inner[0])}{tail}"]
    return [f"+ {head}{_unsigned(inner[0])}", *inner[1:-1], f"{inner[-1]}{tail}"]


def _wrapped(printer: CellLatexPrinter, expr: sympy.Expr) -> tuple[str, object, str]:
    """(head, what it wraps, tail) of an expression that wraps a sum, else ("", None, "")."""
    if isinstance(expr, Transposed) and isinstance(expr.args[1], sympy.Add):
        matrix = printer.doprint(sympy.Symbol(expr.args[0].name))
        return rf"{matrix}^{{\top}} \bigl(", expr.args[1], r"\bigr)"
    if isinstance(expr, SumOverSteps):
        (body,) = expr.args
        head = r"\sum_{t=1}^{T} "
        if isinstance(body, Outer) and isinstance(body.args[0], sympy.Add):
            right = printer._operand(body.args[1])
            return rf"{head}\bigl(", body.args[0], rf"\bigr)\, {right}^{{\top}}"
        if isinstance(body, sympy.Add):
            return rf"{head}\bigl(", body, r"\bigr)"
    if isinstance(expr, SumOverUnits) and isinstance(expr.args[0], sympy.Add):
        head, tail = printer.sum_over_units(expr)
        return rf"{head}\bigl[", expr.args[0], rf"\bigr]{tail}"
    if isinstance(expr, Reduction) and len(expr.args) > 1:
        return rf"{printer.reduction_head(expr)}\bigl[", tuple(expr.args), r"\bigr]_{j}"
    return "", None, ""


def width(latex: str) -> float:
    """A rough width of typeset math, in letters: a script counts 0.7 a character, a binary
    operator with its spaces 2.5, a command (\\delta, \\tanh) by what it prints."""
    text = re.sub(r"\\(left|right|bigl|bigr|mathrm|operatorname|mathopen|mathclose)\b", "", latex)
    text = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", lambda m: max(m[1], m[2], key=len), text)
    scripts = sum(
        len(re.sub(r"\\[a-zA-Z]+", "x", s)) for s in re.findall(r"[_^]\{([^{}]*)\}", text)
    )
    operators = len(re.findall(r"\\odot|\\times|(?<![_^{])[-+=]", text))
    names = sum(len(m) - 2 for m in re.findall(r"\\(?:tanh|exp|log|sgn)\b", text))
    text = re.sub(r"\\[a-zA-Z]+", "x", re.sub(r"[_^]\{[^{}]*\}", "", text))
    text = re.sub(r"[{}\s,\\]", "", text)
    return len(text) + 0.7 * scripts + 1.5 * operators + names


def forward_blocks(cell: CellSpec) -> list[Block]:
    """One row per equation of the cell, as written in its file."""
    printer = CellLatexPrinter(cell)
    printer.written = WrittenOrder(cell)
    rows = []
    for eq in cell.equations:
        if eq.auto:
            continue
        written = printer.written.sources.get(eq.name)
        printer.source = {eq.expr: written} if written is not None else {}
        rows.append(_row(printer, printer.name(eq.name), eq.expr))
    return [Equations(tuple(rows))]


def backward_blocks(cell: CellSpec) -> list[Block]:
    """The backward of one step: notes saying what is given, then rows to read top to bottom."""
    view = bptt(cell)
    printer = CellLatexPrinter(cell, view.derivation)
    blocks: list[Block] = []
    rows: list[tuple[str, tuple[str, ...]]] = []
    for item in view.items:
        if isinstance(item, Row):
            rows.append(_row(printer, printer.doprint(item.lhs), item.rhs))
            continue
        if rows:
            blocks.append(Equations(tuple(rows)))
            rows = []
        blocks.append(Paragraph(note_text(printer, item)))
    if rows:
        blocks.append(Equations(tuple(rows)))
    return blocks


def note_text(printer: CellLatexPrinter, note: Note) -> str:
    """A note as text with inline math between $ signs."""
    out = []
    for part in note.parts:
        if isinstance(part, str):
            out.append(part)
        else:
            math = part.latex if isinstance(part, Math) else printer.doprint(part)
            out.append(f"${math}$")
    return "".join(out).replace("$$", "")


def aligned_rows(rows: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    """`lhs &= rhs` lines, continuation lines indented under the right-hand side."""
    out = []
    for lhs, lines in rows:
        out.append(f"{lhs} &= {lines[0]}")
        out += [rf"&\quad {line}" for line in lines[1:]]
    return out


_TEXT_ESCAPES = {c: "\\" + c for c in "#$%&_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "⊙": r"$\odot$",
    "−": "-",
    "σ": r"$\sigma$",
    "δ": r"$\delta$",
    "→": r"$\to$",
    "×": r"$\times$",
}


def tex_escape(text: str) -> str:
    """Plain text (a description, a reference) for LaTeX's text mode under pdflatex."""
    out = []
    for ch in text:
        if ch in _TEXT_ESCAPES:
            out.append(_TEXT_ESCAPES[ch])
        else:
            out.append(ch if ord(ch) < 0x250 else "?")  # beyond Latin, pdflatex has no glyph
    return "".join(out)


def _tex_text(text: str) -> str:
    """A note: plain text, and LaTeX math between $ signs."""
    pieces = text.split("$")
    for k in range(0, len(pieces), 2):
        pieces[k] = tex_escape(pieces[k])
    return "$".join(pieces)


def paste(blocks: list[Block]) -> str:
    """Body text for a document with amsmath and amssymb: paragraphs and align* displays.

    Each display is in a group with \\allowdisplaybreaks, so that a long backward breaks
    across pages without changing the rest of the document.
    """
    out = []
    for block in blocks:
        if isinstance(block, Paragraph):
            out.append(_tex_text(block.text) + "\n")
        else:
            body = " \\\\\n".join(f"  {line}" for line in aligned_rows(block.rows))
            out.append("{\\allowdisplaybreaks\n\\begin{align*}\n" + body + "\n\\end{align*}}\n")
    return "\n".join(out)


def standalone(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    """A whole document that pdflatex compiles as is."""
    body = "\n".join(f"\\section*{{{tex_escape(h)}}}\n{paste(b)}" for h, b in sections)
    return (
        "\\documentclass{article}\n"
        f"\\usepackage{{{','.join(PACKAGES)}}}\n"
        "\\begin{document}\n"
        f"\\noindent\\textbf{{{tex_escape(title)}}}\n\n"
        f"{body}"
        "\\end{document}\n"
    )
