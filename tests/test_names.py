"""Any legal name works: states and vectors named like the generated code's own names.

Names that once collided with what cellgen generates (`d_h_in`, the incoming adjoint of a state
h, beside a vector h_in; the template's locals ys, xs, state0, params, cache, work, saved; C's
helpers and macros) generate, compile, match a direct NumPy transcription and pass verify, on
every backend.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import codegen
from codegen.kernel import build_kernel
from codegen.registry import load_cell
from codegen.verify import verify

from conftest import BACKENDS, rel_err

CELL = '''
    """A cell whose names collide with everything the generated code names itself."""

    from codegen.activations import sigmoid, tanh
    from codegen.cell import Cell

    cell = Cell("clash", description="names that clash", reference="a test")
    x = cell.input("x")
    h_prev, ys_prev, xs_prev, state0_prev, params_prev, cache_prev = cell.states(
        "h ys xs state0 params cache"
    )
    W_r, W_h, W_y, U_r, U_h = cell.matrices("W_r W_h W_y U_r U_h")
    h_in, r_mm, reversed, gemm_f64 = cell.vectors("h_in r_mm reversed gemm_f64")
    NAN, NULL, work, saved = cell.vectors("NAN NULL work saved")
    d_h, cse0, fill_f64, INFINITY = cell.vectors("d_h cse0 fill_f64 INFINITY")
    r = cell.eq("r", sigmoid(W_r @ x + U_r @ h_prev + h_in), "gate")
    f_pre = cell.eq("f_pre", d_h * r + cse0)
    h = cell.update("h", tanh(W_h @ x + U_h @ r + r_mm * ys_prev + f_pre))
    ys = cell.update("ys", sigmoid(W_y @ x + reversed * h_prev + gemm_f64 * xs_prev))
    xs = cell.update("xs", NAN * xs_prev + NULL * state0_prev)
    state0 = cell.update("state0", tanh(work * state0_prev + saved * params_prev))
    params = cell.update("params", sigmoid(params_prev + cache_prev * h + fill_f64))
    cache = cell.update("cache", cache_prev * (1 - r) + r * ys + INFINITY)
'''

VECTORS = ["h_in", "r_mm", "reversed", "gemm_f64", "NAN", "NULL", "work", "saved", "d_h"]
VECTORS += ["cse0", "fill_f64", "INFINITY"]


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def transcription(xs, state0, p):
    """The cell's equations, written out by hand."""
    s = dict(state0)
    ys = []
    for x in xs:
        r = sigmoid(x @ p["W_r"].T + s["h"] @ p["U_r"].T + p["h_in"])
        f_pre = p["d_h"] * r + p["cse0"]
        h = np.tanh(x @ p["W_h"].T + r @ p["U_h"].T + p["r_mm"] * s["ys"] + f_pre)
        y = sigmoid(x @ p["W_y"].T + p["reversed"] * s["h"] + p["gemm_f64"] * s["xs"])
        new = {
            "h": h,
            "ys": y,
            "xs": p["NAN"] * s["xs"] + p["NULL"] * s["state0"],
            "state0": np.tanh(p["work"] * s["state0"] + p["saved"] * s["params"]),
            "params": sigmoid(s["params"] + s["cache"] * h + p["fill_f64"]),
            "cache": s["cache"] * (1 - r) + r * y + p["INFINITY"],
        }
        s = new
        ys.append(h)
    return np.stack(ys), s


@pytest.fixture(scope="module")
def clash(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "clash.py"
    path.write_text(textwrap.dedent(CELL))
    return path


def test_generated_names_never_take_a_users_name(clash):
    kernel = build_kernel(load_cell(clash))
    users = {name for name, _ in kernel.cell.kinds} | {p.name for p in kernel.cell.params}
    adjoints = [kernel.names.of(s) for s in sorted(users)]
    incoming = [kernel.names.incoming(s) for s in kernel.cell.states]
    through = [kernel.names.through_products(g.operand) for g in kernel.gemms]
    made = adjoints + incoming + through
    assert len(set(made)) == len(made)
    assert not set(made) & users
    # the vector h_in keeps d_h_in as its adjoint; the state h's incoming adjoint is another
    assert kernel.names.of("h_in") != kernel.names.incoming("h")
    assert kernel.names.of("r_mm") != kernel.names.through_products("r")
    assert kernel.names.owner(kernel.names.incoming("h")) == ("incoming", "h")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cell_of_clashing_names_matches_its_transcription(clash, backend):
    k = codegen.load(clash, backend)
    assert set(VECTORS) <= set(k.params)
    assert k.states == ("h", "ys", "xs", "state0", "params", "cache")
    rng = np.random.default_rng(3)
    T, B, I, H = 4, 2, 3, 5
    params = {n: rng.uniform(-0.6, 0.6, s) for n, s in k.param_shapes(I, H).items()}
    xs = rng.normal(size=(T, B, I))
    state0 = {s: rng.uniform(-0.5, 0.5, (B, H)) for s in k.states}
    ys, final, _ = k.forward(xs, state0, params)
    expected_ys, expected_final = transcription(xs, state0, params)
    assert rel_err(ys, expected_ys) <= 1e-13
    for s in k.states:
        assert rel_err(final[s], expected_final[s]) <= 1e-13, s


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cell_of_clashing_names_passes_verify(clash, backend):
    rows = verify(str(clash), backend, seed=0)
    assert rows and all(r.verdict == "PASS" for r in rows), [
        (r.tensor, r.verdict) for r in rows if r.verdict != "PASS"
    ]
