"""The kernel plan: its buffer sizes are exactly what the C kernels touch, and what it states
(recurrences, weight gradients, saved sequences) matches the cells."""

from __future__ import annotations

import numpy as np
import pytest

import codegen
from codegen.backends.c.ffi import address
from codegen.kernel import SIZES, Role, build_kernel
from codegen.registry import load_cell
from codegen.verify.problems import declared_sizes

from conftest import CELLS, make_problem

SENTINEL = 12345.678
CANARY = 64


def _guarded(size: int, dtype) -> np.ndarray:
    """A buffer of `size` numbers and CANARY more, all holding the sentinel."""
    return np.full(size + CANARY, SENTINEL, dtype)


def _extent(buffer: np.ndarray) -> int:
    """How many numbers from the start were written: one past the last changed entry."""
    changed = np.flatnonzero(buffer != buffer.dtype.type(SENTINEL))
    return int(changed[-1]) + 1 if changed.size else 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_work_and_saved_sizes_are_exactly_what_the_c_kernels_touch(cell, dtype):
    k = codegen.load(cell, "c", dtype=dtype)
    c = k._functions  # the CFunctions of the C backend
    T, B, I, H = 3, 2, 5, 4
    xs, state0, params, dys, dfinal = make_problem(k, T, B, I, H, dtype=np.dtype(dtype))
    I = xs.shape[2]  # H for an input used elementwise
    sizes = list(declared_sizes(k, H).values())  # the cell's own sizes, after H
    work_size = c._work_size(T, B, I, H, *sizes)
    saved_size = c._saved_size(T, B, H, *sizes)
    work, saved = _guarded(work_size, dtype), _guarded(saved_size, dtype)
    ys = np.empty(dys.shape, dtype)
    final = {s: np.empty_like(state0[s]) for s in k.states}
    c._forward(
        T, B, I, H, *sizes, address(xs), None, 0, *[address(state0[s]) for s in k.states],
        *[address(params[p]) for p in k.params], address(ys),
        *[address(final[s]) for s in k.states], address(saved), address(work),
    )  # fmt: skip
    forward_extent = _extent(work)
    assert _extent(saved) == saved_size, "the forward writes all of `saved` and no more"
    work[:] = SENTINEL
    dxs = np.empty_like(xs)
    dstate0 = {s: np.empty_like(state0[s]) for s in k.states}
    dparams = {p: np.empty_like(v) for p, v in params.items()}
    c._backward(
        T, B, I, H, *sizes, address(xs), None, 0, *[address(state0[s]) for s in k.states],
        *[address(params[p]) for p in k.params], address(ys), address(saved), address(dys),
        *[address(dfinal[s]) for s in k.states], address(dxs),
        *[address(dstate0[s]) for s in k.states], *[address(dparams[p]) for p in k.params],
        address(work),
    )  # fmt: skip
    backward_extent = _extent(work)
    assert max(forward_extent, backward_extent) == work_size, (forward_extent, backward_extent)
    assert np.all(work[work_size:] == work.dtype.type(SENTINEL))  # canaries untouched


@pytest.mark.parametrize("cell", CELLS)
def test_the_plans_sizes_are_its_buffers(cell):
    plan = build_kernel(load_cell(cell))
    at = {v: 3 if k == "T" else 7 for k, v in SIZES.items()}
    at |= {plan.cell.size(n): 7 for n, _ in plan.cell.symbol_sizes}  # declared sizes too
    total = sum(int(b.size.subs(at)) for b in plan.forward_buffers)
    assert int(plan.forward_work_size.subs(at)) == total
    T, B = SIZES["T"], SIZES["B"]
    assert plan.saved_size == sum(T * B * plan.size(name) for name in plan.series)
    # one carried adjoint per state, double-buffered; one adjoint sequence per owned buffer
    carried = [b for b in plan.backward_buffers if b.kind == "carried"]
    assert len(carried) == 2 * len(plan.cell.states)
    sequences = [b for b in plan.backward_buffers if b.kind == "adjoints"]
    assert [b.symbol for b in sequences] == plan.adjoint_buffers


def test_the_lstm_plan_states_what_each_backend_used_to_decide():
    plan = build_kernel(load_cell("lstm"))
    # the incoming adjoint of h adds dys; c's does not
    recurrence = {r.state: r for r in plan.recurrences}
    assert recurrence["h"].from_output and not recurrence["c"].from_output
    assert recurrence["h"].incoming == "d_h_in" and recurrence["c"].prev_adjoint == "d_c_prev"
    # the four gates' product adjoints: W x and U h of one gate share one buffer
    assert plan.adjoint_buffer["d_U_f_h_prev"] == plan.adjoint_buffer["d_W_f_x"]
    assert len(plan.adjoint_buffers) == 4
    # a weight gradient over h_prev splits into step 0 (state0) and steps 1.. (ys)
    (u_f,) = [w for w in plan.weight_gradients if w.matrix == "U_f"]
    assert [s.source for s in u_f.segments] == [Role.STATE_PREV, Role.STATE]
    assert [s.first_step for s in u_f.segments] == [0, 1]
    (w_f,) = [w for w in plan.weight_gradients if w.matrix == "W_f"]
    assert [s.source for s in w_f.segments] == [Role.INPUT] and w_f.size == "I"
    assert plan.series == ("c", "f", "i", "c_tilde", "o", "tanh_c")


def test_inference_fuses_the_input_and_recurrent_products_where_they_pair_gate_for_gate():
    """Inference's one product per step: each LSTM gate's W x + U h + b is one value; GRU's n
    gate (r multiplies U h + b_hn) keeps U h apart; where the groups do not pair gate for gate
    (gru: U_h multiplies r * h later; ln_lstm: each group is normalised; sru, indrnn: no U h),
    the products stay as the forward has them."""
    lstm = build_kernel(load_cell("lstm"))
    f = lstm.fused
    assert [(b.x_product, b.h_product, b.bias) for b in f.together] == [
        (f"W_{g}_x", f"U_{g}_h_prev", f"b_{g}") for g in ("f", "i", "c", "o")
    ]
    assert f.apart == () and f.rows == SIZES["I"] + SIZES["H"]
    block = lstm.infer_steps[1]
    pre = {a.name: a.expr for a in block.assignments}
    assert str(pre["f_pre"]) == f.together[0].value  # the pre-activation reads the one sum
    assert not {"W_f_x", "U_f_h_prev", "b_f"} & set(block.reads)
    assert [p.kind for p in lstm.packed] == ["fused", "init"]  # no bias is read elsewhere

    gru = build_kernel(load_cell("gru_reset_after")).fused
    assert [b.x_product for b in gru.together] == ["W_r_x", "W_z_x"]
    assert [(b.x_product, b.h_product, b.value) for b in gru.apart] == [("W_n_x", "U_n_h_prev", "")]
    for cell in ("gru", "mgu", "ln_lstm", "sru", "indrnn"):
        plan = build_kernel(load_cell(cell))
        assert plan.fused is None and plan.infer_steps == plan.forward, cell
