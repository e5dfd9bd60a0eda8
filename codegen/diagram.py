"""A picture of a cell as inline SVG, laid out from its own equations.

The classic LSTM figures' vocabulary: the inputs x_t and the previous states on the left, each
gate a box with its activation (it takes the products with its matrices and its bias), the
pointwise operations (×, +, 1−, tanh) as circles, and the new states on the right, carried to
the next step. The graph comes from the lifted forward of `codegen.derive`, so a user's cell
gets its picture too; it is laid out in columns by dependency (a small Sugiyama layout: layers
by longest path, dummy points on long edges, barycentre ordering).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from html import escape

import sympy

from .activations import Activation
from .bptt import is_pre
from .cell import CellSpec, prev_name
from .derive import Derivation, derive
from .latex import CellLatexPrinter
from .mathml import GREEK
from .reductions import Reduction

COLUMN, ROW, MARGIN = 112, 64, 36
WIDE = 1200  # a diagram wider than this (a layer norm's) keeps its size and scrolls
_ACCENT = {"tilde": "\u0303", "hat": "\u0302", "bar": "\u0304"}


@dataclass
class Node:
    key: str
    kind: str  # "in", "out", "layer", "op", "param"
    text: str  # what is drawn inside (σ, tanh, ×, +) or the terminal's name
    label: str = ""  # the quantity it computes (f_t), drawn beside a gate
    inputs: list[str] = field(default_factory=list)
    tex: str = ""  # LaTeX of `text`, where it differs
    symbol: str = ""  # the cell's name of what it computes or stands for
    layer: int = 0
    y: float = 0.0


def label(name: str, time: str = "t") -> str:
    """`c_tilde` -> `c̃_t`, `h` -> `h_t`, written with an underscore for the subscript."""
    head, _, tail = name.partition("_")
    core = GREEK.get(head, head)
    if tail in _ACCENT:
        return f"{core}{_ACCENT[tail]}_{time}"
    if tail:
        return f"{core}_{tail},{time}" if len(head) == 1 else f"{name}_{time}"
    return f"{core}_{time}"


def activation_text(act: type[Activation]) -> str:
    """σ, tanh, relu...: the activation's LaTeX name as plain text."""
    if act.plain:
        return act.plain
    text = re.sub(r"\\(?:operatorname|mathrm|text|mathit)\{(.*?)\}", r"\1", act.latex_name)
    text = text.replace(r"\_", "_")
    return re.sub(r"\\([a-zA-Z]+)", lambda m: GREEK.get(m[1], m[1]), text) or act.__name__


class _Graph:
    def __init__(self, cell: CellSpec, derivation: Derivation) -> None:
        self.cell = cell
        self.nodes: dict[str, Node] = {}
        self.source: dict[str, str] = {}  # symbol -> node that computes it
        self.forward = {p.name: p for p in derivation.forward}
        self.params = {p.name for p in cell.params}
        self.products = {m.name: m for m in cell.matmuls}
        # as in the classic figures: the states run along the top, the input enters below
        for s in reversed(cell.states):
            self.add(Node(prev_name(s), "in", label(s, "t−1"), symbol=prev_name(s)))
            self.source[prev_name(s)] = prev_name(s)
        self.add(Node(cell.input, "in", label(cell.input), symbol=cell.input))
        self.source[cell.input] = cell.input
        named = {e.name for e in cell.equations if not e.auto}
        pres = {  # the arguments of the gates: an activation that is an equation of the file
            p.expr.args[0].name
            for p in derivation.forward
            if isinstance(p.expr, Activation) and is_pre(p.expr.args[0].name) and p.name in named
        }
        for p in derivation.forward:
            if p.name in pres and not isinstance(p.expr, Activation):
                continue  # drawn inside its gate's box
            self.source[p.name] = self.primitive(p.name, p.expr, pres)
        for s in cell.states:
            self.add(Node(f"out:{s}", "out", label(s), inputs=[self.source[s]], symbol=s))

    def add(self, node: Node) -> str:
        self.nodes[node.key] = node
        return node.key

    def ref(self, symbol: str, consumer: str) -> str | None:
        """The node an input symbol comes from (a product is drawn as its operand)."""
        if symbol in self.products:
            m = self.products[symbol]
            return self.source.get(m.operand)
        if symbol in self.params:
            text = label(symbol, "")[:-1]
            return self.add(Node(f"{consumer}:{symbol}", "param", text, symbol=symbol))
        return self.source.get(symbol)

    def primitive(self, name: str, expr: sympy.Expr, pres: set[str]) -> str:
        named = {e.name for e in self.cell.equations if not e.auto}
        doc = label(name) if name in named else ""
        if isinstance(expr, Reduction):  # a box over the units of its operands
            inputs = []
            for arg in expr.args:
                ref = self.ref(arg.name, name)
                if ref is not None and ref not in inputs:
                    inputs.append(ref)
            kind = type(expr).__name__
            return self.add(Node(name, "layer", kind, doc, inputs, rf"\mathrm{{{kind}}}", name))
        if isinstance(expr, Activation):
            (arg,) = expr.args
            text = activation_text(type(expr))
            if arg.name in pres:  # a gate: a box taking the operands of its products
                inputs = []
                for s in sorted(self.forward[arg.name].expr.free_symbols, key=self.order):
                    if s.name in self.params:
                        continue
                    ref = self.ref(s.name, name)
                    if ref is not None and ref not in inputs:
                        inputs.append(ref)
                node = Node(name, "layer", text, doc, inputs, type(expr).latex_name, name)
                return self.add(node)
            inputs = [self.ref(arg.name, name)]
            return self.add(Node(name, "op", text, doc, inputs, type(expr).latex_name, name))
        return self.expression(name, expr, doc)

    def order(self, s: sympy.Symbol) -> tuple:
        """Products' operands first (x, then states), then the rest, for a stable layout."""
        if s.name in self.products:
            operand = self.products[s.name].operand
            return (0, operand != self.cell.input, operand)
        return (1, 0, s.name)

    def expression(self, key: str, expr: sympy.Expr, doc: str) -> str:
        """Pointwise arithmetic as a tree of operation circles; the root is named `key`."""
        symbol = key if doc else ""
        if isinstance(expr, sympy.Symbol):
            ref = self.ref(expr.name, key)
            return ref if ref is not None else self.add(Node(key, "op", expr.name, doc))
        if isinstance(expr, sympy.Add):
            const = [a for a in expr.args if a.is_Number]
            rest = [a for a in expr.args if not a.is_Number]
            if const == [1] and len(rest) == 1 and rest[0].could_extract_minus_sign():
                inner = self.expression(f"{key}.0", -rest[0], "")
                return self.add(Node(key, "op", "1−", doc, [inner], "1-", symbol))
            text = "+" if not const else f"+{const[0]}"
        elif isinstance(expr, sympy.Mul):
            coeff, rest_mul = expr.as_coeff_Mul()
            rest = list(sympy.Mul.make_args(rest_mul))
            text = "×" if coeff == 1 else "−" if coeff == -1 else f"×{coeff}"
        elif isinstance(expr, sympy.Pow):
            base, exp = expr.args
            rest = [base]
            text = "1/·" if exp == -1 else f"^{exp}"
        elif isinstance(expr, Activation):
            return self.primitive(key, expr, set())
        else:
            rest, text = list(expr.args), type(expr).__name__
        inputs = [self.expression(f"{key}.{k}", a, "") for k, a in enumerate(rest)]
        return self.add(Node(key, "op", text, doc, inputs, symbol=symbol))


def _layout(graph: _Graph) -> tuple[dict[str, Node], list[tuple[list[tuple[float, float]], bool]]]:
    """Columns by longest path, rows by barycentres; returns nodes and edge polylines."""
    nodes = graph.nodes
    for key in _topological(nodes):
        node = nodes[key]
        node.layer = 1 + max((nodes[i].layer for i in node.inputs), default=-1)
        if node.kind == "in":
            node.layer = 0
    last = max(n.layer for n in nodes.values() if n.kind != "out")
    for node in nodes.values():
        if node.kind == "out":  # the new states, carried to the next step, on the right
            node.layer = last + 1
        if node.kind == "param":  # a parameter sits just before its consumer
            consumer = next(n for n in nodes.values() if node.key in n.inputs)
            node.layer = consumer.layer - 1
    # long edges pass through dummy points, one per column they cross
    chains: list[tuple[str, list[str], str]] = []
    dummies: dict[str, Node] = {}
    for node in list(nodes.values()):
        for src in node.inputs:
            path = []
            for layer in range(nodes[src].layer + 1, node.layer):
                key = f"~{src}>{node.key}@{layer}"
                dummies[key] = Node(
                    key, "dummy", "", layer=layer, inputs=[path[-1] if path else src]
                )
                path.append(key)
            chains.append((src, path, node.key))
    everything = {**nodes, **dummies}
    for key, node in everything.items():
        if node.kind == "dummy":
            continue
        node.inputs = [_via(src, key, chains) for src in node.inputs]
    columns: dict[int, list[str]] = {}
    for key, node in everything.items():
        columns.setdefault(node.layer, []).append(key)
    _order(everything, columns)
    for column in columns.values():
        for k, key in enumerate(column):
            everything[key].y = k * ROW
    _place(everything, columns)
    edges = []
    for src, path, dst in chains:
        points = [src, *path, dst]
        edges.append(([_anchor(everything[p], "out" if p == src else "in") for p in points],
                      graph.nodes[dst].kind == "out"))  # fmt: skip
    return everything, edges


def _via(src: str, dst: str, chains: list) -> str:
    for s, path, d in chains:
        if s == src and d == dst and path:
            return path[-1]
    return src


def _topological(nodes: dict[str, Node]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []

    def visit(key: str) -> None:
        if key in seen:
            return
        seen.add(key)
        for i in nodes[key].inputs:
            visit(i)
        out.append(key)

    for key in nodes:
        visit(key)
    return out


def _order(nodes: dict[str, Node], columns: dict[int, list[str]]) -> None:
    """Barycentre ordering, a few sweeps each way, to keep edges from crossing."""
    users: dict[str, list[str]] = {k: [] for k in nodes}
    for key, node in nodes.items():
        for i in node.inputs:
            users[i].append(key)
    layers = sorted(columns)
    for _ in range(4):
        for forward in (True, False):
            seq = layers[1:] if forward else layers[-2::-1]
            for layer in seq:
                column = columns[layer]
                ref = columns[layer - 1 if forward else layer + 1]
                rank = {k: r for r, k in enumerate(ref)}
                here = {k: r for r, k in enumerate(column)}

                def centre(key: str, rank=rank, here=here, forward=forward) -> float:
                    links = nodes[key].inputs if forward else users[key]
                    ranks = [rank[k] for k in links if k in rank]
                    return sum(ranks) / len(ranks) if ranks else here[key]

                column.sort(key=centre)


def _place(nodes: dict[str, Node], columns: dict[int, list[str]]) -> None:
    """Rows: each node near the mean of its inputs, at least ROW apart, column by column."""
    for layer in sorted(columns)[1:]:
        column = columns[layer]
        want = []
        for key in column:
            ys = [nodes[i].y for i in nodes[key].inputs]
            want.append(sum(ys) / len(ys) if ys else nodes[key].y)
        ys = []
        for w in want:
            ys.append(max(w, ys[-1] + _gap(nodes, column, len(ys))) if ys else w)
        shift = (sum(want) - sum(ys)) / len(ys)
        for key, y in zip(column, ys, strict=True):
            nodes[key].y = y + min(shift, 0.0) if shift < 0 else y
    top = min(n.y for n in nodes.values())
    for n in nodes.values():
        n.y -= top


def _gap(nodes: dict[str, Node], column: list[str], k: int) -> float:
    dummy = nodes[column[k]].kind == "dummy" and nodes[column[k - 1]].kind == "dummy"
    return ROW * (0.4 if dummy else 1.0)


def _x(node: Node) -> float:
    return MARGIN + 30 + node.layer * COLUMN


def _anchor(node: Node, side: str) -> tuple[float, float]:
    half = _half(node)
    return (_x(node) + (half if side == "out" else -half), MARGIN + node.y)


def _font(node: Node) -> int:
    """Font size of the text inside a gate or an operation: smaller for long names."""
    if node.kind == "layer":
        return 15 if len(node.text) <= 5 else 12
    return 14 if len(node.text) < 3 else 11 if len(node.text) <= 4 else 10


def _half(node: Node) -> float:
    """Half the width of a node's shape, grown to hold its text."""
    if node.kind == "layer":
        return max(24.0, 0.31 * _font(node) * len(node.text) + 8)
    if node.kind == "op":
        return max(15.0, 0.3 * _font(node) * len(node.text) + 5)
    return {"in": 24.0, "out": 24.0, "param": 14.0}.get(node.kind, 0.0)


def _text(
    value: str, x: float, y: float, size: int, anchor: str = "middle", script=True, **attrs
) -> str:
    """SVG text; with `script`, `a_b` draws b as a subscript."""
    head, _, sub = value.partition("_") if script else (value, "", "")
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    body = escape(head)
    if sub:
        body += f'<tspan dy="4" font-size="{size * 0.72:.0f}">{escape(sub)}</tspan>'
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"'
        f' dominant-baseline="central"{extra}>{body}</text>'
    )


CAPTION = (
    "Boxes are gates: an activation of the products of the gate's matrices with the inputs "
    "drawn into it, plus its bias. Circles are elementwise operations (× the product ⊙, + a "
    "sum, 1− one minus). On the right, the new states, carried to the next step."
)


@dataclass(frozen=True)
class Drawing:
    """A laid-out diagram: nodes with positions and edges as polylines, in SVG pixels."""

    cell: CellSpec
    nodes: dict[str, Node]
    edges: list[tuple[list[tuple[float, float]], bool]]
    width: float
    height: float


def layout(cell: CellSpec, derivation: Derivation | None = None) -> Drawing:
    graph = _Graph(cell, derivation or derive(cell))
    nodes, edges = _layout(graph)
    width = 2 * MARGIN + 60 + max(n.layer for n in nodes.values()) * COLUMN
    height = 2 * MARGIN + max(n.y for n in nodes.values()) + 20
    return Drawing(cell, nodes, edges, width, height)


def _curve(points: list[tuple[float, float]]) -> list[tuple[float, float, float, float]]:
    """Each segment of an edge as a cubic with horizontal ends: (x0, y0, x1, y1)."""
    return [(x0, y0, x1, y1) for (x0, y0), (x1, y1) in itertools.pairwise(points)]


def svg(cell: CellSpec, derivation: Derivation | None = None) -> str:
    """The cell's diagram as one <svg> element (no script, no external reference)."""
    drawing = layout(cell, derivation)
    width, height = drawing.width, drawing.height
    wide = " wide" if width > WIDE else ""  # scrolls in its figure rather than shrinking
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram{wide}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'font-family="serif"><title>{escape(cell.name)}: one step</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#444"/></marker></defs>',
    ]
    for points, to_state in drawing.edges:
        d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
        for x0, y0, x1, y1 in _curve(points):
            mid = (x0 + x1) / 2
            d += f" C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
        colour = "#1f4e79" if to_state else "#444"
        parts.append(
            f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.4" '
            'marker-end="url(#arrow)"/>'
        )
    for node in drawing.nodes.values():
        x, y = _x(node), MARGIN + node.y
        half = _half(node)
        if node.kind == "layer":
            parts.append(
                f'<rect x="{x - half:.1f}" y="{y - 16:.1f}" width="{2 * half:.1f}" height="32" '
                'rx="4" fill="#ffe599" stroke="#7f6000" stroke-width="1.2"/>'
            )
            parts.append(_text(node.text, x, y, _font(node), script=False))
        elif node.kind == "op":
            parts.append(
                f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="{half:.1f}" ry="15" fill="#f4cccc" '
                'stroke="#990000" stroke-width="1.2"/>'
            )
            parts.append(_text(node.text, x, y, _font(node), script=False))
        elif node.kind in ("in", "out"):
            parts.append(_text(node.text, x, y, 16, font_style="italic"))
        elif node.kind == "param":
            parts.append(_text(node.text, x + 10, y, 12, anchor="end", font_style="italic"))
        if node.label:
            parts.append(_text(node.label, x, y - 26, 13, font_style="italic", fill="#1f4e79"))
    parts.append("</svg>")
    return "\n".join(parts)


_OPS_TEX = {"×": r"\times", "−": "-", "1−": "1-", "1/·": r"1/\cdot"}


def picture(cell: CellSpec, derivation: Derivation | None = None, width_pt: float = 400) -> str:
    """The same diagram in LaTeX's picture mode (kernel commands only: no package needed)."""
    drawing = layout(cell, derivation)
    printer = CellLatexPrinter(cell)
    unit = min(0.6, width_pt / drawing.width)
    top = drawing.height

    def at(x: float, y: float) -> str:
        return f"({x:.1f},{top - y:.1f})"

    def tex(node: Node) -> str:
        if node.kind in ("in", "out", "param"):
            return printer.name(node.symbol)
        text = node.tex or _OPS_TEX.get(node.text, node.text.replace("×", r"\times "))
        return text

    out = [
        f"\\setlength{{\\unitlength}}{{{unit:.4f}pt}}",
        f"\\begin{{picture}}({drawing.width:.0f},{top:.0f})",
    ]
    if drawing.width > WIDE:  # fewer dots per curve, or TeX's memory runs out
        out.insert(0, "\\renewcommand{\\qbeziermax}{150}")
    for points, _ in drawing.edges:
        for x0, y0, x1, y1 in _curve(points):
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            c0 = (x0 + 0.75 * (xm - x0), y0)
            c1 = (x1 - 0.75 * (x1 - xm), y1)
            out.append(f"\\qbezier{at(x0, y0)}{at(*c0)}{at(xm, ym)}")
            out.append(f"\\qbezier{at(xm, ym)}{at(*c1)}{at(x1, y1)}")
        x1, y1 = points[-1]
        out.append(f"\\put{at(x1 - 7, y1)}{{\\vector(1,0){{7}}}}")
    for node in drawing.nodes.values():
        x, y = _x(node), MARGIN + node.y
        style = ""
        if node.kind in ("layer", "op"):  # long names shrink to fit their circle
            small = node.kind == "op" and len(node.text) > 2
            style = r"\scriptscriptstyle" if small else r"\scriptstyle"
        content = f"${style} {tex(node)}$"
        half = _half(node)
        if node.kind == "layer":
            box = f"\\framebox({2 * half:.0f},32){{{content}}}"
            out.append(f"\\put{at(x - half, y + 16)}{{{box}}}")
        elif node.kind == "op":
            shape = "\\circle{30}" if half == 15 else f"\\oval({2 * half:.0f},30)"
            out.append(f"\\put{at(x, y)}{{{shape}}}")
            out.append(f"\\put{at(x, y)}{{\\makebox(0,0){{{content}}}}}")
        elif node.kind in ("in", "out", "param"):
            out.append(f"\\put{at(x, y)}{{\\makebox(0,0){{{content}}}}}")
        if node.label and node.symbol:
            label_tex = f"$\\scriptstyle {printer.name(node.symbol)}$"
            out.append(f"\\put{at(x, y - 26)}{{\\makebox(0,0){{{label_tex}}}}}")
    out.append("\\end{picture}")
    return "\n".join(out) + "\n"
