"""`codegen.cell_info`: a cell's equations as rendered math in a Jupyter notebook.

The object shows itself as LaTeX (`_repr_latex_`, which notebooks render with MathJax) and as
HTML with MathML and the cell's diagram (`_repr_html_`); its methods give the same LaTeX as
`cellgen latex` and write the derivation sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from .cell import CellSpec

# the printers load on first use, so that `import codegen` stays as fast as codegen.load needs


@dataclass(frozen=True)
class CellInfo:
    """A loaded cell, for display: `cell_info("lstm")` as the last line of a notebook cell."""

    cell: CellSpec
    _forward: list = field(repr=False)  # codegen.latex blocks

    @property
    def name(self) -> str:
        return self.cell.name

    def latex(self, backward: bool = False) -> str:
        """The forward (or backward) as LaTeX for a document with amsmath and amssymb."""
        from .latex import backward_blocks, paste

        return paste(backward_blocks(self.cell) if backward else self._forward)

    def sheet(self, path: str | Path) -> list[Path]:
        """Write the derivation sheet; the suffix (.html, .md, .tex, .pdf) picks the format."""
        from .sheet import write

        return write(self.cell, Path(path))

    def _rows(self) -> tuple:
        from .latex import Equations

        return tuple(row for b in self._forward if isinstance(b, Equations) for row in b.rows)

    def _repr_latex_(self) -> str:
        from .latex import aligned_rows

        body = " \\\\\n".join(aligned_rows(self._rows()))
        return f"$$\n\\begin{{aligned}}\n{body}\n\\end{{aligned}}\n$$"

    def _repr_html_(self) -> str:
        from . import diagram, mathml

        rows = [(lhs, list(lines)) for lhs, lines in self._rows()]
        return (
            f"<div><p><b>{escape(self.cell.name)}</b>: {escape(self.cell.description)}</p>"
            f"{diagram.svg(self.cell)}{mathml.block(rows)}</div>"
        )


def cell_info(cell: str | Path | CellSpec) -> CellInfo:
    """The display object of a built-in cell (by name), an equation file or a CellSpec."""
    from .latex import forward_blocks
    from .registry import load_cell

    spec = cell if isinstance(cell, CellSpec) else load_cell(cell)
    return CellInfo(spec, forward_blocks(spec))
