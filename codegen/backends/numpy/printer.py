"""NumPy spelling of a kernel: the lines of kernel.py.jinja's forward and backward.

The generated module allocates every array before the loop over steps and writes into it with
out= arguments (lowering.py); the gates of a step share stacked arrays so that one call covers
several of them (layout.py). It is complex-safe for complex-step differentiation: no abs, no
comparisons on complex values (indicators compare real parts), and every array takes the dtype
of the inputs, so a float32 run makes no float64 temporaries.
"""

from __future__ import annotations

import sympy

from ...activations import helpers
from ...cell import prev_name
from ...kernel import Block, Gemm, Kernel, Reduce, Role
from .layout import GroupLayout, Layout, build_layout, state_of_prev
from .lowering import Lowering, Place, Scratch, Statement, slice_text
from .names import NumpyNames, function, number


def _cols(width: int, unit: str = "H") -> str:
    return unit if width == 1 else f"{width} * {unit}"


def _work(name: str, shape: str) -> str:
    return f'_work("{name}", {shape}, dtype)'


def _work_lines(buffers: list[tuple[str, str]]) -> list[str]:
    """`name = _work(...)` for (name, columns) buffers of B rows."""
    return [f"{name} = {_work(name, f'(B, {cols})')}" for name, cols in buffers]


def _first_rows(buffers: list[tuple[str, str]]) -> list[str]:
    """The same buffers, of their first _n rows (the rows active at a step)."""
    return [f"{name} = _first_rows({name}, _n)" for name, _ in buffers]


class Pass:
    """The places of one pass (forward or backward) and the lines of its loop body."""

    def __init__(self, kernel: Kernel, layout: Layout, stacks: set[str], steps) -> None:
        self.kernel, self.layout, self.stacks = kernel, layout, stacks
        # what any block of the pass reads: a plain copy read there needs its name bound
        self.read = {s.name for st in steps if isinstance(st, Block) for a in st.assignments
                     for s in a.expr.free_symbols}  # fmt: skip
        self.read |= {o for st in steps if isinstance(st, Reduce) for o in st.operands}
        self.names = layout.names
        self.scratch = Scratch(self.names.local)
        self.aliases: dict[str, str] = {}  # a plain copy -> the symbol it copies
        self.lowering = Lowering(layout, self.place, self.names, function, number, self.scratch)

    def place(self, sym: str) -> Place:
        sym = self.aliases.get(sym, sym)
        where = self.layout.slot.get(sym)
        if where and where[0] in self.stacks:
            return Place(where[0], where[1])
        return Place(None, name=self.names(sym))

    def bound(self) -> set[str]:
        return self.lowering.bound

    def use(self, sym: str) -> str:
        """The name of a symbol in the step, which the step then binds."""
        return self.lowering.text(sym)

    def block(self, block: Block, exprs: dict[str, sympy.Expr], read_after=()) -> list[str]:
        """The lines of a block's statements, in a merged schedule."""
        statements, lines = [], []
        self.lowering.unit = str(block.size)
        read = {s.name for a in block.assignments for s in a.expr.free_symbols} | set(read_after)
        for k, a in enumerate(block.assignments):
            comments = [a.comment] if a.comment else []
            statements.append(Statement(a.name, exprs.get(a.name, a.expr), comments, k))
        for run in self.lowering.schedule(statements):
            st = run[0]
            if len(run) == 1 and self._alias(st):
                if st.target in read or st.target in self.read:
                    lines += [f"# {c}" for c in st.comments]
                    lines.append(f"{self.names(st.target)} = {self.use(st.expr.name)}")
                continue
            lines += self.lowering.lower(run)
        return lines

    def reduce(self, r: Reduce) -> list[str]:
        """A reduction over units: the sum of each operand's units, over the count for a mean."""
        out = self.use(r.result)
        lines = [f"# {r.result} = {r.kind} over the units of {', '.join(r.operands)}"]
        for k, operand in enumerate(r.operands):
            total = f"np.sum({self.use(operand)}, axis=1, keepdims=True"
            lines.append(f"{total}, out={out})" if k == 0 else f"{out} += {total})")
        if r.kind == "mean":
            lines.append(f"{out} /= {_count(r.count)}")
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
        owned = (Role.SAVED, Role.STATE, Role.ADJ_STATE_PREV, Role.ADJ_INPUT)
        return self.kernel.roles.get(sym) in owned

    def buffers(self) -> list[tuple[str, str]]:
        """Arrays of one step for the values that live nowhere else: (name, columns), B rows."""
        size = self.kernel.size
        out = []
        for sym in sorted(self.bound()):
            if sym in self.aliases or self.owns_place(sym) or self.place(sym).stack:
                continue
            role = self.kernel.roles.get(sym)
            output = self.kernel.cell.output
            if role in (Role.TEMP, Role.ADJ, Role.ADJ_MM, Role.ADJ_PARAM) or (
                role is Role.ADJ_IN
                and sym == self.kernel.names.incoming(output)
                and output in self.kernel.cell.states  # else it is dys[t] itself
            ):
                out.append((self.names(sym), str(size(sym))))
        return out + [
            (name, _cols(width, unit))
            for (unit, width), names in sorted(self.scratch.names.items())
            for name in names
        ]


def context(kernel: Kernel) -> dict:
    """Everything kernel.py.jinja needs, with names already made safe."""
    cell = kernel.cell
    names = NumpyNames(kernel)
    layout = build_layout(kernel, names)
    prevs = state_of_prev(kernel)
    d = kernel.names.of
    gates, d_gates = layout.gates_stack, layout.d_gates_stack
    size = kernel.size

    def series(name: str) -> str:
        """The (T, B, H) array of a state or saved value."""
        return "ys" if name == cell.output else names.derived(name, "_seq")

    def prev_line(s: str, rows: str = "") -> str:
        """The previous state's binding: every row, or (rows ", :_n") the first _n."""
        first = "[:_n]" if rows else ""
        return (
            f'{names(prev_name(s))} = {series(s)}[t - 1{rows}] if t > 0 else state0["{s}"]{first}'
        )

    def op_name(g: GroupLayout, suffix: str, prefix: str = "") -> str:
        """Arrays of a fused product: M_x (its matrices stacked), x_products, ..."""
        return names.derived(g.name, suffix, prefix)

    groups = layout.groups
    stacks = layout.stacks
    gate_stack = stacks.get(gates)
    saved_products = [p for p in kernel.saved if kernel.role(p) is Role.PRODUCT]
    in_gates = {v for v in kernel.saved if layout.slot.get(v, ("",))[0] == gates}
    hoisted_saved = {p for g in groups if g.gemm.hoisted for p in g.products} & set(kernel.saved)

    # forward -----------------------------------------------------------------------------------
    fwd = Pass(kernel, layout, {gates} | {op_name(g, "_products") for g in groups}, kernel.forward)
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
            operand = names(g.name) if g.name in prevs else fwd.use(g.name)
            fwd.bound().add(g.name)
            products = op_name(g, "_products")
            fwd.lowering.stacks_used.add(products)
            body.append(f"np.matmul({operand}, {op_name(g, '', 'MT_')}, out={products})")
            for k, p in enumerate(g.products):
                if p in saved_products:
                    value = slice_text(products, k, 1, g.width, g.unit)
                    body.append(f"{series(p)}[t, : len({products})] = {value}")
            continue
        if isinstance(step, Reduce):
            body += fwd.reduce(step)
            continue
        body += fwd.block(step, pre_exprs)

    setup = []
    for g in groups:
        setup.append(_stack(g, names))
        if not g.gemm.hoisted:  # transposed: h_prev @ MT_h_prev runs with unit stride
            MT, M = op_name(g, "", "MT_"), op_name(g, "", "M_")
            setup.append(f"{MT} = {_work(MT, f'({g.size}, {_cols(g.width, g.unit)})')}")
            setup.append(f"np.copyto({MT}, {M}.T)")
    for g in groups:
        if not g.gemm.hoisted:
            continue
        M, seq = op_name(g, "", "M_"), names.local(f"{op_name(g, '_products')}_seq")
        products = ", ".join(f"{m} @ {g.name}" for m in g.matrices)
        setup.append(f"# the input products of all steps at once: {products}")
        setup.append(f"{seq} = {_work(seq, f'(T, B, {_cols(g.width, g.unit)})')}")
        setup.append(f"np.matmul(xs.reshape(T * B, I), {M}.T, out={seq}.reshape(T * B, -1))")
        u = g.unit
        for k, p in enumerate(g.products):
            if p in hoisted_saved:
                setup.append(f"{series(p)} = {seq}[:, :, {k} * {u} : {k + 1} * {u}].copy()")
        biases = [layout.folded.get(p) for p in g.products]
        if any(biases):
            terms = [names(b) if b else f"np.zeros({u}, dtype)" for b in biases]
            stacked = terms[0] if len(terms) == 1 else f"np.concatenate([{', '.join(terms)}])"
            setup.append(f"{seq} += {stacked}  # and the biases added to them")
    for s in cell.states:
        setup.append(f"{series(s)} = np.empty((T, B, {size(s)}), dtype)")
    gates_seq = names.local(f"{gates}_seq")
    if gate_stack:
        shape = f"(T, B, {_cols(gate_stack.width, gate_stack.unit)})"
        setup.append(f"{gates_seq} = np.empty({shape}, dtype)  # {gate_stack.comment}")
    for v in kernel.saved:
        if v not in in_gates and v not in hoisted_saved:
            setup.append(f"{series(v)} = np.empty((T, B, {size(v)}), dtype)")
    forward_work = [
        (op_name(g, "_products"), _cols(g.width, g.unit)) for g in groups if not g.gemm.hoisted
    ]
    forward_work += fwd.buffers()
    setup += _work_lines(forward_work)
    forward_bindings = _bindings(kernel, layout, fwd, prevs, series, prev_line)
    forward_rows = _bindings(kernel, layout, fwd, prevs, series, prev_line, ", :_n")

    # what the backward reads besides the arguments, by a key that no symbol's name can take
    kept = [f'"{s}": {series(s)}' for s in cell.states if s != cell.output]
    if gate_stack:
        kept.append(f'"(gates)": {gates_seq}')
    kept += [f'"{v}": {series(v)}' for v in kernel.saved if v not in in_gates]
    cache_items = ['"xs": xs', '"state0": state0', '"params": params', '"ys": ys']
    cache_items.append('"saved": {' + ", ".join(kept) + "}")

    # backward ----------------------------------------------------------------------------------
    bwd = Pass(kernel, layout, {gates, d_gates} | {g.adjoint for g in groups}, kernel.backward)
    incoming_of = {r.incoming: r for r in kernel.recurrences}
    carried = {s: names.derived(d(s), "_next") for s in cell.states}
    dys_t = names.local("dys_t")
    spare = {s: names.derived(d(s), "_spare") for s in cell.states}
    param_of = {d(p.name): p.name for p in cell.params}
    body_b: list[str] = []
    incoming: set[str] = set()
    written = {a.name for s in kernel.backward if isinstance(s, Block) for a in s.assignments}
    bias_sums: list[tuple[str, int]] = []
    for step in kernel.backward:
        if isinstance(step, Gemm):
            g = _group(layout, step)
            if not g.gemm.hoisted:
                body_b += _backward_product(g, stacks, prevs, written, bwd, op_name(g, "", "M_"))
            continue
        if isinstance(step, Reduce):
            body_b += bwd.reduce(step)
            continue
        for sym in step.reads:
            if sym == kernel.output_incoming and sym not in incoming:
                incoming.add(sym)
                body_b.append(f"{names(sym)} = {dys_t}")  # an output equation's: dys alone
            if sym in incoming_of and sym not in incoming:
                incoming.add(sym)
                r = incoming_of[sym]
                if r.from_output:
                    body_b.append(f"np.add({dys_t}, {carried[r.state]}, out={bwd.use(sym)})")
                else:
                    body_b.append(f"{names(sym)} = {carried[r.state]}")
        kept, sums = [], []
        for a in step.assignments:
            source = a.expr.name if isinstance(a.expr, sympy.Symbol) else None
            where = layout.slot.get(bwd.aliases.get(source, source)) if source else None
            if kernel.role(a.name) is Role.ADJ_PARAM and where and where[0] == d_gates:
                bias_sums.append((param_of[a.name], where[1]))  # summed after the loop
                continue
            kept.append(a)
            if kernel.role(a.name) is Role.ADJ_PARAM:
                sums.append(a.name)
        step = Block(step.level, tuple(kept), step.reads, step.writes)
        body_b += bwd.block(step, {}, read_after=sums)
        for name in sums:
            body_b.append(f'dparams["{param_of[name]}"] += {bwd.use(name)}.sum(axis=0)')
    for r in kernel.recurrences:
        s = r.state
        body_b.append(f"{spare[s]}, {carried[s]} = {carried[s]}, {names(r.prev_adjoint)}")
    backward_bindings = _bindings(kernel, layout, bwd, prevs, series, prev_line)
    backward_rows = _bindings(kernel, layout, bwd, prevs, series, prev_line, ", :_n")
    backward_bindings.append(f"{dys_t} = dys[t]")
    backward_rows.append(f"{dys_t} = dys[t, :_n]")
    for r in kernel.recurrences:
        backward_bindings.append(f"{names(r.prev_adjoint)} = {spare[r.state]}")
        # the carried adjoints' first n rows: rows not yet active keep dfinal in both arrays
        backward_rows.append(f"{names(r.prev_adjoint)} = _full({spare[r.state]})[:_n]")
        backward_rows.append(f"{carried[r.state]} = _full({carried[r.state]})[:_n]")

    setup_b = [_stack(g, names) for g in groups]
    adjoint_seqs = []
    for name in [d_gates] * (d_gates in stacks) + sorted({g.adjoint for g in groups} - {d_gates}):
        shape = f"(T, B, {_cols(stacks[name].width, stacks[name].unit)})"
        comment = f"  # {stacks[name].comment}" if stacks[name].comment else ""
        seq = names.local(f"{name}_seq")
        adjoint_seqs.append(seq)
        setup_b.append(f"{seq} = {_work(seq, shape)}{comment}")
    d_x = d(cell.input)
    d_xs_seq = names.derived(d_x, "_seq")
    if d_x in written:  # the input's adjoint of its elementwise uses, every step
        setup_b.append(f"{d_xs_seq} = np.zeros((T, B, I), dtype)")
    setup_b.append(
        "dparams = {name: np.zeros(value.shape, dtype) for name, value in params.items()}"
    )
    setup_b.append("dfinal = dfinal or {}")
    for s in cell.states:
        given = f'np.array(dfinal["{s}"], dtype)'
        zeros = f"np.zeros((B, {size(s)}), dtype)"
        setup_b.append(f'{carried[s]} = {given} if "{s}" in dfinal else {zeros}')
        setup_b.append(f"{spare[s]} = np.empty((B, {size(s)}), dtype)")
    backward_work = bwd.buffers()
    setup_b += _work_lines(backward_work)

    end = ["# after the loop: the input gradient and the weight gradients, one product each"]
    for g in groups:
        adjoint = names.local(f"{g.adjoint}_seq")
        u, K = g.unit, g.size
        if g.width != stacks[g.adjoint].width:
            first = g.adjoint_offset
            adjoint += f"[:, :, {first} * {u} : {first + g.width} * {u}]"
        d_all, d_M, M = op_name(g, "_all", "d_"), op_name(g, "", "d_M_"), op_name(g, "", "M_")
        end.append(f"{d_all} = {adjoint}.reshape(T * B, -1)")
        work = _work(d_M, f"({_cols(g.width, u)}, {K})")
        if g.gemm.hoisted:
            end.append(f"dxs = ({d_all} @ {M}).reshape(T, B, I)")
            end.append(f"{d_M} = np.matmul({d_all}.T, xs.reshape(T * B, I), out={work})")
        elif g.name in prevs:
            s = prevs[g.name]
            rest = _work(f"{d_M}_rest", f"({_cols(g.width, u)}, {K})")
            before = names.derived(s, "_before")
            end.append(f'{d_M} = np.matmul({d_all}[:B].T, state0["{s}"], out={work})')
            end.append(f"{before} = {series(s)}[:-1].reshape((T - 1) * B, {K})")
            end.append(f"{d_M} += np.matmul({d_all}[B:].T, {before}, out={rest})")
        else:
            operand = series(g.name)
            if g.name in in_gates:  # a gate multiplied by a matrix: its slot of the gates
                slot = layout.slot[g.name][1]
                gu = gate_stack.unit
                operand = f"{gates_seq}[:, :, {slot} * {gu} : {slot + 1} * {gu}]"
            end.append(f"{d_M} = np.matmul({d_all}.T, {operand}.reshape(T * B, {K}), out={work})")
        for k, m in enumerate(g.matrices):
            end.append(f'dparams["{m}"] += {d_M}[{k} * {u} : {k + 1} * {u}]')
    if d_x in written:
        hoisted = any(g.gemm.hoisted for g in groups)
        end.append(f"dxs = dxs + {d_xs_seq}" if hoisted else f"dxs = {d_xs_seq}")
    if bias_sums:
        total = names.local(f"{d_gates}_sum")
        end.append(f"{total} = {names.local(f'{d_gates}_seq')}.reshape(T * B, -1).sum(axis=0)")
        du = stacks[d_gates].unit
        for param, k in bias_sums:
            end.append(f'dparams["{param}"] += {total}[{k} * {du} : {k + 1} * {du}]')

    states = [
        {
            "name": s,
            "series": series(s),
            "key": "ys" if s == cell.output else s,
            "d_next": carried[s],
            "d_spare": spare[s],
            "size": str(size(s)),
        }
        for s in cell.states
    ]
    return {
        "cell": cell,
        "state_names": _tuple(cell.states),
        "saved_names": _tuple(kernel.saved),
        "series_sizes": _series_sizes(kernel),
        "declared_sizes": _tuple(cell.sizes),
        # lengths and direction, over arrays t (T, 1) and L (1, B)
        "active": sympy.pycode(kernel.sequencing.active),
        "reverse_step": sympy.pycode(kernel.sequencing.reverse_step),
        "states": states,
        "output": cell.output,
        "output_size": str(size(cell.output)),
        "forward_sizes": _size_lines(kernel, "state0", "params"),
        "backward_sizes": _size_lines(kernel, "state0", "params", from_ys=True),
        "infer_sizes": _size_lines(kernel, "state0", "packed"),
        "params": [
            {"name": p.name, "var": names(p.name), "shape": _tuple(p.shape)} for p in cell.params
        ],
        "forward_setup": setup,
        "forward_bindings": forward_bindings,
        "forward_rows": forward_rows,
        "forward_rows_work": _first_rows(forward_work),
        "backward_rows": backward_rows,
        "backward_rows_work": _first_rows(backward_work),
        "adjoint_seqs": adjoint_seqs,
        "forward_body": body,
        "cache_items": ", ".join(cache_items),
        "cache_reads": _cache_reads(kernel, layout, series, in_gates, gates_seq),
        "backward_setup": setup_b,
        "backward_bindings": backward_bindings,
        "backward_body": body_b,
        "backward_end": end,
        "backward_calls_exp": any(
            "exp" in helpers({type(f).__name__ for f in a.expr.atoms(sympy.Function)})
            for step in kernel.backward
            if isinstance(step, Block)
            for a in step.assignments
        ),
        # the module's own helpers: functions NumPy does not have under the same name
        "helpers": [f for f in helpers(kernel.functions) if function(f) == f],
    }


def _count(count: sympy.Expr) -> str:
    """A number of units, `4 * H`, in the module's size variables."""
    return sympy.pycode(count)


def _size_lines(kernel: Kernel, states: str, params: str, from_ys: bool = False) -> list[str]:
    """`H = state0["h"].shape[1]`, ...: each size (besides I, from xs) read from the arrays
    of the call, the output's state first (with from_ys, the output's size from ys)."""
    cell = kernel.cell
    sources = cell.size_sources()
    output_size = str(kernel.size(cell.output))
    if cell.output in cell.states:
        sources[output_size] = ("state", cell.output, 1)
    lines = []
    for size, (kind, name, axis) in sources.items():
        if from_ys and size == output_size:
            lines.append(f"{size} = ys.shape[2]")
        elif kind == "state":
            lines.append(f'{size} = {states}["{name}"].shape[{axis}]')
        else:
            lines.append(f'{size} = {params}["{name}"].shape[{axis}]')
    return lines


def _stack(g: GroupLayout, names: NumpyNames) -> str:
    """M_<operand>: the matrices of a fused product stacked in slot order, (G H, K)."""
    M = names.derived(g.name, "", "M_")
    matrices = [names(m) for m in g.matrices]
    if len(matrices) == 1:
        return f"{M} = {matrices[0]}"
    out = _work(M, f"({_cols(g.width, g.unit)}, {g.size})")
    return f"{M} = np.concatenate([{', '.join(matrices)}], out={out})"


def _backward_product(g: GroupLayout, stacks, prevs, written, bwd: Pass, M: str) -> list[str]:
    """The operand's adjoint through a fused product of one step: d(products) @ M."""
    adjoint = slice_text(g.adjoint, g.adjoint_offset, g.width, stacks[g.adjoint].width, g.unit)
    bwd.lowering.stacks_used.add(g.adjoint)
    names = bwd.kernel.names
    if g.name not in prevs:
        return [f"np.matmul({adjoint}, {M}, out={bwd.use(names.through_products(g.name))})"]
    target = bwd.use(names.of(g.name))
    if names.of(g.name) not in written:
        return [f"np.matmul({adjoint}, {M}, out={target})"]
    tmp = bwd.scratch.take(1, g.size)
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


def _bindings(kernel, layout, p: Pass, prevs, series, prev_line, rows: str = "") -> list[str]:
    """Per step: the views of stacked arrays and sequences that the statements use by name;
    with rows ", :_n", of the first _n rows only (the rows active at the step)."""
    out = []
    bound = p.bound()
    stacks = p.stacks
    for s in kernel.cell.states:
        if prev_name(s) in bound:
            out.append(prev_line(s, rows))
    x, d_x = kernel.cell.input, kernel.names.of(kernel.cell.input)
    if x in bound:  # read elementwise (I = H): xs is in loop order
        out.append(f"{p.names(x)} = xs[t{rows}]")
    if d_x in bound:
        out.append(f"{p.names(d_x)} = {p.names.derived(d_x, '_seq')}[t{rows}]")
    for name in sorted(stacks):
        stack = layout.stacks.get(name)
        slots = [sym for sym in bound if layout.slot.get(sym, ("",))[0] == name]
        if stack and stack.series and (slots or name in p.lowering.stacks_used):
            out.append(f"{name} = {p.names.local(f'{name}_seq')}[t{rows}]")
    for sym in sorted(bound, key=lambda s: (layout.slot.get(s, ("~", 0)), s)):
        if sym in p.aliases or sym in prevs:
            continue
        where = layout.slot.get(sym)
        role = kernel.roles.get(sym)
        if where and where[0] in stacks:
            stack = layout.stacks[where[0]]
            text = slice_text(where[0], where[1], 1, stack.width, stack.unit)
            out.append(f"{p.names(sym)} = {text}")
        elif role in (Role.STATE, Role.SAVED) or (role is Role.PRODUCT and sym in kernel.saved):
            out.append(f"{p.names(sym)} = {series(sym)}[t{rows}]")
    return out


def _cache_reads(kernel: Kernel, layout: Layout, series, in_gates: set[str], gates_seq: str):
    out = []
    for s in kernel.cell.states:
        key = f'["saved"]["{s}"]' if s != kernel.cell.output else '["ys"]'
        out.append(f"{series(s)} = cache{key}")
    if layout.gates_stack in layout.stacks:
        out.append(f'{gates_seq} = cache["saved"]["(gates)"]')
    out += [f'{series(v)} = cache["saved"]["{v}"]' for v in kernel.saved if v not in in_gates]
    return out


def _series_sizes(kernel: Kernel) -> list[tuple[str, str]]:
    """The units per row of each series forward keeps: the saved values and the states besides
    the output (which is ys), for the memory check."""
    kept = [*kernel.saved, *(s for s in kernel.cell.states if s != kernel.cell.output)]
    return [(v, str(kernel.size(v))) for v in kept]


def _tuple(names: tuple[str, ...]) -> str:
    return repr(tuple(names)).replace("'", '"')
