"""The order in which an equation file writes terms and factors, for printing in that order.

SymPy sorts the terms of a sum and the factors of a product into its canonical order, even
unevaluated, so the order the user wrote is read from the file itself: each equation's
right-hand side as Python's AST, whose sums and products are matched to SymPy's by the symbols
they contain. Whatever does not match keeps the printer's default order.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

import sympy

from .cell import CellSpec
from .errors import CellgenError
from .registry import equation_calls, resolve


class WrittenOrder:
    """The right-hand sides of one cell's equations as written, and matching against them."""

    def __init__(self, cell: CellSpec) -> None:
        self.products = {(m.matrix, m.operand): m.name for m in cell.matmuls}
        self.by_matrix = {m.matrix: m.name for m in cell.matmuls}
        self.sources: dict[str, ast.expr] = _right_hand_sides(cell)

    def names(self, node: ast.AST) -> frozenset[str]:
        """The cell's symbols in a piece of the file (a product `W @ v` is its own symbol)."""
        if isinstance(node, ast.Name):
            return frozenset({node.id})
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            matrix = node.left.id if isinstance(node.left, ast.Name) else ""
            operand = node.right.id if isinstance(node.right, ast.Name) else None
            product = self.products.get((matrix, operand)) or self.by_matrix.get(matrix)
            return frozenset({product} if product else set())
        if isinstance(node, ast.Call):
            return frozenset().union(*(self.names(a) for a in node.args))
        return frozenset().union(*(self.names(c) for c in ast.iter_child_nodes(node)))

    def match(
        self, parts: Sequence[sympy.Expr], node: ast.AST, kind: type[ast.operator]
    ) -> list[tuple[sympy.Expr, ast.AST | None]]:
        """SymPy's terms (kind ast.Add) or factors (ast.Mult) in the order of `node`'s."""
        written = _flatten(node, kind)
        used: set[int] = set()
        placed = []
        for part in parts:
            symbols = frozenset(s.name for s in part.free_symbols)
            k = next(
                (k for k, w in enumerate(written) if k not in used and self.names(w) == symbols),
                None,
            )
            if k is not None:
                used.add(k)
            placed.append(
                (k if k is not None else len(written), part, written[k] if k is not None else None)
            )
        placed.sort(key=lambda p: p[0])
        return [(part, w) for _, part, w in placed]


def _flatten(node: ast.AST, kind: type[ast.operator]) -> list[ast.AST]:
    """`a + b - c` -> [a, b, c] for sums; `a * b * c` -> [a, b, c] for products."""
    ops = (ast.Add, ast.Sub) if kind is ast.Add else (ast.Mult,)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ops):
        return _flatten(node.left, kind) + _flatten(node.right, kind)
    if kind is ast.Add and isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _flatten(node.operand, kind)
    return [node]


def _right_hand_sides(cell: CellSpec) -> dict[str, ast.expr]:
    """equation name -> its right-hand side's AST; {} if the file cannot be read."""
    try:
        path = resolve(cell.name if cell.source.startswith("equations/") else cell.source)
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (CellgenError, OSError, SyntaxError, ValueError):
        return {}
    calls = [node for node in equation_calls(tree) if len(node.args) >= 2]
    out = {}
    for eq in cell.equations:
        if eq.auto or not eq.line:
            continue
        call = next((c for c in calls if c.lineno <= eq.line <= (c.end_lineno or c.lineno)), None)
        if call is not None:
            out[eq.name] = call.args[1]
    return out
