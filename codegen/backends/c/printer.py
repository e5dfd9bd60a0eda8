"""C99 spelling of a kernel: expressions per real type, statements, and the template context.

Each pointwise block becomes one loop over (b, j) whose body reads buffers, assigns `const`
locals named after the equations, and writes buffers. The float entry points use float
literals (1.0F) and float functions (expf, tanhf), so nothing is promoted to double.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ...activations import ACTIVATIONS, INDICATORS
from ...cell import prev_name
from ...derive import adjoint_name, gemm_name
from ...kernel import Block, Gemm, Kernel, Role
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
FUNCTIONS = {name: name for name in (*ACTIVATIONS, *INDICATORS) if name != "tanh"}

RESERVED = {
    "T", "B", "I", "H", "t", "b", "j", "n", "xs", "ys", "dys", "saved", "work", "dxs",
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "size_t", "exp", "expf", "tanh", "tanhf",
}  # fmt: skip
_BUFFER_SUFFIXES = ("_t", "_step", "_next", "_prev0", "_T")


def ident(name: str) -> str:
    """A user's symbol as a C name that cannot clash with the template's names."""
    if name in RESERVED or name in FUNCTIONS or name.endswith(_BUFFER_SUFFIXES):
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
        if name == "tanh":
            return f"tanh{self.real.math}({args})"
        return f"{FUNCTIONS[name]}_{self.real.suffix}({args})"


def _series(kernel: Kernel, name: str) -> str:
    return f"{ident(name)}_t"


def _reader(kernel: Kernel, pass_: str):
    """How a block reads a symbol it did not assign: a buffer element or a parameter."""

    def read(name: str) -> str:
        role = kernel.role(name)
        if role is Role.PARAM:
            return f"{ident(name)}[j]"
        if role in (Role.SAVED, Role.STATE):
            return f"{_series(kernel, name)}[n]"
        if role in (Role.STATE_PREV, Role.PRODUCT, Role.ADJ_MM):
            return f"{ident(name)}[n]"
        if role is Role.ADJ_IN:
            return ident(name)  # a local defined at the top of the block
        return f"{ident(name)}_step[n]"  # a value from an earlier block of this step

    return read


def _block_lines(kernel: Kernel, block: Block, real: RealType, pass_: str) -> list[str]:
    defined = {a.name for a in block.assignments}
    read = _reader(kernel, pass_)

    def symbol(name: str) -> str:
        return ident(name) if name in defined else read(name)

    printer = CPrinter(real, symbol)
    lines = []
    for name in block.reads:
        if kernel.role(name) is Role.ADJ_IN:
            state = name[len("d_") : -len("_in")]
            extra = "dys_t[n] + " if state == kernel.cell.output else ""
            lines.append(
                f"const {real.c} {ident(name)} = {extra}{ident(adjoint_name(state))}_next[n];"
            )
    for a in block.assignments:
        if a.comment:
            lines.append(f"/* {a.comment} */")
        value = printer.doprint(a.expr)
        role = kernel.role(a.name)
        if role is Role.ADJ_PARAM:
            lines.append(f"{ident(a.name)}[j] += {value};")
        elif role in (Role.ADJ_PRODUCT, Role.ADJ_STATE_PREV):
            lines.append(f"{ident(a.name)}[n] = {value};")
        else:
            lines.append(f"const {real.c} {ident(a.name)} = {value};")
    for name in block.writes:
        role = kernel.role(name)
        if role in (Role.SAVED, Role.STATE):
            lines.append(f"{_series(kernel, name)}[n] = {ident(name)};")
        elif role in (Role.TEMP, Role.ADJ):
            lines.append(f"{ident(name)}_step[n] = {ident(name)};")
    return lines


def _step_buffers(kernel: Kernel, steps) -> list[str]:
    """Values one block of a step hands to a later block: a (B, H) buffer each."""
    out = []
    for step in steps:
        if isinstance(step, Block):
            for name in step.writes:
                if kernel.role(name) in (Role.TEMP, Role.ADJ):
                    out.append(ident(name))
    return out


def _gemm(kernel: Kernel, g: Gemm) -> dict:
    cell = kernel.cell
    if g.operand_role is Role.INPUT:
        operand, size, d_operand = "xs_t", "I", "dxs_t"
    elif g.operand_role is Role.STATE_PREV:
        state = next(s for s in cell.states if prev_name(s) == g.operand)
        operand, size = ident(g.operand), "H"
        d_operand = ident(adjoint_name(prev_name(state)))
    else:
        operand, size = _series(kernel, g.operand), "H"
        if kernel.role(g.operand) not in (Role.SAVED, Role.STATE):
            operand = f"{ident(g.operand)}_step"
        d_operand = ident(gemm_name(g.operand))
    return {
        "operand": operand,
        "size": size,
        "d_operand": d_operand,
        "role": g.operand_role.value,
        "pairs": [
            {
                "matrix": ident(m),
                "product": ident(p),
                "d_matrix": ident(adjoint_name(m)),
                "d_product": ident(adjoint_name(p)),
            }
            for m, p in zip(g.matrices, g.products, strict=True)
        ],
    }


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
        [f"{r} *d_{ident(p.name)}" for p in cell.params],
        [f"{r} *work"],
    ]
    return {"forward": _wrap(forward), "backward": _wrap(backward)}


def context(kernel: Kernel) -> dict:
    cell = kernel.cell
    used: set[str] = set()
    for step in kernel.forward + kernel.backward:
        if isinstance(step, Block):
            for a in step.assignments:
                used |= {type(f).__name__ for f in a.expr.atoms(sympy.Function)}
    non_output = [s for s in cell.states if s != cell.output]
    series = non_output + list(kernel.saved)  # the layout of `saved`, (T, B, H) each

    def series_of(name: str) -> str:
        return "ys" if name == cell.output else f"(saved + {series.index(name)} * T * BH)"

    saved_values = [
        {
            "pointer": ident(v) if kernel.role(v) is Role.PRODUCT else _series(kernel, v),
            "offset": series.index(v),
        }
        for v in kernel.saved
    ]
    work_products = [ident(m.name) for m in cell.matmuls if m.name not in kernel.saved]
    backward_written: set[str] = set()
    backward_read: set[str] = set()
    for step in kernel.backward:
        if isinstance(step, Block):
            backward_written |= {a.name for a in step.assignments}
            backward_read |= set(step.reads)
    gemm_context = {}
    for g in kernel.gemms:
        ctx = _gemm(kernel, g)
        ctx["d_prev_pointwise"] = g.operand_role is Role.STATE_PREV and (
            adjoint_name(g.operand) in backward_written
        )
        gemm_context[g] = ctx
    matrices = [p for p in cell.params if p.kind == "matrix"]
    transposed = " + ".join(
        f"{sum(1 for p in matrices if p.shape[1] == d)} * {d}"
        for d in ("I", "H")
        if any(p.shape[1] == d for p in matrices)
    )
    forward_step_buffers = _step_buffers(kernel, kernel.forward)
    backward_step_buffers = _step_buffers(kernel, kernel.backward)
    mm_buffers = [ident(gemm_name(g.operand)) for g in kernel.gemms if g.operand_role is Role.SAVED]
    adjoint_products = [ident(adjoint_name(m.name)) for m in cell.matmuls]

    types = []
    for real in TYPES:
        fwd, bwd = [], []
        for step in kernel.forward:
            if isinstance(step, Gemm):
                fwd.append({"gemm": gemm_context[step], "lines": []})
            else:
                fwd.append({"gemm": None, "lines": _block_lines(kernel, step, real, "forward")})
        for step in kernel.backward:
            if isinstance(step, Gemm):
                bwd.append({"gemm": gemm_context[step], "lines": []})
            else:
                bwd.append({"gemm": None, "lines": _block_lines(kernel, step, real, "backward")})
        types.append(
            {"real": real, "forward": fwd, "backward": bwd, "signature": signatures(cell, real)}
        )

    return {
        "cell": cell,
        "guard": f"CELLGEN_{cell.name.upper()}_H",
        "prefix": f"cellgen_{cell.name}",
        "param_shapes": _shapes_text(cell),
        "states": [
            {
                "name": ident(s),
                "prev": ident(prev_name(s)),
                "series": series_of(s),
                "series_mut": series_of(s),
                "d_prev": ident(adjoint_name(prev_name(s))),
                "d_next": ident(adjoint_name(s)) + "_next",
                "read_in_backward": s in backward_read,
            }
            for s in cell.states
        ],
        "unused_in_backward": [
            ident(p.name) for p in cell.params if p.kind == "vector" and p.name not in backward_read
        ],
        "params": [{"name": ident(p.name), "size": " * ".join(p.shape)} for p in cell.params],
        "matrices": [{"name": ident(p.name), "cols": p.shape[1]} for p in matrices],
        "series": series,
        "saved_values": saved_values,
        "work_products": work_products,
        "adjoint_products": adjoint_products,
        "forward_step_buffers": forward_step_buffers,
        "backward_step_buffers": backward_step_buffers,
        "mm_buffers": mm_buffers,
        "gemms": [gemm_context[g] for g in kernel.gemms],
        "transposed_size": f"({transposed}) * H",
        "forward_buffers": len(work_products) + len(forward_step_buffers),
        "backward_buffers": len(adjoint_products)
        + len(mm_buffers)
        + len(backward_step_buffers)
        + 2 * len(cell.states),
        "types": types,
        "functions": sorted(used - {"tanh"}),
    }


def _shapes_text(cell) -> str:
    """`W_f W_i (H, I); b_f (H)`: the parameters grouped by shape."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for p in cell.params:
        groups.setdefault(p.shape, []).append(p.name)
    return "; ".join(f"{' '.join(names)} ({', '.join(shape)})" for shape, names in groups.items())
