"""Declared sizes, hidden-sized inputs and outputs that are not states, and the errors of each.

A cell may declare sizes besides I and H (`cell.sizes("P")`), give states, vectors and
matrices shapes in them, declare its input hidden-sized (I = H, usable elementwise) and name
an equation as its output. Each mistake is one EquationError line naming the equation, the
sizes and the fix; each call with arrays of the wrong sizes is one ValueError.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import sympy

import codegen
from codegen.errors import EquationError
from codegen.kernel import build_kernel
from codegen.registry import load_cell

from conftest import BACKENDS

HEAD = """\
import numpy as np

from codegen.activations import sigmoid, tanh
from codegen.cell import Cell

cell = Cell("{name}", description="a cell with sizes", reference="a test"{output})
"""


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    """Run the equation files here, not in a child Python each (tests of that: elsewhere)."""
    monkeypatch.setenv("CELLGEN_EQUATION_TIMEOUT", "0")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The projected and the highway cell, written once: their kernels are built once."""
    root = tmp_path_factory.mktemp("cells")
    return {
        "projected": write(root, "projected", PROJECTED),
        "highway": write(root, "highway", HIGHWAY, output="y"),
    }


def write(tmp_path, name: str, body: str, output: str | None = None) -> str:
    text = HEAD.format(name=name, output=f", output={output!r}" if output else "")
    path = tmp_path / f"{name}.py"
    path.write_text(text + textwrap.dedent(body))
    return path


# A projected cell: state h of size P, c of size H, and a P-sized vector parameter.
PROJECTED = """\
(P,) = cell.sizes("P")
x = cell.input("x")
h_prev, c_prev = cell.states("h", "c", sizes=("P", "H"))
W, U = cell.matrices("W U")
(W_p,) = cell.matrices("W_p", shape=("P", "H"))
(b,) = cell.vectors("b")
(g,) = cell.vectors("g", size="P")
c = cell.update("c", tanh(W @ x + U @ h_prev + b) * c_prev)
h = cell.update("h", g * sigmoid(W_p @ c) + h_prev)
"""


def projected_reference(xs, state0, p):
    """The projected cell in NumPy, written from its equations."""
    h, c = state0["h"], state0["c"]
    ys = []
    for x in xs:
        c = np.tanh(x @ p["W"].T + h @ p["U"].T + p["b"]) * c
        h = p["g"] * (1 / (1 + np.exp(-(c @ p["W_p"].T)))) + h
        ys.append(h)
    return np.array(ys), {"h": h, "c": c}


def assert_gradients(k, reference, xs, state0, params, cache):
    """backward's gradients of sum(ys) against central differences of the reference, at a
    few entries of every tensor."""
    dxs, dstate0, dparams = k.backward(np.ones(cache["ys"].shape), cache)
    analytic = {"xs": dxs, **{f"state0[{s}]": v for s, v in dstate0.items()}, **dparams}
    arrays = {"xs": xs, **{f"state0[{s}]": v for s, v in state0.items()}, **params}
    rng = np.random.default_rng(3)
    for name, array in arrays.items():
        assert analytic[name].shape == array.shape, name
        for _ in range(3):
            index = tuple(int(rng.integers(n)) for n in array.shape)
            value, sums = array[index], []
            for x in (value + 1e-6, value - 1e-6):
                array[index] = x
                sums.append(reference(xs, state0, params)[0].sum())
            array[index] = value
            assert abs(analytic[name][index] - (sums[0] - sums[1]) / 2e-6) < 1e-7, name


def test_declared_sizes_give_shapes(files):
    spec = load_cell(files["projected"])
    assert spec.sizes == ("P",)
    assert [str(spec.size(n)) for n in ("x", "h", "h_prev", "c", "c_prev", "g")] == [
        "I", "P", "P", "H", "H", "P",
    ]  # fmt: skip
    products = {m.matrix: str(spec.size(m.name)) for m in spec.matmuls}
    assert products == {"W": "H", "U": "H", "W_p": "P"}  # a product has its matrix's rows
    assert spec.param_shapes(4, 3, P=2) == {
        "W": (3, 4), "U": (3, 2), "W_p": (2, 3), "b": (3,), "g": (2,),
    }  # fmt: skip
    plan = build_kernel(spec)
    assert {str(b.size) for b in plan.forward if hasattr(b, "assignments")} == {"H", "P"}
    assert plan.saved_size.free_symbols == {sympy_symbol("T"), sympy_symbol("B"),
                                            spec.size("c"), spec.size("h")}  # fmt: skip


def sympy_symbol(name):
    return sympy.Symbol(name, integer=True, positive=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_projected_cell_computes_its_equations(files, backend):
    k = codegen.load(files["projected"], backend)
    assert k.sizes == ("P",)
    T, B, I, H, P = 4, 3, 5, 6, 2
    rng = np.random.default_rng(1)
    params = {n: rng.uniform(-0.5, 0.5, s) for n, s in k.param_shapes(I, H, P=P).items()}
    state0 = {s: rng.uniform(-0.5, 0.5, shape) for s, shape in k.state_shapes(B, H, P=P).items()}
    xs = rng.normal(size=(T, B, I))
    ys, final, cache = k.forward(xs, state0, params)
    want_ys, want_final = projected_reference(xs, state0, params)
    assert ys.shape == (T, B, P)
    np.testing.assert_allclose(ys, want_ys, rtol=0, atol=1e-12)
    for s in ("h", "c"):
        np.testing.assert_allclose(final[s], want_final[s], rtol=0, atol=1e-12)
    assert_gradients(k, projected_reference, xs, state0, params, cache)
    ys_i, final_i = k.infer(xs, state0, k.pack(params))
    np.testing.assert_allclose(ys_i, ys, rtol=0, atol=1e-13)
    np.testing.assert_allclose(final_i["c"], final["c"], rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sizes_that_disagree_are_refused_by_name(files, backend):
    k = codegen.load(files["projected"], backend)
    T, B, I, H, P = 2, 2, 3, 4, 2
    params = {n: np.zeros(s) for n, s in k.param_shapes(I, H, P=P).items()}
    state0 = {s: np.zeros(shape) for s, shape in k.state_shapes(B, H, P=P).items()}
    xs = np.zeros((T, B, I))
    bad = dict(params, g=np.zeros(P + 1))
    with pytest.raises(ValueError, match=r"params\['g'\]: expected shape \(P\) = \(2,\)"):
        k.forward(xs, state0, bad)
    bad_state = dict(state0, c=np.zeros((B, P)))
    with pytest.raises(ValueError, match=r"state0\['c'\]: expected shape \(B, H\)"):
        k.forward(xs, bad_state, params)
    with pytest.raises(ValueError, match="missing size P"):
        k.param_shapes(I, H)
    with pytest.raises(ValueError, match="unknown size Q"):
        k.param_shapes(I, H, P=2, Q=3)


# mistakes ----------------------------------------------------------------------------------

MISTAKES = {
    "elementwise_of_two_sizes": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        h_prev, c_prev = cell.states("h", "c", sizes=("P", "H"))
        (W,) = cell.matrices("W")
        c = cell.update("c", W @ x * c_prev)
        h = cell.update("h", h_prev * c)
        """,
        "h",
        ["(size P)", "(hidden-sized, H)", "elementwise arithmetic needs equal sizes", "shape=("],
    ),
    "matrix_of_the_wrong_columns": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        h_prev, c_prev = cell.states("h", "c", sizes=("P", "H"))
        (W,) = cell.matrices("W")
        (W_p,) = cell.matrices("W_p", shape=("P", "H"))
        c = cell.update("c", W @ x * c_prev)
        h = cell.update("h", W_p @ h_prev)
        """,
        "h",
        ["declared of shape (P, H)", "h_prev is of size P", "shape=('P', 'P')"],
    ),
    "state_of_another_size": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        (h_prev,) = cell.states("h", sizes="P")
        (W,) = cell.matrices("W")
        h = cell.update("h", W @ x + h_prev)
        """,
        "h",
        ["(size P)", "(hidden-sized, H)"],
    ),
    "update_of_another_size": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        (h_prev,) = cell.states("h", sizes="P")
        W, U = cell.matrices("W U")
        h = cell.update("h", W @ x + U @ h_prev)
        """,
        "h",
        ["state 'h' is of size P, but its new value is of size H"],
    ),
    "one_operand_two_row_sizes": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        h_prev, c_prev = cell.states("h", "c", sizes=("P", "H"))
        (W,) = cell.matrices("W")
        (A,) = cell.matrices("A", shape=("H", "P"))
        (R,) = cell.matrices("R", shape=("P", "P"))
        c = cell.update("c", W @ x + A @ h_prev + c_prev)
        h = cell.update("h", R @ h_prev)
        """,
        "h",
        ["not supported: h_prev is multiplied by matrices of H rows (A) and of P rows (R)"],
    ),
    "undeclared_size": (
        """\
        x = cell.input("x")
        (h_prev,) = cell.states("h")
        (W,) = cell.matrices("W", shape=("Q", "I"))
        """,
        None,
        ["rows 'Q' is not a size", "cell.sizes('Q')"],
    ),
    "size_of_a_bad_name": (
        """\
        cell.sizes("p")
        """,
        None,
        ["'p' cannot name a size", "capital letter"],
    ),
    "size_declared_and_unused": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        (h_prev,) = cell.states("h")
        (W,) = cell.matrices("W")
        h = cell.update("h", W @ x + h_prev)
        """,
        None,
        ["size P is declared, but no state or parameter has it"],
    ),
    "size_used_as_a_vector": (
        """\
        (P,) = cell.sizes("P")
        x = cell.input("x")
        (h_prev,) = cell.states("h", sizes="P")
        (W,) = cell.matrices("W", shape=("P", "I"))
        h = cell.update("h", W @ x + P * h_prev)
        """,
        "h",
        ["P is a size, not a vector"],
    ),
    "output_that_is_nothing": (
        """\
        x = cell.input("x")
        (h_prev,) = cell.states("h")
        (W,) = cell.matrices("W")
        h = cell.update("h", W @ x + h_prev)
        """,
        None,
        ["output 'y' is neither a state nor an equation"],
    ),
    "result_never_used": (
        """\
        x = cell.input("x")
        (c_prev,) = cell.states("c")
        (W,) = cell.matrices("W")
        c = cell.update("c", W @ x + c_prev)
        y = cell.eq("y", tanh(c))
        """,
        "y",
        ["the result 'y' is never used", "Cell(..., output='y')"],
    ),
    "input_sized_result": (
        """\
        x = cell.input("x")
        (h_prev,) = cell.states("h")
        (W,) = cell.matrices("W")
        y = cell.eq("y", tanh(x))
        """,
        "y",
        ["x is input-sized (I)", "cell.input('x', size='H')"],
    ),
}
# what the language cannot say: each named as unsupported, with what to write instead
SIMPLE = """\
x = cell.input("x")
(h_prev,) = cell.states("h")
(W,) = cell.matrices("W")
"""
UNSUPPORTED = {
    "numpy_mean": ('h = cell.update("h", np.mean(W @ x) + h_prev)', ["np.mean()", "mean(v)"]),
    "numpy_sum": ('h = cell.update("h", np.sum(W @ x) * h_prev)', ["np.sum()", "sum(v)"]),
    "numpy_var": ('h = cell.update("h", np.var(h_prev) + W @ x)', ["mean((v - mean(v))**2)"]),
    "numpy_tanh": (
        'h = cell.update("h", np.tanh(W @ x) + h_prev)',
        ["np.tanh()", "from codegen.activations import tanh"],
    ),
    "python_sum": (
        'h = cell.update("h", sum(W @ x) + h_prev)',
        ["iterating over a vector", "codegen's sum(v)"],
    ),
    "python_max": ('h = cell.update("h", max(W @ x, h_prev))', ["use relu(v)"]),
    "index": ('h = cell.update("h", (W @ x)[0] + h_prev)', ["indexing a vector"]),
    "matrix_on_the_right": ('h = cell.update("h", x @ W + h_prev)', ["write the matrix first"]),
    "transposed_matrix": (
        'h = cell.update("h", W.T @ x + h_prev)',
        ["W.T: a transposed matrix is not supported", "shape="],
    ),
}
MISTAKES.update(
    {name: (SIMPLE + line + "\n", "h", phrases) for name, (line, phrases) in UNSUPPORTED.items()}
)
OUTPUTS = {"output_that_is_nothing": "y"}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_size_mistake_is_one_line_naming_the_fix(tmp_path, case):
    body, equation, phrases = MISTAKES[case]
    path = write(tmp_path, case, body, OUTPUTS.get(case))
    with pytest.raises(EquationError) as caught:
        load_cell(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "__array_function__" not in vars(sympy.Basic)  # NumPy is refused while a file runs
    assert caught.value.equation == equation
    for phrase in phrases:
        assert phrase in message, message


# hidden-sized inputs and outputs that are not states ---------------------------------------

HIGHWAY = """\
x = cell.input("x", size="H")
(c_prev,) = cell.states("c")
W, V = cell.matrices("W V")
(b,) = cell.vectors("b")
c = cell.update("c", tanh(W @ x + b) * c_prev + x)
y = cell.eq("y", sigmoid(V @ (x * c)) + x * c_prev)
"""


def highway_reference(xs, state0, p):
    c, ys = state0["c"], []
    for x in xs:
        c_prev = c
        c = np.tanh(x @ p["W"].T + p["b"]) * c_prev + x
        ys.append(1 / (1 + np.exp(-((x * c) @ p["V"].T))) + x * c_prev)
    return np.array(ys), {"c": c}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hidden_sized_input_and_an_output_equation(files, backend):
    k = codegen.load(files["highway"], backend)
    assert k.output == "y" and k.states == ("c",)
    T, B, H = 4, 3, 5
    rng = np.random.default_rng(2)
    params = {n: rng.uniform(-0.5, 0.5, s) for n, s in k.param_shapes(H, H).items()}
    state0 = {"c": rng.uniform(-0.5, 0.5, (B, H))}
    xs = rng.normal(size=(T, B, H))
    ys, final, cache = k.forward(xs, state0, params)
    want_ys, want_final = highway_reference(xs, state0, params)
    np.testing.assert_allclose(ys, want_ys, rtol=0, atol=1e-12)
    np.testing.assert_allclose(final["c"], want_final["c"], rtol=0, atol=1e-12)
    assert_gradients(k, highway_reference, xs, state0, params, cache)
    lengths = np.array([4, 1, 3], np.int32)
    ys_r, final_r, _ = k.forward(xs, state0, params, lengths=lengths, reverse=True)
    ys_i, final_i = k.infer(xs, state0, params, lengths=lengths, reverse=True)
    np.testing.assert_allclose(ys_i, ys_r, rtol=0, atol=1e-13)
    np.testing.assert_allclose(final_i["c"], final_r["c"], rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match=r"hidden-sized \(I = H\)"):
        k.forward(rng.normal(size=(T, B, H + 1)), state0, params)
