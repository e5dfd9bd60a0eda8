"""The derivation passes, each against results derived by hand."""

from __future__ import annotations

import pytest
import sympy
from sympy import Symbol as S

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell
from codegen.derive import derive, lift
from codegen.kernel import Block, build_kernel
from codegen.registry import load_cell


def _adjoints(cell_name):
    return {a.target: a.expr for a in derive(load_cell(cell_name)).backward}


def test_lift_gives_each_activation_an_equation_and_names_preactivations():
    prims = {p.name: p.expr for p in lift(load_cell("lstm"))}
    assert prims["f_pre"] == S("W_f_x") + S("U_f_h_prev") + S("b_f")
    assert prims["f"] == sigmoid(S("f_pre"))
    assert prims["tanh_c"] == tanh(S("c"))
    assert prims["h"] == S("o") * S("tanh_c")


def test_lstm_adjoints_as_derived_by_hand():
    d = _adjoints("lstm")
    d_c = S("d_c")
    table = {
        "h": S("d_h_in"),
        "tanh_c": S("d_h") * S("o"),
        "o": S("d_h") * S("tanh_c"),
        "o_pre": S("d_o") * S("o") * (1 - S("o")),
        # c's adjoint accumulates the next step's and h's share, once
        "c": S("d_c_in") + S("d_tanh_c") * (1 - S("tanh_c") ** 2),
        "f": d_c * S("c_prev"),
        "i": d_c * S("c_tilde"),
        "c_tilde": d_c * S("i"),
        "c_tilde_pre": S("d_c_tilde") * (1 - S("c_tilde") ** 2),
        "c_prev": d_c * S("f"),
        "W_f_x": S("d_f_pre"),
        "U_o_h_prev": S("d_o_pre"),
        "b_i": S("d_i_pre"),
        "h_prev": 0,  # h_prev reaches the step only through the recurrent products
    }
    for target, expected in table.items():
        assert sympy.expand(d[target] - expected) == 0, target


def test_gru_adjoints_as_derived_by_hand():
    d = _adjoints("gru")
    table = {
        "h_hat": S("d_h") * S("z"),
        "z": S("d_h") * (S("h_hat") - S("h_prev")),
        "h_prev_r": S("d_h_prev_r_mm"),  # arrives through U_h's transpose
        "r": S("d_h_prev_r") * S("h_prev"),
        "h_prev": S("d_h") * (1 - S("z")) + S("d_h_prev_r") * S("r"),
    }
    for target, expected in table.items():
        assert sympy.expand(d[target] - expected) == 0, target


def test_levels_put_the_reset_product_after_r():
    d = derive(load_cell("gru"))
    assert d.level["r"] == 0 and d.level["U_h_h_prev_r"] == 1 and d.level["h_hat"] == 1
    assert d.level["W_h_x"] == 0  # input products are all computed before the loop


def test_kernel_saves_seven_numbers_per_unit_for_the_lstm():
    k = build_kernel(load_cell("lstm"))
    # f, i, c_tilde, o, tanh(c) + the c sequence + ys: 7 T B H numbers besides xs
    assert set(k.saved) == {"f", "i", "c_tilde", "o", "tanh_c"}
    assert len(k.saved) + len(k.states) == 7


def test_fused_products_one_per_operand():
    k = build_kernel(load_cell("lstm"))
    operands = [(g.operand, g.matrices) for g in k.gemms]
    assert operands == [
        ("x", ("W_f", "W_i", "W_c", "W_o")),
        ("h_prev", ("U_f", "U_i", "U_c", "U_o")),
    ]


def test_backward_blocks_read_only_saved_values_never_preactivations():
    k = build_kernel(load_cell("lstm"))
    for step in k.backward:
        if isinstance(step, Block):
            assert not any(name.endswith("_pre") and not name.startswith("d_")
                           for name in step.reads)  # fmt: skip


def test_a_nested_activation_is_lifted_innermost_first():
    cell = Cell("nest", description="nested", reference="test")
    x = cell.input()
    (h,) = cell.states("h")
    (W,) = cell.matrices("W")
    cell.update("h", tanh(sigmoid(W @ x) * h), "nested")
    prims = [(p.name, p.expr) for p in lift(cell.spec())]
    assert prims == [
        ("sigmoid_W_x", sigmoid(S("W_x"))),
        ("h_pre", S("sigmoid_W_x") * S("h_prev")),
        ("h", tanh(S("h_pre"))),
    ]


def test_cse_names_each_repeated_subexpression_once_before_its_first_use():
    from codegen.kernel import Assign, Role, _cse

    a, b, c = S("a"), S("b"), S("c")
    block = Block(
        0,
        (
            Assign("p", a * (1 - b), "first"),
            Assign("q", c + (1 - b) * c),
            Assign("r", (a + c) * p_sym() + (a + c) * S("q")),
        ),
        (),
        (),
    )
    roles: dict = {}
    sizes: dict = {}
    out = _cse(block, roles, taken=set(), sizes=sizes)
    names = [x.name for x in out.assignments]
    assert names == ["cse0", "p", "q", "cse1", "r"]
    # a name the cell already uses is never given to a temporary
    again = _cse(block, {}, taken={"cse0", "cse2"}, sizes={})
    assert [x.name for x in again.assignments] == ["cse1", "p", "q", "cse3", "r"]
    values = {x.name: x.expr for x in out.assignments}
    assert values["cse0"] == 1 - b and values["cse1"] == a + c
    assert out.assignments[0].comment == "first"  # the equation's comment leads its block
    assert roles == {"cse0": Role.TEMP, "cse1": Role.TEMP}
    assert sizes == {"cse0": block.size, "cse1": block.size}  # a temporary has its block's size
    # same values as before
    env = {a: 0.3, b: -1.1, c: 2.0}
    for x in out.assignments:
        env[S(x.name)] = float(x.expr.subs(env))
    expected = (0.3 + 2.0) * (0.3 * 2.1) + (0.3 + 2.0) * (2.0 + 2.1 * 2.0)
    assert env[S("r")] == pytest.approx(expected, rel=1e-14)


def p_sym():
    return S("p")
