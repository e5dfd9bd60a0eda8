"""NumPy spelling of a kernel: expressions, statements, and the context of kernel.py.jinja.

The generated module computes whole (B, H) arrays per statement. It is complex-safe for
complex-step differentiation: no abs, no comparisons on complex values (indicators compare
real parts), and buffers take the dtype of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ...activations import ACTIVATIONS, INDICATORS
from ...cell import prev_name
from ...derive import adjoint_name, gemm_name, incoming_name
from ...kernel import Block, Gemm, Kernel, Role
from ..infix import InfixPrinter

# How each activation and indicator is spelled; helpers are defined at the top of the module.
FUNCTIONS = {
    "sigmoid": "sigmoid",
    "tanh": "np.tanh",
    "relu": "relu",
    "softsign": "softsign",
    "hard_sigmoid": "hard_sigmoid",
    "positive": "positive",
    "inside_unit": "inside_unit",
    "sign": "sign",
}
assert set(FUNCTIONS) == set(ACTIVATIONS) | set(INDICATORS)

RESERVED = {
    "np", "t", "T", "B", "I", "H", "xs", "ys", "dys", "params", "state0", "final", "cache",
    "dfinal", "dxs", "dstate0", "dparams", "dtype", "forward", "backward", "range",
}  # fmt: skip


def ident(name: str) -> str:
    """A user's symbol as a Python name that cannot clash with the template's own names."""
    return f"{name}_" if name in RESERVED or name in FUNCTIONS else name


class NumpyPrinter(InfixPrinter):
    def number(self, value: sympy.Number) -> str:
        if value.is_Integer:
            return f"{int(value)}"
        return repr(float(value))

    def _print_Function(self, expr: sympy.Function) -> str:
        name = type(expr).__name__
        args = ", ".join(self._print(a) for a in expr.args)
        return f"{FUNCTIONS[name]}({args})"


@dataclass(frozen=True)
class GroupText:
    """A fused product in NumPy: `products = split(operand @ stacked.T)`."""

    stacked: str  # name of the stacked matrix
    matrices: tuple[str, ...]
    products: tuple[str, ...]
    operand: str
    role: str
    d_buffer: str  # adjoints of the products at every step, (T, B, len * H)
    d_operand: str  # what the transposed product gives: the operand's adjoint
    state: str  # the state whose previous value is the operand, if it is one
    series: str  # the operand at every step, for the weight gradients


def _group(kernel: Kernel, g: Gemm) -> GroupText:
    operand = ident(g.operand)
    state = ""
    if g.operand_role is Role.INPUT:
        series = "xs"
    elif g.operand_role is Role.STATE_PREV:
        state = next(s for s in kernel.states if prev_name(s) == g.operand)
        series = _series(kernel, state)
    else:
        series = _series(kernel, g.operand)
    return GroupText(
        stacked=f"M_{operand}",
        matrices=tuple(ident(m) for m in g.matrices),
        products=tuple(ident(p) for p in g.products),
        operand=operand,
        role=g.operand_role.value,
        d_buffer=f"d_{operand}_products",
        d_operand=ident(gemm_name(g.operand)),
        state=state,
        series=series,
    )


def _series(kernel: Kernel, name: str) -> str:
    """The (T, B, H) array holding a state or a saved value at every step."""
    return "ys" if name == kernel.cell.output else f"{ident(name)}_seq"


def _statements(block: Block, printer: NumpyPrinter) -> list[str]:
    lines = []
    for a in block.assignments:
        if a.comment:
            lines.append(f"# {a.comment}")
        lines.append(f"{ident(a.name)} = {printer.doprint(a.expr)}")
    return lines


def context(kernel: Kernel) -> dict:
    """Everything kernel.py.jinja needs, with names already made safe."""
    cell = kernel.cell
    hoisted = {p for g in kernel.gemms if g.hoisted for p in g.products}

    def forward_symbol(name: str) -> str:
        return f"{ident(name)}[t]" if name in hoisted else ident(name)

    forward_printer = NumpyPrinter(forward_symbol)
    printer = NumpyPrinter(ident)
    groups = [_group(kernel, g) for g in kernel.gemms]
    used: set[str] = set()
    for step in kernel.forward + kernel.backward:
        if isinstance(step, Block):
            for a in step.assignments:
                used |= {type(f).__name__ for f in a.expr.atoms(sympy.Function)}

    forward_steps = []
    for step in kernel.forward:
        if isinstance(step, Gemm):
            forward_steps.append({"gemm": _group(kernel, step)})
        else:
            forward_steps.append({"gemm": None, "lines": _statements(step, forward_printer)})

    backward_steps = []
    written: set[str] = set()
    loaded: set[str] = set()
    for step in kernel.backward:
        if isinstance(step, Gemm):
            backward_steps.append({"gemm": _group(kernel, step)})
            continue
        written |= {a.name for a in step.assignments}
        load = [
            name
            for name in step.reads
            if kernel.role(name) in (Role.SAVED, Role.STATE, Role.PRODUCT) and name not in loaded
        ]
        loaded |= set(load)
        loads = [f"{ident(name)} = {_series(kernel, name)}[t]" for name in load]
        stores = []
        for name in step.writes:
            role = kernel.role(name)
            if role is Role.ADJ_PRODUCT:
                g, k = _product_slot(kernel, name[len("d_") :])
                stores.append(f"{g.d_buffer}[t, :, {k} * H : {k + 1} * H] = {ident(name)}")
            elif role is Role.ADJ_PARAM:
                stores.append(f'dparams["{name[len("d_") :]}"] += {ident(name)}.sum(axis=0)')
        backward_steps.append(
            {"gemm": None, "loads": loads, "lines": _statements(step, printer), "stores": stores}
        )

    states = []
    for s in cell.states:
        d_prev = adjoint_name(prev_name(s))
        terms = [ident(d_prev)] if d_prev in written else []
        terms += [
            f"{g.d_buffer}[t] @ {g.stacked}"
            for g in groups
            if g.role == "state_prev" and g.state == s
        ]
        states.append(
            {
                "name": s,
                "prev": ident(prev_name(s)),
                "new": ident(s),
                "series": _series(kernel, s),
                "key": "ys" if s == cell.output else s,
                "d_in": ident(incoming_name(s)),
                "d_prev": ident(d_prev),
                "d_prev_total": " + ".join(terms) if terms else "np.zeros((B, H), dtype)",
            }
        )
    return {
        "cell": cell,
        "state_names": _tuple(cell.states),
        "saved_names": _tuple(kernel.saved),
        "states": states,
        "output": cell.output,
        "params": [
            {"name": p.name, "var": ident(p.name), "shape": _tuple(p.shape)} for p in cell.params
        ],
        "saved": [
            {"name": s, "var": forward_symbol(s), "series": _series(kernel, s)}
            for s in kernel.saved
        ],
        "groups": groups,
        "input_group": next(g for g in groups if g.role == "input"),
        "forward_steps": forward_steps,
        "backward_steps": backward_steps,
        "functions": sorted(used),
    }


def _tuple(names: tuple[str, ...]) -> str:
    return repr(tuple(names)).replace("'", '"')


def _product_slot(kernel: Kernel, product: str) -> tuple[GroupText, int]:
    for g in kernel.gemms:
        if product in g.products:
            return _group(kernel, g), g.products.index(product)
    raise KeyError(product)
