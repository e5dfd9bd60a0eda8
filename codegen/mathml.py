"""MathML of the LaTeX that cellgen prints, so that a browser shows the same math with no script.

One source of truth: the LaTeX of `codegen.latex` (and each activation's `latex_name`) is
translated, for the small subset of LaTeX those produce: letters and digits, Greek letters,
`\\tanh`-like and `\\operatorname{...}` names, `\\mathrm`, accents, sub- and superscripts,
`\\frac`, `\\sqrt`, `\\sum` with limits, `\\left(`/`\\right)`, spacing and a few symbols. An unknown
command prints as its name, so new notation degrades to text rather than failing.
"""

from __future__ import annotations

import re
from html import escape

_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|[a-zA-Z]|[0-9]+(?:\.[0-9]+)?|\S", re.S)
GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ", "zeta": "ζ",
    "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
    "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "ϕ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Delta": "Δ", "Sigma": "Σ", "Phi": "Φ", "Omega": "Ω",
}  # fmt: skip
_SYMBOLS = {
    "odot": "⊙", "top": "⊤", "times": "×", "cdot": "⋅", "ldots": "…", "dots": "…",
    "partial": "∂", "to": "→", "le": "≤", "ge": "≥", "in": "∈", "infty": "∞", "pm": "±",
}  # fmt: skip
_NAMED = {"tanh", "sinh", "cosh", "exp", "log", "ln", "max", "min", "sin", "cos", "sgn"}
_ACCENTS = {"tilde": "˜", "hat": "^", "bar": "¯", "dot": "˙", "vec": "→"}
_SPACES = {"quad": "1em", "qquad": "2em", ",": "0.1667em", ":": "0.2222em", ";": "0.2778em"}
_BIG = {"sum": "∑", "prod": "∏"}
_DOUBLE_STRUCK = {"1": "𝟙", "R": "ℝ", "N": "ℕ", "Z": "ℤ"}


def to_mathml(latex: str) -> str:
    """The MathML content (no <math> element) of one LaTeX formula."""
    return _Parser(latex).formula()


def inline(latex: str) -> str:
    return f"<math>{to_mathml(latex)}</math>"


def block(rows: list[tuple[str, list[str]]]) -> str:
    """Aligned rows, `lhs = rhs` with continuation lines, as a display-math table."""
    out = []
    for lhs, lines in rows:
        out.append(
            f'<mtr><mtd class="lhs">{to_mathml(lhs)}</mtd>'
            f'<mtd class="rhs"><mo>=</mo>{to_mathml(lines[0])}</mtd></mtr>'
        )
        for line in lines[1:]:
            out.append(
                '<mtr><mtd class="lhs"></mtd><mtd class="rhs"><mspace width="2em"></mspace>'
                f"{to_mathml(line)}</mtd></mtr>"
            )
    return f'<math display="block"><mtable>{"".join(out)}</mtable></math>'


class _Parser:
    def __init__(self, latex: str) -> None:
        self.tokens = _TOKEN.findall(latex)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def formula(self) -> str:
        return _row(self.sequence(stop=None))

    def sequence(self, stop: str | None) -> list[str]:
        """Atoms with their scripts, up to the token `stop` (consumed) or the end."""
        items: list[str] = []
        while self.peek() is not None and self.peek() != stop:
            token = self.peek()
            if token in ("_", "^"):
                base = items.pop() if items else "<mrow></mrow>"
                items.append(self.scripts(base))
                continue
            items.append(self.atom())
        if stop is not None and self.peek() == stop:
            self.take()
        return items

    def group(self) -> str:
        """A braced group or a single atom, as one node."""
        if self.peek() == "{":
            self.take()
            return _row(self.sequence(stop="}"))
        return self.atom() if self.peek() is not None else "<mrow></mrow>"

    def text_arg(self) -> str:
        """A braced argument as text (for \\operatorname, \\mathrm)."""
        if self.peek() != "{":
            return self.take() if self.peek() is not None else ""
        self.take()
        out = []
        depth = 0
        while self.peek() is not None:
            token = self.take()
            if token == "}" and depth == 0:
                break
            depth += {"{": 1, "}": -1}.get(token, 0)
            out.append(token[1:] if token.startswith("\\") and len(token) == 2 else token)
        return "".join(out)

    def scripts(self, base: str) -> str:
        sub = sup = None
        while self.peek() in ("_", "^"):
            if self.take() == "_":
                sub = self.group()
            else:
                sup = self.group()
        big = base.startswith("<mo largeop")
        if sub is not None and sup is not None:
            tag = "munderover" if big else "msubsup"
            return f"<{tag}>{base}{sub}{sup}</{tag}>"
        if sub is not None:
            tag = "munder" if big else "msub"
            return f"<{tag}>{base}{sub}</{tag}>"
        tag = "mover" if big else "msup"
        return f"<{tag}>{base}{sup}</{tag}>"

    def atom(self) -> str:
        token = self.take()
        if token == "{":
            return _row(self.sequence(stop="}"))
        if token.startswith("\\"):
            return self.command(token[1:])
        if token.isalpha():
            return f"<mi>{escape(token)}</mi>"
        if token[0].isdigit():
            return f"<mn>{token}</mn>"
        return self.operator(token, stretchy=False)

    def operator(self, token: str, stretchy: bool) -> str:
        """An operator with its form said outright: MathML guesses it from the position in
        the row, and guesses `(` after `σ` as infix, with wide spaces around it."""
        stretch = "" if stretchy else ' stretchy="false"'
        if token in "([":
            return f'<mo form="prefix"{stretch}>{token}</mo>'
        if token in ")]":
            return f'<mo form="postfix"{stretch}>{token}</mo>'
        if token == "/":
            return '<mo lspace="0" rspace="0">/</mo>'
        if token in "+-=":
            return f'<mo form="infix">{"−" if token == "-" else token}</mo>'
        return f"<mo>{escape(token)}</mo>"

    def command(self, name: str) -> str:
        if name in GREEK:
            return f"<mi>{GREEK[name]}</mi>"
        if name in _SYMBOLS:
            return f"<mo>{_SYMBOLS[name]}</mo>"
        if name in _NAMED:
            return f"<mi>{name}</mi>"
        if name in _BIG:
            return f'<mo largeop="true" movablelimits="false">{_BIG[name]}</mo>'
        if name in _SPACES:
            return f'<mspace width="{_SPACES[name]}"></mspace>'
        if name in ("operatorname", "mathrm", "text", "mathit"):
            text = escape(self.text_arg())
            if name == "text":
                return f"<mtext>{text}</mtext>"
            variant = ' mathvariant="normal"' if len(text) == 1 and name != "mathit" else ""
            return f"<mi{variant}>{text}</mi>"
        if name in _ACCENTS:
            return f'<mover accent="true">{self.group()}<mo>{_ACCENTS[name]}</mo></mover>'
        if name == "mathbb":
            text = self.text_arg()
            return f"<mi>{''.join(_DOUBLE_STRUCK.get(c, c) for c in text)}</mi>"
        if name == "frac":
            return f"<mfrac>{self.group()}{self.group()}</mfrac>"
        if name == "sqrt":
            return f"<msqrt>{self.group()}</msqrt>"
        if name in ("mathrel", "mathbin", "mathop"):
            return f"<mo>{self.text_arg()}</mo>"
        if name in ("left", "right", "bigl", "bigr", "Bigl", "Bigr"):
            if self.peek() in (None, "."):
                return self._skip()
            return self.operator(self.take(), stretchy=name in ("left", "right"))
        if name in ("mathopen", "mathclose"):
            self.group()
            return ""
        if name in ("_", "{", "}", "%", "&", "#", "$"):
            return f"<mi>{escape(name)}</mi>"
        if name in ("!", " "):
            return ""
        return f"<mi>{escape(name)}</mi>"

    def _skip(self) -> str:
        if self.peek() == ".":
            self.take()
        return ""


def _row(items: list[str]) -> str:
    items = [i for i in items if i]
    return items[0] if len(items) == 1 else f"<mrow>{''.join(items)}</mrow>"
