"""A derivation sheet: one page per cell, in HTML (MathML), Markdown, LaTeX or PDF.

The page holds the cell's description and reference, its parameters and their shapes, a
diagram, the forward equations, what the backward reads from the forward, and the backward.
HTML is one self-contained file (MathML and inline SVG: no script, no network); Markdown uses
`$$` blocks as GitHub and Jupyter render them, with the diagram beside it as an .svg file; the
LaTeX document draws the diagram in LaTeX's own picture mode, so pdflatex needs no extra package.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path

from . import diagram, mathml
from .bptt import saved_values
from .cell import CellSpec
from .derive import derive
from .errors import CellgenError
from .latex import (
    PACKAGES,
    Block,
    CellLatexPrinter,
    Paragraph,
    aligned_rows,
    backward_blocks,
    forward_blocks,
    paste,
    tex_escape,
)

FORMATS = (".html", ".md", ".tex", ".pdf")
_SHAPES = {"H": "H", "I": "I"}


@dataclass(frozen=True)
class Sheet:
    """What a page says, in LaTeX pieces that each format then spells."""

    cell: CellSpec
    params: tuple[tuple[str, str, str], ...]  # (symbol, shape, where it is used), LaTeX
    forward: list[Block]
    saved: tuple[str, ...]  # LaTeX of each value the backward reads
    backward: list[Block]


def build(cell: CellSpec) -> Sheet:
    derivation = derive(cell)
    printer = CellLatexPrinter(cell, derivation)
    uses: dict[str, list[str]] = {}
    products = {m.name: m.matrix for m in cell.matmuls}
    for eq in cell.equations:
        for s in sorted(eq.expr.free_symbols, key=lambda s: s.name):
            used = products.get(s.name, s.name)
            if not eq.auto and eq.name not in uses.setdefault(used, []):
                uses[used].append(eq.name)
    for eq in cell.equations:  # a product inside an auto equation counts for its user
        if eq.auto:
            for m in cell.matmuls:
                if m.operand == eq.name:
                    users = [e.name for e in cell.equations if m.name in _names(e)]
                    uses.setdefault(m.matrix, []).extend(
                        u for u in users if u not in uses[m.matrix]
                    )
    params = tuple(
        (
            printer.name(p.name),
            r" \times ".join(p.shape),
            ", ".join(printer.name(u) for u in uses.get(p.name, [])),
        )
        for p in cell.params
    )
    saved = tuple(printer.name(n) for n in saved_values(cell, derivation))
    return Sheet(cell, params, forward_blocks(cell), saved, backward_blocks(cell))


def _names(eq) -> set[str]:
    return {s.name for s in eq.expr.free_symbols}


def _sizes_sentence(cell: CellSpec) -> str:
    """`Input $x_{t}$ of size $I$; states $h, c$ of size $H$.`, with each state's own size
    when they differ, an input used elementwise (I = H) and an output that is no state."""
    name = CellLatexPrinter(cell).name
    size = dict(cell.symbol_sizes)
    x = f"Input ${name(cell.input)}$ of size ${size[cell.input]}$"
    if cell.input_hidden:
        x += " (used elementwise: $I = H$)"
    if len({size[s] for s in cell.states}) == 1:
        states = (
            f"states ${', '.join(name(s) for s in cell.states)}$ of size ${size[cell.states[0]]}$"
        )
    else:
        states = "states " + " and ".join(f"${name(s)}$ of size ${size[s]}$" for s in cell.states)
    output = "" if cell.output in cell.states else f"; output ${name(cell.output)}$"
    output += f" of size ${size[cell.output]}$" if output else ""
    return f"{x}; {states}{output}."


# HTML ------------------------------------------------------------------------------------

_CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 52em; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 0.15em 0.8em; text-align: left;
        border-bottom: 1px solid #ddd; }
math { font-family: "Latin Modern Math", "STIX Two Math", "DejaVu Math TeX Gyre", math; }
math[display="block"] { margin: 0.8em 0; font-size: 1.1em; }
mtd.lhs { text-align: right; padding: 0.25em 0; } mtd.rhs { text-align: left; padding: 0.25em 0; }
figure { margin: 1em 0; overflow-x: auto; } figcaption { font-size: 0.9em; color: #555; }
.diagram { max-width: 100%; height: auto; } .diagram.wide { max-width: none; }
"""


def _html_text(text: str) -> str:
    """A note: text with inline math between $ signs, as HTML with MathML."""
    pieces = text.split("$")
    return "".join(mathml.inline(p) if k % 2 else escape(p) for k, p in enumerate(pieces))


def _html_blocks(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Paragraph):
            out.append(f"<p>{_html_text(b.text)}</p>")
        else:
            out.append(mathml.block([(lhs, list(lines)) for lhs, lines in b.rows]))
    return "\n".join(out)


def html(sheet: Sheet) -> str:
    cell = sheet.cell
    rows = "\n".join(
        f"<tr><td>{mathml.inline(s)}</td><td>{mathml.inline(shape)}</td>"
        f"<td>{_html_text(f'${u}$') if u else ''}</td></tr>"
        for s, shape, u in sheet.params
    )
    saved = ", ".join(mathml.inline(s) for s in sheet.saved)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(cell.name)}: derivation sheet</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(cell.name)}</h1>
<p>{escape(cell.description)}</p>
<p>Reference: {escape(cell.reference)}. Equations: <code>{escape(cell.source)}</code>.</p>
<h2>Parameters</h2>
<p>{_html_text(_sizes_sentence(cell))}</p>
<table><tr><th>parameter</th><th>shape</th><th>used in</th></tr>
{rows}
</table>
<h2>One step of the cell</h2>
<figure>{diagram.svg(cell)}
<figcaption>{escape(diagram.CAPTION)}</figcaption></figure>
<h2>Forward</h2>
{_html_blocks(sheet.forward)}
<h2>What the forward keeps for the backward</h2>
<p>Besides the inputs and the states at every step: {saved or "nothing else"}.</p>
<h2>Backward</h2>
{_html_blocks(sheet.backward)}
</body>
</html>
"""


# Markdown --------------------------------------------------------------------------------


def _md_blocks(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Paragraph):
            out.append(b.text)
        else:
            body = " \\\\\n".join(aligned_rows(b.rows))
            out.append(f"$$\n\\begin{{aligned}}\n{body}\n\\end{{aligned}}\n$$")
    return "\n\n".join(out)


def markdown(sheet: Sheet, svg_name: str | None) -> str:
    cell = sheet.cell
    rows = "\n".join(
        f"| ${s}$ | ${shape}$ | {f'${u}$' if u else ''} |" for s, shape, u in sheet.params
    )
    picture = (
        f"## One step of the cell\n\n![{cell.name}: one step]({svg_name})\n\n{diagram.CAPTION}\n\n"
        if svg_name
        else ""
    )
    saved = ", ".join(f"${s}$" for s in sheet.saved) or "nothing else"
    return (
        f"# {cell.name}\n\n{cell.description}\n\nReference: {cell.reference}. "
        f"Equations: `{cell.source}`.\n\n"
        f"## Parameters\n\n{_sizes_sentence(cell)}\n\n"
        f"| parameter | shape | used in |\n| --- | --- | --- |\n{rows}\n\n"
        f"{picture}"
        f"## Forward\n\n{_md_blocks(sheet.forward)}\n\n"
        f"## What the forward keeps for the backward\n\n"
        f"Besides the inputs and the states at every step: {saved}.\n\n"
        f"## Backward\n\n{_md_blocks(sheet.backward)}\n"
    )


# LaTeX and PDF ---------------------------------------------------------------------------


def tex(sheet: Sheet) -> str:
    cell = sheet.cell
    rows = "\n".join(
        f"${s}$ & ${shape}$ & {f'${u}$' if u else ''} \\\\" for s, shape, u in sheet.params
    )
    saved = ", ".join(f"${s}$" for s in sheet.saved) or "nothing else"
    return (
        "\\documentclass{article}\n"
        f"\\usepackage{{{','.join(PACKAGES)}}}\n"
        "\\usepackage[margin=2.5cm]{geometry}\n"
        "\\allowdisplaybreaks\n"
        "\\begin{document}\n"
        "\\sloppy\n"
        f"\\section*{{{tex_escape(cell.name)}}}\n"
        f"\\noindent {tex_escape(cell.description)}\n\n"
        f"\\noindent Reference: {tex_escape(cell.reference)}.\n\n"
        f"\\noindent Equations: \\texttt{{{tex_escape(cell.source)}}}.\n"
        "\\subsection*{Parameters}\n"
        f"{_sizes_sentence(cell)}\n\n"
        "\\begin{tabular}{lll}\nparameter & shape & used in \\\\ \\hline\n"
        f"{rows}\n\\end{{tabular}}\n"
        "\\subsection*{One step of the cell}\n"
        f"\\begin{{center}}\n{diagram.picture(cell)}\\end{{center}}\n"
        f"{tex_escape(diagram.CAPTION)}\n"
        "\\subsection*{Forward}\n"
        f"{paste(sheet.forward)}"
        "\\subsection*{What the forward keeps for the backward}\n"
        f"Besides the inputs and the states at every step: {saved}.\n"
        "\\subsection*{Backward}\n"
        f"{paste(sheet.backward)}"
        "\\end{document}\n"
    )


def pdflatex(source: str, out: Path) -> None:
    """Compile a LaTeX document to `out` with pdflatex; a clear error when it is missing."""
    exe = shutil.which("pdflatex")
    if exe is None:
        raise CellgenError(
            "writing a PDF needs pdflatex, which is not installed (Debian: apt-get install "
            "texlive-latex-base); or write .tex, .html or .md instead"
        )
    with tempfile.TemporaryDirectory(prefix="cellgen-sheet-") as tmp:
        (Path(tmp) / "sheet.tex").write_text(source, encoding="utf-8")
        result = subprocess.run(
            [exe, "-interaction=nonstopmode", "-halt-on-error", "sheet.tex"],
            cwd=tmp,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        pdf = Path(tmp) / "sheet.pdf"
        if result.returncode != 0 or not pdf.is_file():
            errors = [line for line in result.stdout.splitlines() if line.startswith("!")]
            raise CellgenError(f"pdflatex failed: {errors[0] if errors else 'no PDF written'}")
        shutil.copyfile(pdf, out)


def write(cell: CellSpec, out: Path) -> list[Path]:
    """Write the sheet in the format out's suffix names; returns the files written."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise CellgenError(
            f"sheet: cannot tell the format of {out}; end its name with one of {', '.join(FORMATS)}"
        )
    sheet = build(cell)
    if suffix == ".html":
        out.write_text(html(sheet), encoding="utf-8")
        return [out]
    if suffix == ".md":
        svg_path = out.with_suffix(".svg")
        svg_path.write_text(diagram.svg(cell) + "\n", encoding="utf-8")
        out.write_text(markdown(sheet, svg_path.name), encoding="utf-8")
        return [out, svg_path]
    if suffix == ".tex":
        out.write_text(tex(sheet), encoding="utf-8")
        return [out]
    pdflatex(tex(sheet), out)
    return [out]
