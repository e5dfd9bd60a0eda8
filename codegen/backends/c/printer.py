"""C99 spelling of a kernel plan: identifiers, expressions per real type, and the template context.

Each pointwise block becomes one loop over (b, j) with a unit-stride inner loop the compiler
vectorizes: its body reads buffers, assigns `const` locals named after the equations, and writes
buffers; the activations are branch-free inline functions, so the loop has no calls. The float
entry points use float literals (1.0F) and float arithmetic, so nothing is promoted to double.
Everything the loops do (buffers and their sizes, which adjoint shares which buffer, how state
adjoints recur, the weight-gradient products) comes from the plan (codegen/kernel.py); this
module only spells it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ...activations import helpers
from ...cell import prev_name, size_symbol
from ...kernel import (
    HP,
    INFER_CHUNK,
    SIZES,
    Block,
    Buffer,
    FusedProduct,
    Gemm,
    Kernel,
    Reduce,
    Role,
    padded,
)
from ...names import Identifiers
from ...reductions import units_size
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

# Names a user's symbol may not take in C: keywords (C99, and C++ so that C++ can include the
# header), the template's own locals, the object-like macros of the headers it includes; and,
# by pattern, names reserved to the implementation, cellgen's exported and helper functions,
# and the macro families of <stdint.h> and <math.h>.
RESERVED = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "_Bool", "_Complex", "_Imaginary",
    "alignas", "alignof", "and", "and_eq", "asm", "bitand", "bitor", "bool", "catch", "char16_t",
    "char32_t", "class", "compl", "constexpr", "const_cast", "decltype", "delete",
    "dynamic_cast", "explicit", "export", "false", "friend", "mutable", "namespace", "new",
    "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected",
    "public", "reinterpret_cast", "static_assert", "static_cast", "template", "this",
    "thread_local", "throw", "true", "try", "typeid", "typename", "using", "virtual", "wchar_t",
    "xor", "xor_eq",
    "T", "B", "I", "H", "t", "b", "j", "n", "k", "xs", "ys", "dys", "dxs", "saved", "work",
    "BH", "next", "packed", "weights", "steps", "t0", "size_t", "NULL", "lengths", "reverse", "L",
    "ys_seq", "dys_t", "row_active", "Hp", "jb", "swap", "bf16", "in_place", "int32_t", "uint16_t",
    "lo", "hi", "xs_place", "from_end", "uintptr_t",
    "NAN", "INFINITY", "HUGE_VAL", "HUGE_VALF", "HUGE_VALL",
    "math_errhandling", "errno", "EOF", "EDOM", "ERANGE", "uint32_t", "uint64_t", "memcpy",
    "exp", "expf", "log1p", "log1pf", "fabs", "fabsf", "tanh", "tanhf", "sqrt", "sqrtf",
}  # fmt: skip
RESERVED_PATTERN = (
    r"_.*|cellgen_.*|CELLGEN_\w*|.*_f(32|64)"
    r"|(U?INT\d*|SIZE|PTRDIFF|INTPTR|UINTPTR|INTMAX|UINTMAX|WCHAR|WINT|SIG_ATOMIC|FP|M|MATH)_\w*"
    r"|[EF]_?\w*_[A-Z]+"
)


class CNames:
    """Every identifier of one cell's C file, from one registry."""

    def __init__(self, kernel: Kernel) -> None:
        symbols = set(kernel.roles) | {p.name for p in kernel.cell.params}
        symbols |= {a.name for s in kernel.forward + kernel.backward if isinstance(s, Block)
                    for a in s.assignments}  # fmt: skip
        sizes = kernel.cell.sizes  # size_t arguments, and the row strides B * size
        reserved = RESERVED | set(sizes) | {row_stride(size_symbol(z)) for z in sizes}
        reserved |= {str(padded(size_symbol(z))) for z in sizes}  # inference's padded rows
        self.ids = Identifiers(symbols, reserved, RESERVED_PATTERN)
        self.kernel = kernel

    def __call__(self, symbol: str) -> str:
        return self.ids(symbol)

    def at_t(self, symbol: str) -> str:
        """The pointer to a sequence's slice at step t."""
        return self.ids.derived(symbol, "_t")

    def step(self, symbol: str) -> str:
        """A (B, H) buffer handing a value from one block of a step to a later one."""
        return self.ids.derived(symbol, "_step")

    def state0(self, state: str) -> str:
        return self.ids.derived(state, "0")

    def final(self, state: str) -> str:
        return self.ids.derived(state, "_final")

    def d_final(self, state: str) -> str:
        return self.ids.derived(state, "_final", prefix="d_")

    def d_state0(self, state: str) -> str:
        return self.ids.derived(state, "0", prefix="d_")

    def new_state(self, state: str) -> str:
        """Inference: a state's new value at step t, before it replaces the old."""
        return self.ids.derived(state, "_new")

    def current_state(self, state: str) -> str:
        """Inference: a state's value before step t, padded to Hp."""
        return self.ids.derived(state, "_cur")

    def state_io(self, state: str) -> str:
        """Inference: the caller's state array, read as the initial and left as the final."""
        return self.ids.derived(state, "_state")

    def carried(self, state: str) -> str:
        """The adjoint of a state carried from step t + 1."""
        return self.ids.derived(self.kernel.names.of(state), "_next")

    def index(self, width: int) -> str:
        """The loop index into a buffer whose rows are `width` products apart."""
        return "n" if width == 1 else self.ids.local(f"n{width}")

    def buffer(self, buf: Buffer) -> str:
        if buf.kind == "packed":
            return self.ids.derived(buf.symbol, "_MT")
        if buf.kind in ("fused_MT", "fused_init", "fused_products", "apart_products"):
            return self.ids.local(buf.kind)
        if buf.kind == "products":
            return self.ids.derived(buf.symbol, "_products")
        if buf.kind == "step":
            return self.step(buf.symbol)
        if buf.kind in ("adjoints", "input_adjoints"):
            return self.ids.derived(buf.symbol, "_all")
        if buf.kind == "through_products":
            return self(buf.symbol)
        if buf.kind == "new_state":
            return self.new_state(buf.symbol)
        if buf.kind == "state":
            return self.current_state(buf.symbol)
        if buf.kind == "loop_order":
            return self.ids.derived(buf.symbol, "_loop")
        if buf.kind == "loop_order_step":
            return self.ids.local("dys_loop")
        if buf.kind == "carried":
            return self.ids.derived(self.kernel.names.of(buf.symbol), f"_next_{buf.part}")
        raise ValueError(f"unknown buffer kind {buf.kind}")


class CPrinter(InfixPrinter):
    def __init__(self, real: RealType, symbol, prefix: str = "") -> None:
        super().__init__(symbol)
        self.real = real
        self.prefix = prefix  # "infer_": the inference activations (FMA where the CPU has it)

    def number(self, value: sympy.Number) -> str:
        text = repr(float(value))
        if "e" not in text and "." not in text and "inf" not in text:
            text += ".0"
        return text + self.real.literal

    def _print_Function(self, expr: sympy.Function) -> str:
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{self.prefix}{type(expr).__name__}_{self.real.suffix}({args})"


def _factor_order(factor: sympy.Expr, order: list) -> tuple[int, str]:
    """Compound factors first, then T, B, I, H, then declared sizes by name."""
    if factor in order:
        return (order.index(factor), "")
    return (len(order), str(factor)) if factor.is_Symbol else (-1, "")


def row_stride(size: sympy.Expr) -> str:
    """The local holding B * size, the numbers of one step of a (T, B, size) sequence: BH, BP
    (B for a size-1 value)."""
    return "B" if size == 1 else f"B{size}"


def size_text(expr: sympy.Expr) -> str:
    """A size in T, B, I, H as C, written as the plan states it: `4 * T * B * H`, `(T - 1) * B`."""
    if isinstance(expr, sympy.Add):
        terms = sorted(expr.args, key=lambda e: (e.is_Number, sympy.default_sort_key(e)))
        text = size_text(terms[0])
        for term in terms[1:]:
            negative = term.could_extract_minus_sign()
            text += f" - {size_text(-term)}" if negative else f" + {size_text(term)}"
        return text
    if isinstance(expr, sympy.Mul):
        coeff, factors = expr.as_coeff_mul()
        order = [*SIZES.values(), HP]
        expanded = []
        for f in factors:
            base, exp = f.as_base_exp()
            expanded += [base] * int(exp)
        expanded.sort(key=lambda f: _factor_order(f, order))
        parts = [f"({size_text(f)})" if f.is_Add else size_text(f) for f in expanded]
        return " * ".join(([str(coeff)] if coeff != 1 else []) + parts)
    if isinstance(expr, sympy.Pow):
        return " * ".join([size_text(expr.base)] * int(expr.exp))
    return str(expr)


@dataclass
class Used:
    """The names a block's lines use, in order of first use."""

    names: dict[str, None] = field(default_factory=dict)

    def use(self, name: str) -> str:
        self.names[name] = None
        return name


@dataclass(frozen=True)
class Group:
    """A fused product in the forward: products (B, G H) = operand (B, K) @ MT (K, G H)."""

    gemm: Gemm
    width: int  # G, the number of products side by side
    index: str  # the loop index of a product in this group's buffer


def _block(
    names: CNames, block: Block, real: RealType, group_of: dict[str, Group], state, infer=False
):
    """The body of a pointwise block's loop, and the names it uses.

    A forward block reads each product from its group's buffer and keeps the ones the backward
    needs in `saved`; a backward block writes each product's adjoint once, into the buffer the
    plan gives it (adjoints that copy one value share one). An inference block keeps nothing:
    new states go to buffers of one step, and values a later stage needs to step buffers, all
    with rows Hp apart.
    """
    kernel = names.kernel
    defined = {a.name for a in block.assignments}
    used = Used()
    indices: dict[str, str] = {}
    keep: list[str] = []

    def index(group: Group | None) -> str:
        name = group.index if group else "n"
        size = group.gemm.width if group else block.size
        indices[name] = size_text(padded(size) if infer else size)
        return name

    def at(sym: str) -> str:
        """The index of a symbol's entry in a buffer of one step: a per-row scalar's is b."""
        return "b" if kernel.size(sym) == 1 else index(None)

    def read(sym: str) -> str:
        if sym in defined:
            return names(sym)
        units = units_size(sympy.Symbol(sym, integer=True, positive=True))
        if units is not None:
            return f"(({real.c}){units})"  # a mean's count
        role = kernel.role(sym)
        if role is Role.PARAM:
            return f"{used.use(names(sym))}[j]"
        if infer and role is Role.STATE:
            return f"{used.use(names.new_state(sym))}[{index(None)}]"
        if infer and role in (Role.SAVED, Role.TEMP):
            return f"{used.use(names.step(sym))}[{at(sym)}]"
        if role is Role.PRODUCT and sym in group_of:  # the forward
            if sym in kernel.saved and sym not in state["copied"] and not infer:
                state["copied"].add(sym)
                keep.append(sym)
            return f"{used.use(names(sym))}[{index(group_of[sym])}]"
        if role in (Role.SAVED, Role.STATE, Role.PRODUCT):
            return f"{used.use(names.at_t(sym))}[{at(sym)}]"
        if role in (Role.STATE_PREV, Role.ADJ_MM):
            return f"{used.use(names(sym))}[{index(None)}]"
        if role is Role.ADJ_IN:
            return names(sym)  # a local defined at the top of the loop body
        return f"{used.use(names.step(sym))}[{at(sym)}]"  # from an earlier block

    printer = CPrinter(real, read, "infer_" if infer else "")
    lines: list[str] = []
    incoming = {r.incoming: r for r in kernel.recurrences}
    for sym in block.reads:
        if sym == kernel.output_incoming:  # an output equation's adjoint: dys alone
            lines.append(f"const {real.c} {names(sym)} = {used.use('dys_t')}[{index(None)}];")
        r = incoming.get(sym)
        if r is not None:
            terms = [f"{used.use(names.carried(r.state))}[{index(None)}]"]
            if r.from_output:
                terms.insert(0, f"{used.use('dys_t')}[n]")
            lines.append(f"const {real.c} {names(sym)} = {' + '.join(terms)};")
    out = lines
    for a in block.assignments:
        if a.comment:
            out.append(f"/* {a.comment} */")
        role = kernel.role(a.name)
        if role is Role.ADJ_PRODUCT:
            target = kernel.adjoint_buffer[a.name]
            if target in state["stored"]:
                continue  # a copy of a value another product's adjoint already holds
            state["stored"].add(target)
            lines.append(f"{used.use(names(target))}[{index(None)}] = {printer.doprint(a.expr)};")
            continue
        value = printer.doprint(a.expr)
        if role is Role.ADJ_PARAM:
            out.append(f"{used.use(names(a.name))}[j] += {value};")
        elif role in (Role.ADJ_STATE_PREV, Role.ADJ_INPUT):
            out.append(f"{used.use(names(a.name))}[{index(None)}] = {value};")
        else:
            out.append(f"const {real.c} {names(a.name)} = {value};")
    handed_on = set(kernel.infer_step_values) if infer else set()

    def write(buffer: str, sym: str) -> None:
        lines.append(f"{used.use(buffer)}[{at(sym)}] = {names(sym)};")

    for sym in block.writes if not infer else ():
        role = kernel.role(sym)
        if role in (Role.SAVED, Role.STATE):
            write(names.at_t(sym), sym)
        elif role in (Role.TEMP, Role.ADJ):
            write(names.step(sym), sym)
    for a in block.assignments if infer else ():
        if kernel.role(a.name) is Role.STATE:
            write(names.new_state(a.name), a.name)
        elif a.name in handed_on:
            write(names.step(a.name), a.name)
    for sym in keep:  # a product the backward reads
        group = group_of[sym]
        lines.append(f"{used.use(names.at_t(sym))}[n] = {names(sym)}[{index(group)}];")
        index(None)
    ordered = sorted(indices.items(), key=lambda kv: (len(kv[0]), kv[0]))
    loop_indices = [{"name": k, "row": v} for k, v in ordered]
    body = {
        "gemm": None,
        "reduce": None,
        "lines": lines,
        "indices": loop_indices,
        "size": size_text(block.size),
        "padded": size_text(padded(block.size)),
    }
    return body, list(used.names)


def _reduce(names: CNames, r: Reduce, real: RealType, group_of: dict, infer: bool = False):
    """A reduction over units: for each row, the sum of its operands' units in order (so that
    inference and the forward add the same numbers in the same order), over the count for a
    mean. Its operands and result live in the buffers the blocks hand values through."""
    kernel = names.kernel
    used = Used()

    def buffer(sym: str) -> str:
        role = kernel.role(sym)
        if role is Role.PRODUCT:  # in its fused product's buffer, rows of G H
            return used.use(names(sym))
        if infer and role is Role.STATE:
            return used.use(names.new_state(sym))
        if not infer and role in (Role.SAVED, Role.STATE):
            return used.use(names.at_t(sym))
        return used.use(names.step(sym))

    def operand(sym: str) -> dict:
        """Its buffer, its units, and the numbers between its rows (G H in a product's; in
        inference's buffers, rows padded to Hp)."""
        row = group_of[sym].gemm.width if sym in group_of else kernel.size(sym)
        units = size_text(kernel.size(sym))
        row = padded(row) if infer else row
        return {"name": buffer(sym), "units": units, "row": size_text(row)}

    count = "" if r.kind == "sum" else f" / ({real.c})({size_text(r.count)})"
    body = {
        "result": buffer(r.result),
        "operands": [operand(o) for o in r.operands],
        "scale": count,
        "comment": f"{r.result} = {r.kind} over the units of {', '.join(r.operands)}",
    }
    return {"gemm": None, "reduce": body}, list(used.names)


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


def signatures(names: CNames, real: RealType) -> dict[str, str]:
    """The parameter lists of forward and backward, in the order the ctypes wrapper passes."""
    cell, r = names.kernel.cell, real.c
    d = names.kernel.names.of
    extra = [f"size_t {z}" for z in cell.sizes]  # declared sizes, after H
    dims = ["size_t T", "size_t B", "size_t I", "size_t H", *extra]
    states0 = [f"const {r} *{names.state0(s)}" for s in cell.states]
    params = [f"const {r} *{names(p.name)}" for p in cell.params]
    rows = ["const int32_t *lengths", "int reverse"]
    forward = [
        dims,
        [f"const {r} *xs"],
        rows,
        states0,
        params,
        [f"{r} *ys"] + [f"{r} *{names.final(s)}" for s in cell.states],
        [f"{r} *saved", f"{r} *work"],
    ]
    backward = [
        dims,
        [f"const {r} *xs"],
        rows,
        states0,
        params,
        [f"const {r} *ys", f"const {r} *saved", f"const {r} *dys"],
        [f"const {r} *{names.d_final(s)}" for s in cell.states],
        [f"{r} *dxs"] + [f"{r} *{names.d_state0(s)}" for s in cell.states],
        [f"{r} *{names(d(p.name))}" for p in cell.params],
        [f"{r} *work"],
    ]
    pack = [["size_t I", "size_t H", *extra], params, [f"{r} *packed"]]
    infer = [
        dims,
        [f"const {r} *packed", f"const {r} *xs"],
        rows,
        [f"{r} *{names.state_io(s)}" for s in cell.states],
        [f"{r} *ys", f"{r} *work"],
    ]
    return {
        "forward": _wrap(forward),
        "backward": _wrap(backward),
        "pack": _wrap(pack),
        "infer": _wrap(infer),
        "infer_args": ", ".join(p.rsplit(" ", 1)[-1].lstrip("*") for g in infer for p in g),
    }


class _Context:
    """The template context of one cell's C file, built by one small method per part."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel, self.cell = kernel, kernel.cell
        self.names = CNames(kernel)
        self.d = kernel.names.of
        self.groups = [
            Group(g, len(g.products), self.names.index(len(g.products))) for g in kernel.gemms
        ]
        self.group_of = {p: gr for gr in self.groups for p in gr.gemm.products}
        self.buffer_of = {(b.kind, b.symbol): self.names.buffer(b) for b in kernel.forward_buffers}
        self.gemms = [self.group(gr) for gr in self.groups]
        self.by_gemm = {gr.gemm: ctx for gr, ctx in zip(self.groups, self.gemms, strict=True)}
        self.infer_group_of = self.infer_groups()
        self.fused_ctx = self.fused() if kernel.fused else None
        self.forward_used: set[str] = set()  # names the passes' code uses, as they are printed
        self.backward_used: set[str] = set()
        self.types = [self.passes(real) for real in TYPES]

    def series_base(self, name: str) -> str:
        """The (T, B, size) array of a state or saved value."""
        if name == self.cell.output:
            return "ys_seq"  # ys in loop order
        return f"(saved + {self.series_offset(name)})"

    def series_offset(self, name: str) -> str:
        """Where a sequence starts in `saved`: `2 * T * BH + T * BP`, `0 * T * BH` for the
        first (as many T * B * size before it)."""
        kernel = self.kernel
        counts: dict[sympy.Expr, int] = {kernel.size(self.cell.output): 0}
        for v in kernel.series[: kernel.series.index(name)]:
            counts[kernel.size(v)] = counts.get(kernel.size(v), 0) + 1
        terms = [f"{n} * T * {row_stride(z)}" for z, n in counts.items() if n or len(counts) == 1]
        return " + ".join(terms) or "0"

    def stride(self, name: str) -> str:
        """B * the symbol's size: one step of its (T, B, size) sequence."""
        return row_stride(self.kernel.size(name))

    def operand(self, g: Gemm) -> str:
        """The pointer to a product's operand at step t."""
        names, kernel = self.names, self.kernel
        if g.operand_role is Role.STATE_PREV:
            return names(g.operand)
        if g.operand in kernel.saved or kernel.role(g.operand) is Role.STATE:
            return names.at_t(g.operand)
        return names.step(g.operand)

    def infer_operand(self, g: Gemm) -> str:
        """Inference: the pointer to a product's operand in this step's buffers."""
        names = self.names
        if g.operand_role in (Role.STATE_PREV, Role.INPUT):
            return names(g.operand)
        if self.kernel.role(g.operand) is Role.STATE:
            return names.new_state(g.operand)
        return names.step(g.operand)

    def group(self, gr: Group) -> dict:
        """One fused product: its matrices, buffers and adjoints."""
        g, names, d, kernel = gr.gemm, self.names, self.d, self.kernel
        written = {a.name for s in kernel.backward if isinstance(s, Block) for a in s.assignments}
        d_operand = names(kernel.names.through_products(g.operand))
        if g.operand_role is Role.STATE_PREV:
            d_operand = names(d(g.operand))
        unit = str(g.size)
        return {
            "hoisted": g.hoisted,
            "size": "I" if g.hoisted else str(g.operand_size),
            "operand_stride": "BI" if g.hoisted else row_stride(g.operand_size),
            "infer_operand_stride": "I" if g.hoisted else size_text(padded(g.operand_size)),
            "unit": unit,
            "width": size_text(g.width),
            "infer_width": size_text(padded(g.width)),
            "operand": self.operand(g),
            "packed": self.buffer_of[("packed", g.operand)],
            "products": self.buffer_of[("products", g.operand)],
            "d_operand": d_operand,
            "infer_operand": self.infer_operand(g),
            # the pointwise part of a previous state's adjoint is written before the products
            "accumulate": g.operand_role is Role.STATE_PREV and d(g.operand) in written,
            "pairs": [
                {
                    "matrix": names(m),
                    "product": names(p),
                    "offset": f"{k} * {unit}",
                    "infer_offset": f"{k} * {padded(g.size)}",
                    "d_product": names(kernel.adjoint_buffer[d(p)]),
                    "d_product_all": names.buffer(
                        Buffer("adjoints", kernel.adjoint_buffer[d(p)], 0)
                    ),
                }
                for k, (m, p) in enumerate(zip(g.matrices, g.products, strict=True))
            ],
        }

    def infer_groups(self) -> dict[str, Group]:
        """Inference's buffer of each product the pointwise stages read: its group's, or with a
        fused product, the fused buffer (each together gate's sum, an apart gate's W x) and the
        apart buffer (an apart gate's U h)."""
        f, names = self.kernel.fused, self.names
        if not f:
            return self.group_of
        out = {p: gr for p, gr in self.group_of.items() if gr.gemm not in (f.input, f.recurrent)}
        outputs = tuple(b.value or b.x_product for b in f.blocks)
        fused = Gemm("", (), outputs, 0, Role.STATE_PREV, f.size)
        out |= dict.fromkeys(outputs, Group(fused, len(outputs), names.index(len(outputs))))
        if f.apart:
            apart = Gemm("", (), tuple(b.h_product for b in f.apart), 0, Role.STATE_PREV, f.size)
            group = Group(apart, len(f.apart), names.index(len(f.apart)))
            out |= dict.fromkeys(apart.products, group)
        return out

    def fused(self) -> dict:
        """Inference's fused product: its weights, initial values, buffers and widths."""
        f, names = self.kernel.fused, self.names
        assert f is not None
        return {
            "packed": names.buffer(Buffer("fused_MT", "", 0)),
            "init": names.buffer(Buffer("fused_init", "", 0)),
            "products": names.buffer(Buffer("fused_products", "", 0)),
            "products_t": names.ids.local("fused_products_t"),  # the rows of step t
            "apart": names.buffer(Buffer("apart_products", "", 0)) if f.apart else "",
            "width": size_text(padded(len(f.blocks) * f.size)),
            "together": size_text(padded(len(f.together) * f.size)),
            "apart_width": size_text(padded(len(f.apart) * f.size)) if f.apart else "0",
            "rows": f"I + {f.recurrent.operand_size}",
            "K": str(f.recurrent.operand_size),
            "operand": names(f.recurrent.operand),
            "operand_stride": size_text(padded(f.recurrent.operand_size)),
        }

    def infer_products(self) -> list[dict]:
        """The pointer of each product inference's pointwise stages read, into its buffer: row
        `k` of `width` numbers, at step t's rows for a buffer of several steps (`hoisted`)."""
        f, names, out = self.kernel.fused, self.names, []

        def pointer(name, base, hoisted, width, offset, doc=""):
            return {"name": name, "base": base, "hoisted": hoisted, "width": width,
                    "offset": offset, "doc": doc}  # fmt: skip

        for gr, g in zip(self.groups, self.gemms, strict=True):
            if f and gr.gemm in (f.input, f.recurrent):
                continue
            out += [
                pointer(p["product"], g["products"], g["hoisted"], g["infer_width"],
                        p["infer_offset"])
                for p in g["pairs"]
                if p["product"] in self.forward_used
            ]  # fmt: skip
        if not f:
            return out
        ctx, unit = self.fused_ctx, padded(f.size)
        for k, b in enumerate(f.blocks):
            terms = [b.x_product, b.h_product] + ([b.bias] if b.bias else [])
            doc = " + ".join(terms) if b.value else ""
            name = names(b.value or b.x_product)
            out.append(pointer(name, ctx["products"], True, ctx["width"], f"{k} * {unit}", doc))
        for k, b in enumerate(f.apart):
            out.append(pointer(names(b.h_product), ctx["apart"], False, ctx["apart_width"],
                               f"{k} * {unit}"))  # fmt: skip
        return out

    def input_part(self) -> dict | None:
        """The input's products inference computes ahead of a step (all of a chunk's steps at
        once when hoisted): the input group's, or the input rows of the fused product, which
        then start at each gate's initial value."""
        if self.fused_ctx:
            ctx = self.fused_ctx
            return {"packed": ctx["packed"], "rows": ctx["rows"], "init": ctx["init"],
                    "products": ctx["products"], "width": ctx["width"]}  # fmt: skip
        for g in self.gemms:
            if g["hoisted"]:
                return {"packed": g["packed"], "rows": "I", "init": "NULL",
                        "products": g["products"], "width": g["infer_width"]}  # fmt: skip
        return None

    def forward_products(self) -> list[dict]:
        """Each product the forward's pointwise stages read, with its group."""
        return [
            {"name": p["product"], "group": g, "offset": p["offset"]}
            for g in self.gemms
            for p in g["pairs"]
            if p["product"] in self.forward_used
        ]

    def weight_gradient(self, w) -> dict:
        """One matrix's gradient: a product over all steps per segment of its operand."""
        names = self.names
        operands = []
        for seg in w.segments:
            if seg.source is Role.INPUT:
                pointer = "xs"
            elif seg.source is Role.STATE_PREV:
                pointer = names.state0(seg.symbol)
            else:
                pointer = self.series_base(seg.symbol)
            adjoint = names.buffer(Buffer("adjoints", w.adjoint, 0))
            stride = row_stride(size_symbol(w.rows))
            if seg.first_step:
                adjoint += (
                    f" + {seg.first_step} * {stride}" if seg.first_step != 1 else f" + {stride}"
                )
            operands.append({"rows": size_text(seg.rows), "operand": pointer, "adjoint": adjoint})
        return {
            "d_matrix": names(self.d(w.matrix)),
            "size": w.size,
            "rows": w.rows,
            "operands": operands,
        }

    def passes(self, real: RealType) -> dict:
        """The forward, backward and inference steps of one real type, as the template loops
        over them; records the names each pass uses."""
        fwd, bwd, infer = [], [], []
        state = {"copied": set(), "stored": set()}
        for step in self.kernel.forward:
            if isinstance(step, Gemm):
                fwd.append({"gemm": self.by_gemm[step]})
                self.forward_used.add(self.by_gemm[step]["operand"])
                continue
            if isinstance(step, Reduce):
                body, used = _reduce(self.names, step, real, self.group_of)
                fwd.append(body)
                self.forward_used |= set(used)
                continue
            body, used = _block(self.names, step, real, self.group_of, state)
            fwd.append(body)
            self.forward_used |= set(used)
        for step in self.kernel.backward:
            if isinstance(step, Gemm):
                ctx = self.by_gemm[step]
                bwd.append({"gemm": ctx})
                if not ctx["hoisted"]:
                    self.backward_used |= {ctx["d_operand"]}
                    self.backward_used |= {p["d_product"] for p in ctx["pairs"]}
                continue
            if isinstance(step, Reduce):
                body, used = _reduce(self.names, step, real, {})
                bwd.append(body)
                self.backward_used |= set(used)
                continue
            body, used = _block(self.names, step, real, {}, state)
            bwd.append(body)
            self.backward_used |= set(used)
        groups = self.infer_group_of
        for step in self.kernel.infer_steps:
            if isinstance(step, FusedProduct):
                infer.append({"fused": self.fused_ctx})
            elif isinstance(step, Gemm):
                infer.append({"gemm": self.by_gemm[step]})
            elif isinstance(step, Reduce):
                infer.append(_reduce(self.names, step, real, groups, infer=True)[0])
            else:
                infer.append(_block(self.names, step, real, groups, state, infer=True)[0])
        return {
            "real": real,
            "forward": fwd,
            "backward": bwd,
            "infer": [{"fused": None, "gemm": None, "reduce": None, **step} for step in infer],
            "signature": signatures(self.names, real),
        }

    def unused(self) -> dict:
        """Parameters a pass does not read (a (void) cast each) and the saved pointers it does."""
        names, cell, kernel = self.names, self.cell, self.kernel
        used_f, used_b = self.forward_used, self.backward_used
        saved_pointers = [
            {"pointer": names.at_t(v), "offset": self.series_offset(v), "stride": self.stride(v)}
            for v in kernel.series
            if v not in cell.states
        ]
        in_saved = [s for s in cell.states if s != cell.output]  # their sequences are in saved
        forward_saved = [v for v in saved_pointers if v["pointer"] in used_f]
        backward_saved = [v for v in saved_pointers if v["pointer"] in used_b]
        state_reads = {
            s for s in cell.states if names(prev_name(s)) in used_b or names.at_t(s) in used_b
        }
        in_backward = [names.state0(s) for s in cell.states if names(prev_name(s)) not in used_b]
        if not backward_saved and not state_reads & set(in_saved):
            in_backward.append("saved")
        output_segments = [
            seg for w in kernel.weight_gradients for seg in w.segments
            if seg.symbol == cell.output and seg.source in (Role.STATE, Role.SAVED)
        ]  # fmt: skip
        if (
            cell.output not in state_reads
            and not output_segments
            and (names.at_t(cell.output) not in used_b)
        ):
            in_backward.append("ys")  # h = h_prev + W x: its backward never reads h
        in_backward += [
            names(p.name) for p in cell.params if p.kind == "vector" and names(p.name) not in used_b
        ]
        return {
            "unused_in_forward": [] if forward_saved or in_saved else ["saved"],
            "unused_in_backward": in_backward,
            "forward_saved": forward_saved,
            "backward_saved": backward_saved,
        }

    def buffers(self, bufs: tuple[Buffer, ...]) -> list[dict]:
        return [
            {
                "name": self.names.buffer(b),
                "size": size_text(b.size),
                "kind": b.kind,
                "doc": b.doc,
                "symbol_name": self.names(b.symbol) if "adjoints" in b.kind else "",
                "stride": self.stride(b.symbol) if b.symbol in self.kernel.sizes else "",
            }
            for b in bufs
        ]

    def states(self) -> list[dict]:
        names, d = self.names, self.d
        return [
            {
                "name": names(s),
                "prev": names(prev_name(s)),
                "series": self.series_base(s),
                "at_t": names.at_t(s),
                "state0": names.state0(s),
                "final": names.final(s),
                "d_final": names.d_final(s),
                "d_state0": names.d_state0(s),
                "d_prev": names(d(prev_name(s))),
                "d_next": names.carried(s),
                "d_next_a": names.buffer(Buffer("carried", s, 0, "a")),
                "d_next_b": names.buffer(Buffer("carried", s, 0, "b")),
                "io": names.state_io(s),
                "cur": names.current_state(s),
                "new": names.new_state(s),
                "forward_prev": names(prev_name(s)) in self.forward_used,
                "backward_prev": names(prev_name(s)) in self.backward_used,
                "backward_new": names.at_t(s) in self.backward_used,
                "size": str(self.kernel.size(s)),
                "padded": str(padded(self.kernel.size(s))),
                "stride": self.stride(s),
            }
            for s in self.cell.states
        ]

    def sequences(self) -> dict:
        """What lengths and direction mean, as the plan states it, spelled in C."""
        seq, names, cell = self.kernel.sequencing, self.names, self.cell
        at_row = {seq.length: sympy.Symbol("(size_t)lengths[b]")}
        inputs = {p["d_product_all"]: g["unit"] for g in self.gemms if g["hoisted"]
                  for p in g["pairs"]}  # fmt: skip
        d_x = self.names(self.d(cell.input))
        if self.kernel.input_elementwise and d_x in self.backward_used:
            inputs[names.buffer(Buffer("input_adjoints", self.d(cell.input), 0))] = "I"
        return {
            "active": f"{seq.loop} < L",
            "active_c": sympy.ccode(seq.active.subs(at_row)),
            "reverse_step": sympy.ccode(seq.reverse_step),
            "sequences": [
                {
                    "base": self.series_base(v),
                    "size": str(self.kernel.size(v)),
                    "stride": self.stride(v),
                }
                for v in self.kernel.series
            ]
            + [
                {
                    "base": "ys",
                    "size": str(self.kernel.size(cell.output)),
                    "stride": self.stride(cell.output),
                }
            ],
            "ys_loop": names.buffer(Buffer("loop_order", cell.output, 0)),
            "dys_loop": names.buffer(Buffer("loop_order_step", cell.output, 0)),
            "adjoint_sequences": [
                {
                    "name": names.buffer(b),
                    "size": str(self.kernel.size(b.symbol)),
                    "stride": self.stride(b.symbol),
                }
                for b in self.kernel.backward_buffers
                if b.kind in ("adjoints", "input_adjoints")
            ],
            "input_adjoints": [{"name": a, "size": z} for a, z in inputs.items()],
        }


def context(kernel: Kernel) -> dict:
    """Everything kernel.c.jinja and kernel.h.jinja need."""
    c = _Context(kernel)
    names, cell = c.names, kernel.cell
    step_adjoints = [names(b) for b in kernel.adjoint_buffers if names(b) in c.backward_used]
    d_x = kernel.names.of(cell.input)
    input_adjoint = kernel.input_elementwise and names(d_x) in c.backward_used
    step_adjoints += [names(d_x)] if input_adjoint else []
    output_equation = cell.output not in cell.states
    return {
        **c.sequences(),
        **c.unused(),
        "cell": cell,
        "guard": f"CELLGEN_{cell.name.upper()}_H",
        "prefix": f"cellgen_{cell.name}",
        "param_shapes": _shapes_text(cell),
        "states": c.states(),
        "dys_in_backward": "dys_t" in c.backward_used,
        "extra_sizes": list(cell.sizes),
        # the declared sizes as the size functions take them, after H
        "extra_args": "".join(f", size_t {z}" for z in cell.sizes),
        "extra_dargs": "".join(f", double {z}" for z in cell.sizes),
        "extra_names": "".join(f", {z}" for z in cell.sizes),
        "extra_casts": "".join(f", (double){z}" for z in cell.sizes),
        "extra_voids": "".join(f", (void){z}" for z in cell.sizes),
        "strides": [{"name": row_stride(size_symbol(z)), "size": z} for z in cell.sizes],
        "paddings": _paddings(kernel),
        "output_size": str(kernel.size(cell.output)),
        "output_padded": str(padded(kernel.size(cell.output))),
        "input_padded": str(padded(kernel.size(cell.input))),
        "state_shapes": _state_shapes_text(kernel),
        "output_stride": c.stride(cell.output),
        "params": [
            {"name": names(p.name), "d_name": names(c.d(p.name)), "size": " * ".join(p.shape)}
            for p in cell.params
        ],
        "saved_size": size_text(kernel.saved_size),
        "forward_products": c.forward_products(),
        "infer_products": c.infer_products(),
        "fused": c.fused_ctx,
        "input_part": c.input_part(),
        "forward_buffers": c.buffers(kernel.forward_buffers),
        "infer_buffers": c.buffers(kernel.infer_buffers),
        "packed": _packed_parts(names, kernel),
        "packed_size": size_text(kernel.packed_size),
        "infer_work": size_text(kernel.infer_work_size),
        "infer_chunk": INFER_CHUNK,
        "infer_in_place": _in_place_condition(kernel),
        "output_new": names.step(cell.output) if output_equation else names.new_state(cell.output),
        # an output equation is written to ys at each step, through this pointer
        "output_at_t": names.at_t(cell.output) if output_equation else "",
        "output_read_back": output_equation and names.at_t(cell.output) in c.backward_used,
        # the rows of x_t gathered for pointwise stages that read the input; its adjoint
        "input_step": names.step(cell.input) if kernel.input_elementwise else "",
        "input_adjoint": names.buffer(Buffer("input_adjoints", d_x, 0)) if input_adjoint else "",
        "backward_buffers": c.buffers(kernel.backward_buffers),
        "step_adjoints": step_adjoints,
        "gemms": c.gemms,
        "weight_gradients": [c.weight_gradient(w) for w in kernel.weight_gradients],
        "forward_work": size_text(kernel.forward_work_size),
        "backward_work": size_text(kernel.backward_work_size),
        "types": c.types,
        "helpers": helpers(kernel.functions),
        "infer_helpers": helpers(kernel.forward_functions),  # inference runs the forward only
    }


def _in_place_condition(kernel: Kernel) -> str:
    """When inference updates the caller's state arrays in place: the plan allows it and no
    state's rows are padded (its size a multiple of 16), so that the arrays' rows are the
    padded rows; "0" for never."""
    if not kernel.infer_in_place:
        return "0"
    sizes = dict.fromkeys(kernel.size(s) for s in kernel.states)
    return " && ".join(f"{size_text(z)} == {size_text(padded(z))}" for z in sizes)


def _packed_parts(names: CNames, kernel: Kernel) -> list[dict]:
    """Where each piece of the inference weights starts in `packed`, and how pack fills it."""
    out, offset = [], sympy.S.Zero
    for part in kernel.packed:
        if part.kind in ("matrices", "fused"):
            entry = _packed_matrices(names, kernel, part)
        elif part.kind == "init":
            f = kernel.fused
            assert f is not None
            entry = {
                "kind": "init",
                "name": names.buffer(Buffer("fused_init", "", 0)),
                "doc": "each gate's initial value in the fused product: its bias, or zeros",
                "rows": size_text(f.size),
                "padded_size": size_text(part.size),
                "biases": [
                    {"name": names(bias), "offset": f"{k} * {padded(f.size)}"}
                    for k, bias in enumerate(part.matrices)
                    if bias
                ],
            }
        else:
            entry = {
                "kind": "vector",
                "name": names(part.symbol),
                "rows": size_text(kernel.size(part.symbol)),
                "padded_size": size_text(part.size),
            }
        entry["offset"] = size_text(offset) if offset != 0 else "0"
        entry["size"] = size_text(part.size)
        out.append(entry)
        offset += part.size
    return out


def _packed_matrices(names: CNames, kernel: Kernel, part) -> dict:
    """A group of matrices in panels: one product's, or the fused product's (the input's
    matrices in rows 0..I-1, the recurrent ones below)."""
    width = size_text(part.columns)
    if part.kind == "fused":
        f = kernel.fused
        assert f is not None
        unit, K = f.size, str(f.recurrent.operand_size)
        Kp = f"I + {K}"
        name = names.buffer(Buffer("fused_MT", "", 0))
        doc = (f"{', '.join(part.matrices)} in panels, for the fused product of "
               f"{f.input.operand} and {f.recurrent.operand}")  # fmt: skip
        n = len(f.blocks)
        matrices = [
            {"name": names(m), "K": "I" if k < n else K, "k0": "0" if k < n else "I",
             "offset": f"{k % n} * {padded(unit)}"}
            for k, m in enumerate(part.matrices)
        ]  # fmt: skip
    else:
        g = next(g for g in kernel.gemms if g.operand == part.symbol)
        unit = g.size
        Kp = "I" if g.hoisted else str(g.operand_size)
        name = names.buffer(Buffer("packed", part.symbol, 0))
        doc = f"{', '.join(part.matrices)} in panels, for the products of {part.symbol}"
        matrices = [
            {"name": names(m), "K": Kp, "k0": "0", "offset": f"{k} * {padded(unit)}"}
            for k, m in enumerate(part.matrices)
        ]
    return {
        "kind": "matrices",
        "name": name,
        "doc": doc,
        "padded_size": f"infer_group_size({Kp}, {width})",
        "bf16_size": f"infer_group_size_bf16({Kp}, {width})",
        "Kp": Kp,
        "rows": str(unit),
        "width": width,
        "matrices": matrices,
    }


def _paddings(kernel: Kernel) -> list[dict]:
    """Inference's padded row of each size (Hp = infer_pad(H), ...) and which of the size
    formulas name it (the others cast it to void)."""
    out = []
    for z in ("H", *kernel.cell.sizes):
        name = padded(size_symbol(z))
        packed = name in kernel.packed_size.free_symbols
        work = name in kernel.infer_work_size.free_symbols
        out.append({"name": str(name), "size": z, "packed": packed, "work": work})
    return out


def _state_shapes_text(kernel: Kernel) -> str:
    """`each state (B, H)`, or each state's own when their sizes differ: `h (B, P), c (B, H)`."""
    sizes = [str(kernel.size(s)) for s in kernel.cell.states]
    if len(set(sizes)) == 1:
        return f"each state (B, {sizes[0]})"
    return ", ".join(f"{s} (B, {z})" for s, z in zip(kernel.cell.states, sizes, strict=True))


def _shapes_text(cell) -> str:
    """`W_f W_i (H, I); b_f (H)`: the parameters grouped by shape."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for p in cell.params:
        groups.setdefault(p.shape, []).append(p.name)
    return "; ".join(f"{' '.join(names)} ({', '.join(shape)})" for shape, names in groups.items())
