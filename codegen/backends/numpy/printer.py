"""NumPy spelling of a kernel: the lines of kernel.py.jinja's forward and backward.

The generated module allocates every array before the loop over steps and writes into it with
out= arguments (lowering.py); the gates of a step share stacked arrays so that one call covers
several of them (layout.py). It is complex-safe for complex-step differentiation: no abs, no
comparisons on complex values (indicators compare real parts), and every array takes the dtype
of the inputs, so a float32 run makes no float64 temporaries.
"""

from __future__ import annotations

import re

import sympy

from ...cell import prev_name
from ...derive import adjoint_name, gemm_name, incoming_name
from ...kernel import Block, Gemm, Kernel, Role
from .layout import GroupLayout, Layout, build_layout, state_of_prev
from .lowering import Lowering, Place, Scratch, Statement, slice_text
from .names import FUNCTIONS, ident, number


def _cols(width: int) -> str:
    return "H" if width == 1 else f"{width} * H"


def _work(name: str, shape: str) -> str:
    return f'_work("{name}", {shape}, dtype)'


class Pass:
    """The places of one pass (forward or backward) and the lines of its loop body."""

    def __init__(self, kernel: Kernel, layout: Layout, stacks: set[str]) -> None:
        self.kernel, self.layout, self.stacks = kernel, layout, stacks
        self.scratch = Scratch()
        self.aliases: dict[str, str] = {}  # a plain copy -> the symbol it copies
        self.lowering = Lowering(layout, self.place, ident, FUNCTIONS, number, self.scratch)

    def place(self, sym: str) -> Place:
        sym = self.aliases.get(sym, sym)
        where = self.layout.slot.get(sym)
        if where and where[0] in self.stacks:
            return Place(where[0], where[1])
        return Place(None, name=ident(sym))

    def bound(self) -> set[str]:
        return self.lowering.bound

    def use(self, sym: str) -> str:
        """The name of a symbol in the step, which the step then binds."""
        return self.lowering.text(sym)

    def block(self, block: Block, exprs: dict[str, sympy.Expr], read_after=()) -> list[str]:
        """The lines of a block's statements, in a merged schedule."""
        statements, lines = [], []
        read = {s.name for a in block.assignments for s in a.expr.free_symbols} | set(read_after)
        for k, a in enumerate(block.assignments):
            comments = [a.comment] if a.comment else []
            statements.append(Statement(a.name, exprs.get(a.name, a.expr), comments, k))
        for run in self.lowering.schedule(statements):
            st = run[0]
            if len(run) == 1 and self._alias(st):
                if st.target in read:
                    lines += [f"# {c}" for c in st.comments]
                    lines.append(f"{ident(st.target)} = {self.use(st.expr.name)}")
                continue
            lines += self.lowering.lower(run)
        return lines

    def _alias(self, st: Statement) -> bool:
        """A plain copy into a symbol with no place of its own is just another name."""
        if not isinstance(st.expr, sympy.Symbol) or self.owns_place(st.target):
            return False
        self.aliases[st.target] = self.aliases.get(st.expr.name, st.expr.name)
        return True

    def owns_place(self, sym: str) -> bool:
        where = self.layout.slot.get(sym)
        if where and where[0] in self.stacks:
            return True
        return self.kernel.roles.get(sym) in (Role.SAVED, Role.STATE, Role.ADJ_STATE_PREV)

    def buffers(self) -> list[str]:
        """Arrays of one step for the values that live nowhere else: (B, H) each."""
        out = []
        for sym in sorted(self.bound()):
            if sym in self.aliases or self.owns_place(sym) or self.place(sym).stack:
                continue
            role = self.kernel.roles.get(sym)
            if role in (Role.TEMP, Role.ADJ, Role.ADJ_MM, Role.ADJ_PARAM) or (
                role is Role.ADJ_IN and sym == incoming_name(self.kernel.cell.output)
            ):
                out.append(f"{ident(sym)} = {_work(ident(sym), '(B, H)')}")
        return out + [
            f"{name} = {_work(name, f'(B, {_cols(width)})')}"
            for width, names in sorted(self.scratch.names.items())
            for name in names
        ]


def context(kernel: Kernel) -> dict:
    """Everything kernel.py.jinja needs, with names already made safe."""
    cell = kernel.cell
    layout = build_layout(kernel)
    prevs = state_of_prev(kernel)
    used = kernel.functions

    def series(name: str) -> str:
        """The (T, B, H) array of a state or saved value."""
        return "ys" if name == cell.output else f"{ident(name)}_seq"

    def prev_line(s: str) -> str:
        return f'{ident(prev_name(s))} = {series(s)}[t - 1] if t > 0 else state0["{s}"]'

    groups = layout.groups
    stacks = layout.stacks
    gate_stack = stacks.get("gates")
    saved_products = [p for p in kernel.saved if kernel.role(p) is Role.PRODUCT]
    in_gates = {v for v in kernel.saved if layout.slot.get(v, ("",))[0] == "gates"}
    hoisted_saved = {p for g in groups if g.gemm.hoisted for p in g.products} & set(kernel.saved)

    # forward -----------------------------------------------------------------------------------
    fwd = Pass(kernel, layout, {"gates"} | {f"{ident(g.name)}_products" for g in groups})
    pre_exprs: dict[str, sympy.Expr] = {}
    for gate in layout.gates:
        bias = layout.folded.get(gate.x_product)
        if bias:  # added to the input products before the loop
            terms = list(sympy.Add.make_args(_find(kernel.forward, gate.pre)))
            terms.remove(sympy.Symbol(bias))
            pre_exprs[gate.pre] = sympy.Add(*terms)
    body: list[str] = []
    for step in kernel.forward:
        if isinstance(step, Gemm):
            g = _group(layout, step)
            op = ident(g.name)
            operand = ident(g.name) if g.name in prevs else fwd.use(g.name)
            fwd.bound().add(g.name)
            body.append(f"np.matmul({operand}, MT_{op}, out={op}_products)")
            for k, p in enumerate(g.products):
                if p in saved_products:
                    body.append(
                        f"{ident(p)}_seq[t] = {slice_text(f'{op}_products', k, 1, g.width)}"
                    )
            continue
        body += fwd.block(step, pre_exprs)

    setup = []
    for g in groups:
        op = ident(g.name)
        setup.append(_stack(g))
        if not g.gemm.hoisted:  # transposed: h_prev @ MT_h_prev runs with unit stride
            setup.append(f"MT_{op} = {_work(f'MT_{op}', f'(H, {_cols(g.width)})')}")
            setup.append(f"np.copyto(MT_{op}, M_{op}.T)")
    for g in groups:
        if not g.gemm.hoisted:
            continue
        op = ident(g.name)
        products = ", ".join(m + " @ x" for m in g.matrices)
        setup.append(f"# the input products of all steps at once: {products}")
        setup.append(
            f"{op}_products_seq = {_work(f'{op}_products_seq', f'(T, B, {_cols(g.width)})')}"
        )
        setup.append(
            f"np.matmul(xs.reshape(T * B, I), M_{op}.T, out={op}_products_seq.reshape(T * B, -1))"
        )
        for k, p in enumerate(g.products):
            if p in hoisted_saved:
                setup.append(
                    f"{ident(p)}_seq = {op}_products_seq[:, :, {k} * H : {k + 1} * H].copy()"
                )
        biases = [layout.folded.get(p) for p in g.products]
        if any(biases):
            terms = [ident(b) if b else "np.zeros(H, dtype)" for b in biases]
            stacked = terms[0] if len(terms) == 1 else f"np.concatenate([{', '.join(terms)}])"
            setup.append(f"{op}_products_seq += {stacked}  # and the biases added to them")
    for s in cell.states:
        setup.append(f"{series(s)} = np.empty((T, B, H), dtype)")
    if gate_stack:
        shape = f"(T, B, {_cols(gate_stack.width)})"
        setup.append(f"gates_seq = np.empty({shape}, dtype)  # {gate_stack.comment}")
    for v in kernel.saved:
        if v not in in_gates and v not in hoisted_saved:
            setup.append(f"{ident(v)}_seq = np.empty((T, B, H), dtype)")
    for g in groups:
        if not g.gemm.hoisted:
            op = ident(g.name)
            setup.append(f"{op}_products = {_work(f'{op}_products', f'(B, {_cols(g.width)})')}")
    setup += fwd.buffers()
    forward_bindings = _bindings(kernel, layout, fwd, prevs, series, prev_line, body)

    cache_items = ['"xs": xs', '"state0": state0', '"params": params']
    for s in cell.states:
        cache_items.append(f'"{"ys" if s == cell.output else s}": {series(s)}')
    if gate_stack:
        cache_items.append('"gates": gates_seq')
    cache_items += [f'"{v}": {ident(v)}_seq' for v in kernel.saved if v not in in_gates]

    # backward ----------------------------------------------------------------------------------
    bwd = Pass(kernel, layout, {"gates", "d_gates"} | {g.adjoint for g in groups})
    body_b: list[str] = []
    incoming: set[str] = set()
    written = {a.name for s in kernel.backward if isinstance(s, Block) for a in s.assignments}
    bias_sums: list[tuple[str, int]] = []
    for step in kernel.backward:
        if isinstance(step, Gemm):
            g = _group(layout, step)
            if not g.gemm.hoisted:
                body_b += _backward_product(g, stacks, prevs, written, bwd)
            continue
        for sym in step.reads:
            if kernel.role(sym) is Role.ADJ_IN and sym not in incoming:
                incoming.add(sym)
                state = sym[len("d_") : -len("_in")]
                nxt = f"{ident(adjoint_name(state))}_next"
                if state == cell.output:
                    body_b.append(f"np.add(dys[t], {nxt}, out={bwd.use(sym)})")
                else:
                    body_b.append(f"{ident(sym)} = {nxt}")
        kept, sums = [], []
        for a in step.assignments:
            source = a.expr.name if isinstance(a.expr, sympy.Symbol) else None
            where = layout.slot.get(bwd.aliases.get(source, source)) if source else None
            if kernel.role(a.name) is Role.ADJ_PARAM and where and where[0] == "d_gates":
                bias_sums.append((a.name[len("d_") :], where[1]))  # summed after the loop
                continue
            kept.append(a)
            if kernel.role(a.name) is Role.ADJ_PARAM:
                sums.append(a.name)
        step = Block(step.level, tuple(kept), step.reads, step.writes)
        body_b += bwd.block(step, {}, read_after=sums)
        for name in sums:
            body_b.append(f'dparams["{name[len("d_") :]}"] += {bwd.use(name)}.sum(axis=0)')
    for s in cell.states:
        d = ident(adjoint_name(s))
        body_b.append(f"{d}_spare, {d}_next = {d}_next, {ident(adjoint_name(prev_name(s)))}")
    backward_bindings = _bindings(kernel, layout, bwd, prevs, series, prev_line, body_b)
    for s in cell.states:
        d = ident(adjoint_name(s))
        backward_bindings.append(f"{ident(adjoint_name(prev_name(s)))} = {d}_spare")

    setup_b = [_stack(g) for g in groups]
    for name in ["d_gates"] * ("d_gates" in stacks) + sorted(
        {g.adjoint for g in groups} - {"d_gates"}
    ):
        shape = f"(T, B, {_cols(stacks[name].width)})"
        comment = f"  # {stacks[name].comment}" if stacks[name].comment else ""
        setup_b.append(f"{name}_seq = {_work(f'{name}_seq', shape)}{comment}")
    setup_b.append(
        "dparams = {name: np.zeros(value.shape, dtype) for name, value in params.items()}"
    )
    setup_b.append("dfinal = dfinal or {}")
    for s in cell.states:
        d = ident(adjoint_name(s))
        given = f'np.array(dfinal["{s}"], dtype)'
        setup_b.append(f'{d}_next = {given} if "{s}" in dfinal else np.zeros((B, H), dtype)')
        setup_b.append(f"{d}_spare = np.empty((B, H), dtype)")
    setup_b += bwd.buffers()

    end = ["# after the loop: the input gradient and the weight gradients, one product each"]
    for g in groups:
        op = ident(g.name)
        adjoint = f"{g.adjoint}_seq"
        if g.width != stacks[g.adjoint].width:
            first = g.adjoint_offset
            adjoint += f"[:, :, {first} * H : {first + g.width} * H]"
        end.append(f"d_{op}_all = {adjoint}.reshape(T * B, -1)")
        d_M = f"d_M_{op}"
        work = _work(d_M, f"({_cols(g.width)}, {g.size})")
        if g.gemm.hoisted:
            end.append(f"dxs = (d_{op}_all @ M_{op}).reshape(T, B, I)")
            end.append(f"{d_M} = np.matmul(d_{op}_all.T, xs.reshape(T * B, I), out={work})")
        elif g.name in prevs:
            s = prevs[g.name]
            rest = _work(f"{d_M}_rest", f"({_cols(g.width)}, H)")
            end.append(f'{d_M} = np.matmul(d_{op}_all[:B].T, state0["{s}"], out={work})')
            end.append(f"{series(s)}_before = {series(s)}[:-1].reshape((T - 1) * B, H)")
            end.append(f"{d_M} += np.matmul(d_{op}_all[B:].T, {series(s)}_before, out={rest})")
        else:
            end.append(
                f"{d_M} = np.matmul(d_{op}_all.T, {series(g.name)}.reshape(T * B, H), out={work})"
            )
        for k, m in enumerate(g.matrices):
            end.append(f'dparams["{m}"] += {d_M}[{k} * H : {k + 1} * H]')
    if bias_sums:
        end.append("d_gates_sum = d_gates_seq.reshape(T * B, -1).sum(axis=0)")
        for param, k in bias_sums:
            end.append(f'dparams["{param}"] += d_gates_sum[{k} * H : {k + 1} * H]')

    states = [
        {
            "name": s,
            "series": series(s),
            "key": "ys" if s == cell.output else s,
            "d_next": f"{ident(adjoint_name(s))}_next",
        }
        for s in cell.states
    ]
    return {
        "cell": cell,
        "state_names": _tuple(cell.states),
        "saved_names": _tuple(kernel.saved),
        "states": states,
        "output": cell.output,
        "params": [
            {"name": p.name, "var": ident(p.name), "shape": _tuple(p.shape)} for p in cell.params
        ],
        "forward_setup": setup,
        "forward_bindings": forward_bindings,
        "forward_body": body,
        "cache_items": ", ".join(cache_items),
        "cache_reads": _cache_reads(kernel, layout, series, in_gates),
        "backward_setup": setup_b,
        "backward_bindings": backward_bindings,
        "backward_body": body_b,
        "backward_end": end,
        "functions": sorted(used),
    }


def _stack(g: GroupLayout) -> str:
    """M_<operand>: the matrices of a fused product stacked in slot order, (G H, K)."""
    op = ident(g.name)
    matrices = [ident(m) for m in g.matrices]
    if len(matrices) == 1:
        return f"M_{op} = {matrices[0]}"
    out = _work(f"M_{op}", f"({_cols(g.width)}, {g.size})")
    return f"M_{op} = np.concatenate([{', '.join(matrices)}], out={out})"


def _backward_product(g: GroupLayout, stacks, prevs, written, bwd: Pass) -> list[str]:
    """The operand's adjoint through a fused product of one step: d(products) @ M."""
    adjoint = slice_text(g.adjoint, g.adjoint_offset, g.width, stacks[g.adjoint].width)
    M = f"M_{ident(g.name)}"
    if g.name not in prevs:
        return [f"np.matmul({adjoint}, {M}, out={bwd.use(gemm_name(g.name))})"]
    target = bwd.use(adjoint_name(g.name))
    if adjoint_name(g.name) not in written:
        return [f"np.matmul({adjoint}, {M}, out={target})"]
    tmp = bwd.scratch.take(1)
    bwd.scratch.release(tmp)
    return [f"np.matmul({adjoint}, {M}, out={tmp})", f"np.add({target}, {tmp}, out={target})"]


def _find(steps, name: str) -> sympy.Expr:
    for step in steps:
        if isinstance(step, Block):
            for a in step.assignments:
                if a.name == name:
                    return a.expr
    raise KeyError(name)


def _group(layout: Layout, gemm: Gemm) -> GroupLayout:
    return next(g for g in layout.groups if g.gemm == gemm)


def _bindings(kernel, layout, p: Pass, prevs, series, prev_line, body) -> list[str]:
    """Per step: the views of stacked arrays and sequences that the statements use by name."""
    out = []
    bound = p.bound()
    stacks = p.stacks
    text = "\n".join(body)
    for s in kernel.cell.states:
        if prev_name(s) in bound:
            out.append(prev_line(s))
    for name in sorted(stacks):
        stack = layout.stacks.get(name)
        slots = [sym for sym in bound if layout.slot.get(sym, ("",))[0] == name]
        if stack and stack.series and (slots or re.search(rf"\b{name}\b", text)):
            out.append(f"{name} = {name}_seq[t]")
    for sym in sorted(bound, key=lambda s: (layout.slot.get(s, ("~", 0)), s)):
        if sym in p.aliases or sym in prevs:
            continue
        where = layout.slot.get(sym)
        role = kernel.roles.get(sym)
        if where and where[0] in stacks:
            stack = layout.stacks[where[0]]
            out.append(f"{ident(sym)} = {slice_text(where[0], where[1], 1, stack.width)}")
        elif role in (Role.STATE, Role.SAVED) or (role is Role.PRODUCT and sym in kernel.saved):
            out.append(f"{ident(sym)} = {series(sym)}[t]")
    return out


def _cache_reads(kernel: Kernel, layout: Layout, series, in_gates: set[str]) -> list[str]:
    out = []
    for s in kernel.cell.states:
        out.append(f'{series(s)} = cache["{"ys" if s == kernel.cell.output else s}"]')
    if "gates" in layout.stacks:
        out.append('gates_seq = cache["gates"]')
    out += [f'{ident(v)}_seq = cache["{v}"]' for v in kernel.saved if v not in in_gates]
    return out


def _tuple(names: tuple[str, ...]) -> str:
    return repr(tuple(names)).replace("'", '"')
