"""C99 spelling of a kernel: expressions per real type, statements, and the template context.

Each pointwise block becomes one loop over (b, j) with a unit-stride inner loop the compiler
vectorizes: its body reads buffers, assigns `const` locals named after the equations, and writes
buffers; the activations are branch-free inline functions, so the loop has no calls. The float
entry points use float literals (1.0F) and float arithmetic, so nothing is promoted to double.
Input products are computed for all steps before the loop, and the input gradient and the weight
gradients as products over all steps after it; only the products that carry the recurrence run
inside the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy

from ...activations import ACTIVATIONS, INDICATORS
from ...cell import prev_name
from ...derive import adjoint_name, gemm_name
from ...kernel import Block, Gemm, Kernel, Role, adjoint_copies
from ..infix import InfixPrinter


@dataclass(frozen=True)
class RealType:
    suffix: str  # entry point suffix: f64 or f32
    c: str  # double or float
    literal: str  # literal suffix: "" or "F"
    math: str  # math function suffix: "" or "f"


DOUBLE = RealType("f64", "double", "", "")
FLOAT = RealType("f32", "float", "F", "f")
TYPES = (DOUBLE, FLOAT)

# Helper functions the generated file defines, static and per type.
FUNCTIONS = {name: name for name in (*ACTIVATIONS, *INDICATORS)}

RESERVED = {
    "T", "B", "I", "H", "t", "b", "j", "n", "xs", "ys", "dys", "saved", "work", "dxs", "BH",
    "next", "exp_f64", "exp_f32",
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "size_t", "exp", "expf", "tanh", "tanhf",
    "memcpy", "uint32_t", "uint64_t",
}  # fmt: skip
_BUFFER_SUFFIXES = ("_t", "_step", "_next", "_prev0", "_MT", "_products", "_all", "_a", "_b")


def ident(name: str) -> str:
    """A user's symbol as a C name that cannot clash with the template's names."""
    if name in RESERVED or name in FUNCTIONS or name.endswith(_BUFFER_SUFFIXES):
        return f"{name}_"
    if re.fullmatch(r"n\d+", name):  # the loop indices of stacked products
        return f"{name}_"
    return name


class CPrinter(InfixPrinter):
    def __init__(self, real: RealType, symbol) -> None:
        super().__init__(symbol)
        self.real = real

    def number(self, value: sympy.Number) -> str:
        text = repr(float(value))
        if "e" not in text and "." not in text and "inf" not in text:
            text += ".0"
        return text + self.real.literal

    def _print_Function(self, expr: sympy.Function) -> str:
        name = type(expr).__name__
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{FUNCTIONS[name]}_{self.real.suffix}({args})"


def _series(name: str) -> str:
    """The pointer to a state's or a saved value's slice at step t."""
    return f"{ident(name)}_t"


@dataclass
class Storage:
    """Where each product's adjoint lives: plain copies of one value share one buffer."""

    owner: dict[str, str]  # d_<product> -> the d_<product> whose buffer holds its value

    @property
    def buffers(self) -> list[str]:
        return list(dict.fromkeys(self.owner.values()))


def _storage(kernel: Kernel) -> Storage:
    copies = adjoint_copies(kernel)
    first: dict[str, str] = {}
    owner: dict[str, str] = {}
    for g in kernel.gemms:
        for p in g.products:
            d = adjoint_name(p)
            source = copies.get(d)
            if source is not None and source in first:
                owner[d] = first[source]
            else:
                owner[d] = d
                if source is not None:
                    first[source] = d
    return Storage(owner)


@dataclass
class Used:
    """The buffers a block reads or writes, in order of first use."""

    names: dict[str, None] = field(default_factory=dict)

    def use(self, name: str) -> str:
        self.names[name] = None
        return name


@dataclass(frozen=True)
class Group:
    """A fused product in the forward: products (B, G H) = operand (B, K) @ MT (K, G H)."""

    gemm: Gemm
    name: str  # the operand's name: x, h_prev, ...
    width: int  # G, the number of products side by side

    @property
    def index(self) -> str:
        """The loop index of a product in this group's buffer, whose rows are G H apart."""
        return "n" if self.width == 1 else f"n{self.width}"

    def slot(self, product: str) -> int:
        return self.gemm.products.index(product)


def _block(
    kernel: Kernel,
    block: Block,
    real: RealType,
    storage: Storage,
    stored: set[str],
    group_of: dict[str, Group],
    copied: set[str],
):
    """The body of a pointwise block's loop, and the buffers it uses.

    A forward block reads each product from its group's buffer (index n<G>) and keeps the ones
    the backward needs in `saved`; a backward block writes each product's adjoint once into the
    buffer it shares with the products whose adjoints are copies of the same value.
    """
    defined = {a.name for a in block.assignments}
    params = Used()
    keep: list[str] = []

    def read(sym: str) -> str:
        if sym in defined:
            return ident(sym)
        role = kernel.role(sym)
        if role is Role.PARAM:
            return f"{params.use(ident(sym))}[j]"
        if role is Role.PRODUCT and sym in group_of:  # the forward
            if sym in kernel.saved and sym not in copied:
                copied.add(sym)
                keep.append(sym)
            return f"{params.use(ident(sym))}[{group_of[sym].index}]"
        if role in (Role.SAVED, Role.STATE, Role.PRODUCT):
            return f"{params.use(_series(sym))}[n]"
        if role in (Role.STATE_PREV, Role.ADJ_MM):
            return f"{params.use(ident(sym))}[n]"
        if role is Role.ADJ_IN:
            return ident(sym)  # a local defined at the top of the loop body
        return f"{params.use(ident(sym) + '_step')}[n]"  # from an earlier block of this step

    printer = CPrinter(real, read)
    lines = []
    for sym in block.reads:
        if kernel.role(sym) is Role.ADJ_IN:
            state = sym[len("d_") : -len("_in")]
            terms = [f"{params.use(ident(adjoint_name(state)) + '_next')}[n]"]
            if state == kernel.cell.output:
                terms.insert(0, f"{params.use('dys_t')}[n]")
            lines.append(f"const {real.c} {ident(sym)} = {' + '.join(terms)};")
    for a in block.assignments:
        if a.comment:
            lines.append(f"/* {a.comment} */")
        role = kernel.role(a.name)
        if role is Role.ADJ_PRODUCT:
            target = storage.owner[a.name]
            if target in stored:
                continue  # a copy of a value another product's adjoint already holds
            stored.add(target)
            value = printer.doprint(a.expr)
            lines.append(f"{params.use(ident(target))}[n] = {value};")
            continue
        value = printer.doprint(a.expr)
        if role is Role.ADJ_PARAM:
            lines.append(f"{params.use(ident(a.name))}[j] += {value};")
        elif role is Role.ADJ_STATE_PREV:
            lines.append(f"{params.use(ident(a.name))}[n] = {value};")
        else:
            lines.append(f"const {real.c} {ident(a.name)} = {value};")
    for sym in block.writes:
        role = kernel.role(sym)
        if role in (Role.SAVED, Role.STATE):
            lines.append(f"{params.use(_series(sym))}[n] = {ident(sym)};")
        elif role in (Role.TEMP, Role.ADJ):
            lines.append(f"{params.use(ident(sym) + '_step')}[n] = {ident(sym)};")
    for sym in keep:  # a product the backward reads
        index = group_of[sym].index
        lines.append(f"{params.use(_series(sym))}[n] = {ident(sym)}[{index}];")
    return lines, list(params.names)


def _wrap(groups: list[list[str]], indent: str = "    ", width: int = 96) -> str:
    """Function parameters, a group per line, long groups wrapped."""
    lines = []
    for group in groups:
        line = indent
        for k, item in enumerate(group):
            piece = item + ("," if k < len(group) - 1 or group is not groups[-1] else "")
            if len(line) + len(piece) + 1 > width and line.strip():
                lines.append(line.rstrip())
                line = indent
            line += piece + " "
        lines.append(line.rstrip())
    return "\n".join(lines)


def signatures(cell, real: RealType) -> dict[str, str]:
    """The parameter lists of forward and backward, in the order the ctypes wrapper passes."""
    r = real.c
    dims = ["size_t T", "size_t B", "size_t I", "size_t H"]
    states0 = [f"const {r} *{ident(s)}0" for s in cell.states]
    params = [f"const {r} *{ident(p.name)}" for p in cell.params]
    forward = [
        dims,
        [f"const {r} *xs"],
        states0,
        params,
        [f"{r} *ys"] + [f"{r} *{ident(s)}_final" for s in cell.states],
        [f"{r} *saved", f"{r} *work"],
    ]
    backward = [
        dims,
        [f"const {r} *xs"],
        states0,
        params,
        [f"const {r} *ys", f"const {r} *saved", f"const {r} *dys"],
        [f"const {r} *d_{ident(s)}_final" for s in cell.states],
        [f"{r} *dxs"] + [f"{r} *d_{ident(s)}0" for s in cell.states],
        [f"{r} *{ident(adjoint_name(p.name))}" for p in cell.params],
        [f"{r} *work"],
    ]
    return {"forward": _wrap(forward), "backward": _wrap(backward)}


def _step_buffers(kernel: Kernel, steps) -> list[str]:
    """Values one block of a step hands to a later block: a (B, H) buffer each."""
    out = []
    for step in steps:
        if isinstance(step, Block):
            for name in step.writes:
                if kernel.role(name) in (Role.TEMP, Role.ADJ):
                    out.append(ident(name))
    return out


def context(kernel: Kernel) -> dict:
    cell = kernel.cell
    used = kernel.functions
    non_output = [s for s in cell.states if s != cell.output]
    series = non_output + list(kernel.saved)  # the layout of `saved`, (T, B, H) each
    saved_set = set(kernel.saved)
    state_of_prev = {prev_name(s): s for s in cell.states}

    def series_base(name: str) -> str:
        """The (T, B, H) array of a state or saved value."""
        return "ys" if name == cell.output else f"(saved + {series.index(name)} * T * BH)"

    storage = _storage(kernel)
    groups = [Group(g, ident(g.operand), len(g.products)) for g in kernel.gemms]
    group_of = {p: gr for gr in groups for p in gr.gemm.products}

    def operand(g: Gemm) -> str:
        """The pointer to a product's operand at step t."""
        if g.operand_role is Role.STATE_PREV:
            return ident(g.operand)
        if g.operand in saved_set or kernel.role(g.operand) is Role.STATE:
            return _series(g.operand)
        return f"{ident(g.operand)}_step"

    def weight_operands(g: Gemm) -> list[dict]:
        """The operand over all steps, as (rows, pointer, row offset into the adjoints)."""
        if g.operand_role is Role.INPUT:
            return [{"rows": "T * B", "operand": "xs", "offset": "0"}]
        if g.operand_role is Role.STATE_PREV:
            state = state_of_prev[g.operand]
            return [
                {"rows": "B", "operand": f"{ident(state)}0", "offset": "0"},
                {"rows": "(T - 1) * B", "operand": series_base(state), "offset": "BH"},
            ]
        return [{"rows": "T * B", "operand": series_base(g.operand), "offset": "0"}]

    backward_written: set[str] = set()
    for step in kernel.backward:
        if isinstance(step, Block):
            backward_written |= {a.name for a in step.assignments}

    def group_context(gr: Group) -> dict:
        g = gr.gemm
        d_operand = ident(gemm_name(g.operand))
        if g.operand_role is Role.STATE_PREV:
            d_operand = ident(adjoint_name(g.operand))
        width = "H" if gr.width == 1 else f"{gr.width} * H"
        return {
            "name": gr.name,
            "hoisted": g.hoisted,
            "size": "I" if g.hoisted else "H",
            "width": width,
            "operand": operand(g),
            "d_operand": d_operand,
            # the pointwise part of a previous state's adjoint is written before the products
            "accumulate": g.operand_role is Role.STATE_PREV
            and adjoint_name(g.operand) in backward_written,
            "pairs": [
                {
                    "matrix": ident(m),
                    "product": ident(p),
                    "offset": f"{k} * H",
                    "d_matrix": ident(adjoint_name(m)),
                    "d_product": ident(storage.owner[adjoint_name(p)]),
                }
                for k, (m, p) in enumerate(zip(g.matrices, g.products, strict=True))
            ],
            "weight_operands": weight_operands(g),
        }

    gemms = [group_context(gr) for gr in groups]
    by_gemm = {gr.gemm: ctx for gr, ctx in zip(groups, gemms, strict=True)}

    types = []
    for real in TYPES:
        fwd, bwd = [], []
        fwd_used: set[str] = set()
        copied: set[str] = set()
        for step in kernel.forward:
            if isinstance(step, Gemm):
                fwd.append({"gemm": by_gemm[step]})
                fwd_used.add(by_gemm[step]["operand"])
                continue
            lines, names = _block(kernel, step, real, storage, set(), group_of, copied)
            fwd.append({"gemm": None, "lines": lines, "indices": _indices(lines, groups)})
            fwd_used |= set(names)
        stored: set[str] = set()
        bwd_used: set[str] = set()
        for step in kernel.backward:
            if isinstance(step, Gemm):
                ctx = by_gemm[step]
                bwd.append({"gemm": ctx})
                if not ctx["hoisted"]:
                    bwd_used |= {ctx["d_operand"]} | {p["d_product"] for p in ctx["pairs"]}
                continue
            lines, names = _block(kernel, step, real, storage, stored, {}, set())
            bwd.append({"gemm": None, "lines": lines, "indices": _indices(lines, groups)})
            bwd_used |= set(names)
        types.append(
            {
                "real": real,
                "forward": fwd,
                "backward": bwd,
                "signature": signatures(cell, real),
                "forward_used": fwd_used,
                "backward_used": bwd_used,
            }
        )
    forward_used = set().union(*(ty["forward_used"] for ty in types))
    backward_used = set().union(*(ty["backward_used"] for ty in types))

    saved_pointers = [{"pointer": _series(v), "offset": k} for k, v in enumerate(series)]
    saved_pointers = [v for v in saved_pointers if v["pointer"] not in map(_series, cell.states)]
    forward_step_buffers = _step_buffers(kernel, kernel.forward)
    backward_step_buffers = _step_buffers(kernel, kernel.backward)
    mm_buffers = [ident(gemm_name(g.operand)) for g in kernel.gemms if g.operand_role is Role.SAVED]
    d_buffers = [ident(d) for d in storage.buffers]
    hoisted = [ctx for ctx in gemms if ctx["hoisted"]]
    stacked = " + ".join(
        f"{len(gr.gemm.products)} * {'I' if gr.gemm.hoisted else 'H'}" for gr in groups
    )
    hoisted_size = " + ".join(ctx["width"] for ctx in hoisted)
    step_size = " + ".join(ctx["width"] for ctx in gemms if not ctx["hoisted"]) or "0"
    forward_saved = [v for v in saved_pointers if v["pointer"] in forward_used]
    backward_saved = [v for v in saved_pointers if v["pointer"] in backward_used]
    in_saved = [s for s in cell.states if s != cell.output]  # their sequences live in `saved`
    backward_state_reads = {
        s
        for s in cell.states
        if ident(prev_name(s)) in backward_used or _series(s) in backward_used
    }
    unused_in_forward = [] if forward_saved or in_saved else ["saved"]
    unused_in_backward = [
        f"{ident(s)}0" for s in cell.states if ident(prev_name(s)) not in backward_used
    ]
    if not backward_saved and not backward_state_reads & set(in_saved):
        unused_in_backward.append("saved")
    unused_in_backward += [
        ident(p.name)
        for p in cell.params
        if p.kind == "vector" and ident(p.name) not in backward_used
    ]
    forward_buffers = len(forward_step_buffers)
    backward_buffers = len(mm_buffers) + len(backward_step_buffers) + 2 * len(cell.states)

    return {
        "cell": cell,
        "guard": f"CELLGEN_{cell.name.upper()}_H",
        "prefix": f"cellgen_{cell.name}",
        "param_shapes": _shapes_text(cell),
        "states": [
            {
                "name": ident(s),
                "prev": ident(prev_name(s)),
                "series": series_base(s),
                "d_prev": ident(adjoint_name(prev_name(s))),
                "d_next": ident(adjoint_name(s)) + "_next",
                "forward_prev": ident(prev_name(s)) in forward_used,
                "backward_prev": ident(prev_name(s)) in backward_used,
                "backward_new": _series(s) in backward_used,
            }
            for s in cell.states
        ],
        "dys_in_backward": "dys_t" in backward_used,
        "unused_in_forward": unused_in_forward,
        "unused_in_backward": unused_in_backward,
        "params": [
            {
                "name": ident(p.name),
                "d_name": ident(adjoint_name(p.name)),
                "size": " * ".join(p.shape),
            }
            for p in cell.params
        ],
        "series": series,
        "forward_saved": forward_saved,
        "backward_saved": backward_saved,
        "forward_products": [
            {"name": p["product"], "group": ctx, "offset": p["offset"]}
            for ctx in gemms
            for p in ctx["pairs"]
            if p["product"] in forward_used
        ],
        "forward_step_buffers": forward_step_buffers,
        "backward_step_buffers": backward_step_buffers,
        "mm_buffers": mm_buffers,
        "d_buffers": d_buffers,
        "step_d_buffers": [d for d in d_buffers if d in backward_used],
        "gemms": gemms,
        "forward_work": f"({stacked}) * H + ({hoisted_size}) * T * BH + ({step_size}) * BH"
        + (f" + {forward_buffers} * BH" if forward_buffers else ""),
        "backward_work": f"{len(d_buffers)} * T * BH"
        + (f" + {backward_buffers} * BH" if backward_buffers else ""),
        "types": types,
        "functions": sorted(used),
        "exp": bool(used & {"sigmoid", "tanh"}),
    }


def _indices(lines: list[str], groups: list[Group]) -> list[dict]:
    """The loop indices a block's lines use: n for (B, H) buffers, n<G> for stacked products."""
    text = "\n".join(lines)
    widths = {gr.index: gr.width for gr in groups}
    found = set(re.findall(r"\[(n\d*)\]", text))
    return [
        {"name": name, "row": "H" if name == "n" else f"{widths[name]} * H"}
        for name in sorted(found, key=lambda x: (len(x), x))
    ]


def _shapes_text(cell) -> str:
    """`W_f W_i (H, I); b_f (H)`: the parameters grouped by shape."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for p in cell.params:
        groups.setdefault(p.shape, []).append(p.name)
    return "; ".join(f"{' '.join(names)} ({', '.join(shape)})" for shape, names in groups.items())
