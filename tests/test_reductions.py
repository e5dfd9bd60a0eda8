"""Reductions over units (mean, sum), sqrt and rsqrt: a user's cell verifies on both backends,
the plan gives per-row scalars their own stage and size, and every misuse is one clear line."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import sympy

import codegen
from codegen.derive import derive
from codegen.errors import EquationError
from codegen.kernel import Reduce, build_kernel
from codegen.registry import load_cell
from codegen.verify import verify

from conftest import BACKENDS, rel_err

HEADER = """\
from codegen.activations import rsqrt, sigmoid, sqrt, tanh
from codegen.cell import Cell
from codegen.reductions import mean, sum

cell = Cell("{name}", description="a test", reference="a test")
x = cell.input("x")
(h_prev,) = cell.states("h")
W, U = cell.matrices("W U")
b, g, p = cell.vectors("b g p")
"""

# RMS-normalised pre-activation (rsqrt of a mean square, inline in a vector equation), plus a
# sum over the state's units gating the carry
RMS = """\
a = cell.eq("a", W @ x + U @ h_prev + b, "pre-activation")
ms = cell.eq("ms", mean(a**2), "mean square")
s = cell.eq("s", sum(p * h_prev), "a weighted sum of the state")
h = cell.update("h", tanh(g * a * rsqrt(ms + 0.1)) + sigmoid(s) * h_prev / 2, "hidden state")
"""


def write_cell(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER.format(name=name) + textwrap.dedent(body))
    return path


def rms_reference(xs, state0, params):
    """The RMS cell written directly in NumPy."""
    h, ys = state0["h"], []
    for x in xs:
        a = x @ params["W"].T + h @ params["U"].T + params["b"]
        ms = np.mean(a**2, axis=1, keepdims=True)
        s = np.sum(params["p"] * h, axis=1, keepdims=True)
        h = np.tanh(params["g"] * a / np.sqrt(ms + 0.1)) + h / (2 * (1 + np.exp(-s)))
        ys.append(h)
    return np.stack(ys)


@pytest.fixture(scope="module")
def rms_cell(tmp_path_factory):
    return write_cell(tmp_path_factory.mktemp("rms"), "rms", RMS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_users_cell_with_mean_sum_and_rsqrt_computes_its_equations(rms_cell, backend):
    k = codegen.load(str(rms_cell), backend=backend)
    rng = np.random.default_rng(0)
    params = {n: rng.uniform(-0.7, 0.7, s) for n, s in k.param_shapes(4, 5).items()}
    xs, state0 = rng.normal(size=(3, 2, 4)), {"h": rng.normal(size=(2, 5))}
    ys, _, _ = k.forward(xs, state0, params)
    assert rel_err(ys, rms_reference(xs, state0, params)) <= 1e-13


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_gradient_of_a_users_cell_with_reductions_passes(rms_cell, backend, dtype):
    rows = verify(str(rms_cell), backend, seed=2, dtype=dtype)
    assert {r.tensor for r in rows} >= {"xs", "state0[h]", "W", "U", "b", "g", "p"}
    assert [r for r in rows if r.verdict != "PASS"] == []


def test_a_reduction_is_a_stage_boundary_and_its_result_a_per_row_scalar(rms_cell):
    spec = load_cell(str(rms_cell))
    d = derive(spec)
    assert {"ms", "s"} <= d.scalars and "a" not in d.scalars
    assert d.size("ms") == 1 and d.size("a") == sympy.Symbol("H", integer=True, positive=True)
    assert d.level["ms"] == d.level["a"] + 1  # the reduction waits for all units of a
    plan = build_kernel(spec)
    forward = {(r.result, r.kind) for r in plan.forward if isinstance(r, Reduce)}
    assert forward == {("ms", "mean"), ("s", "sum")}
    # the adjoint of a scalar that vectors read: a sum over units in the backward
    sums = {a.target for a in d.backward if a.kind == "sum"}
    assert sums and sums <= d.scalars
    assert {r.result for r in plan.backward if isinstance(r, Reduce)} == {
        d.names.summed(s) for s in sums
    }
    assert all(r.kind == "sum" for r in plan.backward if isinstance(r, Reduce))
    # saved per-row scalars take T B numbers each, vectors T B H
    T, B, H = (sympy.Symbol(n, integer=True, positive=True) for n in "TBH")
    expected = sum((T * B * (1 if v in d.scalars else H) for v in plan.series), sympy.S.Zero)
    assert plan.saved_size == expected


def test_the_ln_lstm_backward_sums_each_scalars_contributions_over_units():
    d = derive(load_cell("ln_lstm"))
    sums = [a for a in d.backward if a.kind == "sum"]
    assert {a.target for a in sums} == {"mu_x", "s_x", "mu_h", "s_h", "mu_c", "s_c"}
    for a in sums:  # d_s_sum = sum(d_s_each), and d_s reads it
        each = next(e for e in d.backward if e.kind == "each" and e.target == a.target)
        assert a.expr.args == (sympy.Symbol(each.name),)
        total = next(e for e in d.backward if not e.kind and e.target == a.target)
        assert sympy.Symbol(a.name) in total.expr.free_symbols


# errors --------------------------------------------------------------------------------

ERRORS = {
    "builtin_sum": (
        """s = cell.eq("s", __builtins__["sum"](h_prev) if isinstance(__builtins__, dict)
                      else __builtins__.sum(h_prev))""",
        "use codegen's sum(v) for a sum over units (`from codegen.reductions import sum`)",
    ),
    "sum_of_list": ('s = cell.eq("s", sum([h_prev, W @ x]))', "pass the vectors themselves"),
    "np_mean": (
        'import numpy as np\nm = cell.eq("m", np.mean(h_prev))',
        "unsupported function np.mean(): NumPy and math functions cannot take cellgen's "
        "symbols; use codegen's mean(v) for a mean over the units of a vector",
    ),
    "np_sqrt": (
        'import numpy as np\nm = cell.eq("m", np.sqrt(h_prev * h_prev))',
        "use sqrt, imported with `from codegen.activations import sqrt`",
    ),
    "nested": (
        'm = cell.eq("m", tanh(mean(W @ x)))',
        "mean(...) inside an expression is not supported: a reduction is an equation of its own",
    ),
    "in_expression": (
        'm = cell.eq("m", h_prev - mean(h_prev))',
        "m = cell.eq('m', mean(...)); then use m here",
    ),
    "scalar_product": (
        'm = cell.eq("m", mean(h_prev))\nz = cell.eq("z", tanh(U @ m))',
        "U @ m: the operand is a per-row scalar (a reduction); a matrix multiplies a vector",
    ),
    "scalar_state": (
        'm = cell.eq("m", mean(W @ x))\nh = cell.update("h", m * 2)',
        "a state is a vector",
    ),
    "missing_reduction": (
        "from codegen.reductions import variance",
        "unsupported reduction variance(): codegen.reductions provides mean, sum",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_each_misuse_is_one_line_naming_the_fix(tmp_path, case):
    body, message = ERRORS[case]
    path = write_cell(tmp_path, case, body + "\n")
    with pytest.raises(EquationError) as caught:
        load_cell(str(path))
    text = str(caught.value)
    assert message in text, text
    assert "\n" not in text and text.startswith(str(path))
