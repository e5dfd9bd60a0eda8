"""Where the NumPy kernels keep each value: stacked arrays, so that one call covers many gates.

A gate is `g = act(g_pre)` whose pre-activation adds an input product (W_g x) to other terms.
The gates of a cell sit side by side in one array, `gates` (B, G H), ordered by stage and then
by activation, so that the LSTM's f, i, o are one slice for one sigmoid call and c_tilde the
next for one tanh call; each gate's pre-activation is computed in its slot and activated in
place. The fused matrix products stack their matrices in the same order, so that the sum of
the input and the recurrent products of all gates is one addition. The backward keeps the
gates' adjoints the same way, in `d_gates`, for every step: the adjoint of g is written into
g's slot and turned into the adjoint of g_pre in place, and since the adjoint of every product
of a gate's pre-activation is that same value, `d_gates` doubles as the adjoint of the fused
products, whose weight gradients are then one product over all steps each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from ...activations import Activation
from ...cell import prev_name
from ...kernel import Block, Gemm, Kernel, Role, adjoint_copies
from .names import NumpyNames


@dataclass(frozen=True)
class Gate:
    name: str  # g
    pre: str  # g_pre
    activation: str
    level: int
    x_product: str  # the input product in g_pre


@dataclass
class Stack:
    """Values of one step side by side: (B, len(members) unit); `series` keeps every step.
    Every member has `unit` numbers per row (the size of each, H or a declared size)."""

    name: str
    members: list[str]
    series: bool
    comment: str = ""
    unit: str = "H"

    @property
    def width(self) -> int:
        return len(self.members)


@dataclass
class GroupLayout:
    """A fused product in NumPy: its matrices stacked in slot order, and where its adjoint is."""

    gemm: Gemm
    name: str  # the operand's name
    products: list[str]  # slot order
    matrices: list[str]
    adjoint: str = ""  # the stack holding the products' adjoints (for every step)
    adjoint_offset: int = 0  # first slot of those adjoints in it

    @property
    def width(self) -> int:
        return len(self.products)

    @property
    def size(self) -> str:
        """The operand's length (K): I for the input, H or a declared size otherwise."""
        return "I" if self.gemm.hoisted else str(self.gemm.operand_size)

    @property
    def unit(self) -> str:
        """The length of each product."""
        return str(self.gemm.size)


@dataclass
class Layout:
    gates: list[Gate]
    groups: list[GroupLayout]
    names: NumpyNames
    gates_stack: str  # the names of the stacks of gates and of their adjoints
    d_gates_stack: str
    stacks: dict[str, Stack] = field(default_factory=dict)
    slot: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol -> (stack, slot)
    folded: dict[str, str] = field(default_factory=dict)  # input product -> bias added to it

    def add(self, stack: Stack) -> None:
        self.stacks[stack.name] = stack
        for k, member in enumerate(stack.members):
            if member:
                self.slot.setdefault(member, (stack.name, k))


def _readers(kernel: Kernel, steps) -> dict[str, int]:
    """How many assignments read each symbol."""
    count: dict[str, int] = {}
    for step in steps:
        if isinstance(step, Block):
            for a in step.assignments:
                for s in a.expr.free_symbols:
                    count[s.name] = count.get(s.name, 0) + 1
    return count


def _assignments(steps) -> dict[str, sympy.Expr]:
    return {a.name: a.expr for step in steps if isinstance(step, Block) for a in step.assignments}


def find_gates(kernel: Kernel) -> list[Gate]:
    """The gates: activations of a pre-activation that adds an input product to other terms."""
    forward = _assignments(kernel.forward)
    backward = _assignments(kernel.backward)
    readers = _readers(kernel, kernel.forward)
    back_readers = _readers(kernel, kernel.backward)
    inputs = {p for g in kernel.gemms if g.hoisted for p in g.products}
    level = kernel.derivation.level
    gates, taken = [], set()
    for name, expr in forward.items():
        if not isinstance(expr, Activation) or kernel.role(name) is not Role.SAVED:
            continue
        if kernel.size(name) == 1:  # a per-row scalar has no slot among vectors
            continue
        if name == kernel.cell.output or (gates and kernel.size(name) != gates[0][1]):
            continue  # ys holds the output; the gates side by side have one size
        (arg,) = expr.args
        pre = arg.name if isinstance(arg, sympy.Symbol) else ""
        if pre not in forward or kernel.role(pre) is not Role.TEMP or readers.get(pre) != 1:
            continue
        terms = sympy.Add.make_args(forward[pre])
        x = [t.name for t in terms if isinstance(t, sympy.Symbol) and t.name in inputs]
        x = [p for p in x if p not in taken and p not in kernel.saved]
        d_g, d_pre = kernel.names.of(name), kernel.names.of(pre)
        # the adjoints share the slot: d_g may be read only where d_g_pre is computed
        if not x or d_g not in backward or d_pre not in backward or back_readers.get(d_g) != 1:
            continue
        if sympy.Symbol(d_g) not in backward[d_pre].free_symbols:
            continue
        taken.add(x[0])
        gates.append((Gate(name, pre, type(expr).__name__, level[name], x[0]), kernel.size(name)))
    return sorted(
        (g for g, _ in gates), key=lambda g: (g.level, g.activation, forward_index(kernel, g.name))
    )


def forward_index(kernel: Kernel, name: str) -> int:
    names = [a.name for s in kernel.forward if isinstance(s, Block) for a in s.assignments]
    return names.index(name)


def build_layout(kernel: Kernel, names: NumpyNames) -> Layout:
    gates = find_gates(kernel)
    forward = _assignments(kernel.forward)
    gate_of_product: dict[str, int] = {}  # a product that is a direct term of gate k's pre
    for k, gate in enumerate(gates):
        for term in sympy.Add.make_args(forward[gate.pre]):
            if isinstance(term, sympy.Symbol) and kernel.role(term.name) is Role.PRODUCT:
                gate_of_product.setdefault(term.name, k)

    groups = []
    for g in kernel.gemms:
        order = sorted(
            range(len(g.products)),
            key=lambda k: (gate_of_product.get(g.products[k], len(gates)), k),
        )
        groups.append(
            GroupLayout(
                gemm=g,
                name=g.operand,
                products=[g.products[k] for k in order],
                matrices=[g.matrices[k] for k in order],
            )
        )
    layout = Layout(gates, groups, names, names.local("gates"), names.local("d_gates"))
    adjoint = kernel.names.of

    saved = any(kernel.role(g.name) is Role.SAVED for g in gates)
    if gates:
        gate_names = ", ".join(g.name for g in gates)
        unit = str(kernel.size(gates[0].name))
        layout.add(
            Stack(
                layout.gates_stack,
                [g.name for g in gates],
                saved,
                f"{gate_names} side by side",
                unit,
            )
        )
        for gate in gates:
            layout.slot[gate.pre] = layout.slot[gate.name]  # activated in place
        layout.add(
            Stack(
                layout.d_gates_stack,
                [adjoint(g.name) for g in gates],
                True,
                f"adjoints of {gate_names}",
                unit,
            )
        )
        for gate in gates:
            layout.slot[adjoint(gate.pre)] = layout.slot[adjoint(gate.name)]
    for group in groups:
        stack = names.derived(group.name, "_products")
        layout.add(Stack(stack, list(group.products), group.gemm.hoisted, unit=group.unit))
    _fold_biases(kernel, layout, forward)
    _place_adjoints(kernel, layout)
    return layout


def _fold_biases(kernel: Kernel, layout: Layout, forward: dict[str, sympy.Expr]) -> None:
    """A bias added to an input product in a gate's pre-activation is added once for all steps."""
    readers = _readers(kernel, kernel.forward)
    for gate in layout.gates:
        if readers.get(gate.x_product) != 1:
            continue
        terms = sympy.Add.make_args(forward[gate.pre])
        biases = [t.name for t in terms if isinstance(t, sympy.Symbol)]
        biases = [b for b in biases if kernel.role(b) is Role.PARAM]
        if biases:
            layout.folded[gate.x_product] = biases[0]


def _place_adjoints(kernel: Kernel, layout: Layout) -> None:
    """Each fused product's adjoints: a slice of d_gates where they are copies of its slots."""
    copies = adjoint_copies(kernel)
    d_gates = layout.stacks.get(layout.d_gates_stack)
    for group in layout.groups:
        sources = [copies.get(kernel.names.of(p)) for p in group.products]
        where = [layout.slot.get(s) if s else None for s in sources]
        if d_gates and all(w and w[0] == layout.d_gates_stack for w in where):
            first = where[0][1]
            if [w[1] for w in where] == list(range(first, first + group.width)):
                group.adjoint, group.adjoint_offset = layout.d_gates_stack, first
                continue
        name = layout.names.derived(group.name, "_products", prefix="d_")
        group.adjoint = name
        members = [kernel.names.of(p) for p in group.products]
        layout.add(Stack(name, members, True, unit=group.unit))


def state_of_prev(kernel: Kernel) -> dict[str, str]:
    return {prev_name(s): s for s in kernel.cell.states}
