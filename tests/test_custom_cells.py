"""Cells written by a user get the full treatment: kernels, LaTeX and verified gradients.

The README's worked example runs exactly as written; cells with three states, every
activation, constants, differences and shared weights generate and verify on both backends;
the activations compute their definitions; the built-in mgu computes the paper's formulas.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import codegen
from codegen.registry import builtin_cells, load_cell
from codegen.verify import verify

from conftest import BACKENDS, make_problem, rel_err

ROOT = Path(__file__).resolve().parents[1]
ACTIVATIONS = ("sigmoid", "tanh", "relu", "softsign", "hard_sigmoid", "softplus", "silu")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Generate and compile into a fresh cache: every test exercises the whole build."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CELLGEN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def write_cell(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body).format(name=name))
    return path


def cellgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args], cwd=cwd, capture_output=True, text=True
    )


def run(kernel, xs, state0, params, dys, dfinal):
    ys, final, cache = kernel.forward(xs, state0, params)
    dxs, dstate0, dparams = kernel.backward(dys, cache, dfinal)
    return {"ys": ys, "dxs": dxs, **{f"final[{s}]": v for s, v in final.items()},
            **{f"d{s}0": v for s, v in dstate0.items()}, **dparams}  # fmt: skip


def sigma(x):
    return 1 / (1 + np.exp(-x))


# The README's worked example ------------------------------------------------------------------


def readme_blocks() -> tuple[str, str, str]:
    """The equation file, the shell commands and the Python use of "Writing a cell"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing a cell\n", 1)[1].split("\n## ", 1)[0]
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)
    cell_file = next(b for b in python if "cell = Cell(" in b)
    usage = next(b for b in python if "codegen.load(" in b)
    return cell_file, shell[0], usage


def test_the_readme_example_generates_compiles_and_verifies(tmp_path, monkeypatch):
    cell_file, shell, usage = readme_blocks()
    name = re.search(r'Cell\(\s*"(\w+)"', cell_file).group(1)
    (tmp_path / f"{name}.py").write_text(cell_file)
    commands = [line.split("  #")[0].split() for line in shell.strip().splitlines()]
    assert [c[:2] for c in commands] == [["cellgen", "generate"], ["cellgen", "latex"],
                                         ["cellgen", "verify"]]  # fmt: skip
    outputs = {}
    for command in commands:
        result = cellgen(*command[1:], cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[command[1]] = result.stdout
    for rel in (f"numpy/{name}.py", f"c/{name}.c", f"c/{name}.h"):
        assert (tmp_path / "kernels" / rel).is_file(), rel
    candidate = r"\hat{h}_{t} &= \tanh(W_{h} x_{t} + U_{h} (r_{t} \odot h_{t-1})"
    assert candidate in outputs["latex"]
    rows = [line.split() for line in outputs["verify"].splitlines() if line.startswith(name)]
    assert {r[1] for r in rows} == set(BACKENDS)
    assert {r[2] for r in rows} >= {"xs", "state0[h]", "W_z", "U_z", "b_h"}
    assert all(r[-1] == "PASS" for r in rows), outputs["verify"]

    # The README's Python, run where the file is; C against NumPy on the same problem.
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(usage, scope)
    k, ys, dparams = scope["k"], scope["ys"], scope["dparams"]
    assert k.backend == "c" and ys.shape == (5, 2, 4)
    assert set(dparams) == {f"{m}_{g}" for m in "WUb" for g in "zrh"}
    ref = codegen.load(f"{name}.py", backend="numpy")
    problem = make_problem(ref, T=5, B=2, I=3, H=4, seed=7)
    expected, got = run(ref, *problem), run(k, *problem)
    for key in expected:
        assert rel_err(got[key], expected[key]) <= 1e-12, key


# Cells of several states, every activation, constants and differences -------------------------

# relu, hard_sigmoid and softsign (whose second derivative jumps at 0) see arguments kept away
# from their kinks for any parameters: a kink inside a finite difference's step would spoil any
# gradient check. Each branch is used: relu's positive and zero sides, hard_sigmoid's slope and
# both saturations, softsign on both sides of 0.
THREE_STATES = """
    from codegen.activations import hard_sigmoid, relu, sigmoid, softsign, tanh
    from codegen.cell import Cell

    cell = Cell("{name}", description="three states", reference="a test", output="c")
    x = cell.input("x")
    h_prev, c_prev, m_prev = cell.states("h c m")
    W_a, W_g, W_s = cell.matrices("W_a W_g W_s")
    U_a, U_g, V = cell.matrices("U_a U_g V")
    b_a, b_g, p = cell.vectors("b_a, b_g, p")

    a = cell.eq("a", hard_sigmoid(2 * tanh(W_a @ x + U_a @ h_prev + b_a)), "slope part")
    q = cell.eq("q", tanh(W_g @ x + U_g @ (a * c_prev) + b_g))
    g = cell.eq("g", relu(1 + q**2), "positive side")
    u = cell.eq("u", tanh(W_s @ x + V @ (m_prev - h_prev) + p * c_prev))
    s = cell.eq("s", softsign(2 + u) - softsign(u - 2), "both sides")
    off = cell.eq("off", relu(-1 - s * s), "zero side")
    top = cell.eq("top", hard_sigmoid(3 + s * s) - hard_sigmoid(-3 - g), "saturated")
    c = cell.update("c", a * c_prev + (1 - a) * g - 0.25 * s + off * m_prev)
    m = cell.update("m", 0.5 * m_prev * (s - 1.25) + s**2 / 2 - 3 * top)
    h = cell.update("h", tanh(c) * sigmoid(m) - V @ c)
"""


def softsign_(v):
    return v / (1 + np.abs(v))


def hard_sigmoid_(v):
    return np.clip(0.2 * v + 0.5, 0, 1)


def three_states_reference(xs, state0, p):
    h, c, m = state0["h"], state0["c"], state0["m"]
    ys = []
    for x in xs:
        a = hard_sigmoid_(2 * np.tanh(x @ p["W_a"].T + h @ p["U_a"].T + p["b_a"]))
        q = np.tanh(x @ p["W_g"].T + (a * c) @ p["U_g"].T + p["b_g"])
        g = np.maximum(1 + q**2, 0)
        u = np.tanh(x @ p["W_s"].T + (m - h) @ p["V"].T + p["p"] * c)
        s = softsign_(2 + u) - softsign_(u - 2)
        off = np.maximum(-1 - s * s, 0)
        top = hard_sigmoid_(3 + s * s) - hard_sigmoid_(-3 - g)
        c_new = a * c + (1 - a) * g - 0.25 * s + off * m
        m = 0.5 * m * (s - 1.25) + s**2 / 2 - 3 * top
        h = np.tanh(c_new) * sigma(m) - c_new @ p["V"].T
        c = c_new
        ys.append(c)
    return np.stack(ys), {"h": h, "c": c, "m": m}


@pytest.fixture(scope="module")
def three_states(tmp_path_factory) -> Path:
    return write_cell(tmp_path_factory.mktemp("cells"), "three_states", THREE_STATES)


def test_a_three_state_cell_has_the_declared_interface(three_states):
    spec = load_cell(three_states)
    assert spec.states == ("h", "c", "m") and spec.output == "c"
    k = codegen.load(three_states)
    assert k.states == ("h", "c", "m")
    shapes = k.param_shapes(4, 3)
    assert shapes["W_a"] == (3, 4) and shapes["U_g"] == (3, 3) and shapes["V"] == (3, 3)
    assert shapes["p"] == (3,) and len(shapes) == 9


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_three_state_cell_computes_its_equations(three_states, backend):
    k = codegen.load(three_states, backend=backend)
    xs, state0, params, _, _ = make_problem(k, T=5, B=2, I=4, H=3, seed=3)
    ys, final = three_states_reference(xs, state0, params)
    got_ys, got_final, _ = k.forward(xs, state0, params)
    assert rel_err(got_ys, ys) <= 1e-13
    for s in ("h", "c", "m"):
        assert rel_err(got_final[s], final[s]) <= 1e-13, s


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_gradient_of_a_three_state_cell_passes(three_states, backend):
    rows = verify(str(three_states), backend, seed=1)
    tensors = {r.tensor for r in rows}
    assert tensors >= {"xs", "state0[h]", "state0[c]", "state0[m]", "V", "p", "b_g"}
    assert [r for r in rows if r.verdict != "PASS"] == []


def test_float32_c_of_a_three_state_cell_matches_float64(three_states):
    ref = codegen.load(three_states, backend="numpy")
    expected = run(ref, *make_problem(ref, T=6, B=3, I=4, H=5, seed=2))
    k32 = codegen.load(three_states, backend="c", dtype="float32")
    got = run(k32, *make_problem(ref, T=6, B=3, I=4, H=5, seed=2, dtype=np.float32))
    for key in expected:
        assert got[key].dtype == np.float32, key
        assert rel_err(got[key], expected[key]) <= 1e-5, key


# A cell with ReLU where it naturally sits: C must agree with NumPy, whose gradients verify. ----

LIGHT_GRU = '''
    """Light GRU (Ravanelli et al. 2018), without batch normalisation."""

    from codegen.activations import relu, sigmoid
    from codegen.cell import Cell

    cell = Cell("{name}", description="Light GRU", reference="Ravanelli et al. 2018")
    x = cell.input("x")
    (h_prev,) = cell.states("h")
    W_z, W_h, U_z, U_h = cell.matrices("W_z W_h U_z U_h")
    b_z, b_h = cell.vectors("b_z b_h")
    z = cell.eq("z", sigmoid(W_z @ x + U_z @ h_prev + b_z), "update gate")
    h_hat = cell.eq("h_hat", relu(W_h @ x + U_h @ h_prev + b_h), "candidate")
    h = cell.update("h", z * h_prev + (1 - z) * h_hat, "hidden state")
'''


def test_a_relu_cell_verifies_and_c_agrees_with_numpy(tmp_path):
    path = write_cell(tmp_path, "light_gru", LIGHT_GRU)
    rows = verify(str(path), "numpy", seed=0)
    assert len(rows) == 8 and all(r.verdict == "PASS" for r in rows), rows
    ref, c = codegen.load(path, "numpy"), codegen.load(path, "c")
    problem = make_problem(ref, T=6, B=3, I=4, H=5, seed=5)
    assert np.mean(problem[0] @ problem[2]["W_h"].T < 0) > 0.2  # relu's zero side is in play
    expected, got = run(ref, *problem), run(c, *problem)
    for key in expected:
        assert rel_err(got[key], expected[key]) <= 1e-12, key


# The activations themselves, in both backends -------------------------------------------------

PROBE = """
    from codegen.activations import {act}
    from codegen.cell import Cell

    cell = Cell("{name}", description="probe", reference="a test")
    x = cell.input("x")
    (h_prev,) = cell.states("h")
    W, U = cell.matrices("W U")
    a = cell.eq("a", {act}(W @ x + U @ h_prev))
    h = cell.update("h", a * (1 - h_prev))
"""

DEFINITIONS = {
    "sigmoid": (sigma, lambda v: sigma(v) * (1 - sigma(v))),
    "tanh": (np.tanh, lambda v: 1 - np.tanh(v) ** 2),
    "relu": (lambda v: np.maximum(v, 0), lambda v: (v > 0) * 1.0),
    "softsign": (softsign_, lambda v: 1 / (1 + np.abs(v)) ** 2),
    "hard_sigmoid": (hard_sigmoid_, lambda v: 0.2 * (np.abs(v) < 2.5)),
    "softplus": (lambda v: np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0), sigma),
    "silu": (lambda v: v * sigma(v), lambda v: sigma(v) * (1 + v * (1 - sigma(v)))),
}
KINKS = {"relu": [0.0], "hard_sigmoid": [-2.5, 2.5]}
POINTS = np.array([-40.0, -6.0, -2.6, -2.4, -1.0, -0.3, -1e-3, 1e-3, 0.3, 1.0, 2.4, 2.6, 6.0, 40])


def probe(tmp_path: Path, act: str, backend: str, values: np.ndarray):
    """h_1 = act(x) for one value per batch row, and d h_1 / d x; from a kernel built for act."""
    path = write_cell(tmp_path, f"probe_{act}", PROBE.replace("{act}", act))
    k = codegen.load(path, backend=backend)
    B = len(values)
    xs = np.stack([values.reshape(B, 1), np.zeros((B, 1))])
    params = {"W": np.ones((1, 1)), "U": np.full((1, 1), 0.5)}
    ys, _, cache = k.forward(xs, {"h": np.zeros((B, 1))}, params)
    dys = np.zeros_like(ys)
    dys[0] = 1.0
    with np.errstate(invalid="ignore"):
        dxs, _, _ = k.backward(dys, cache)
    return ys[0, :, 0], dxs[0, :, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_an_activation_computes_its_definition_and_derivative(tmp_path, act, backend):
    forward, derivative = DEFINITIONS[act]
    y, dy = probe(tmp_path, act, backend, np.append(POINTS, KINKS.get(act, [])))
    n = len(POINTS)
    np.testing.assert_allclose(y[:n], forward(POINTS), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dy[:n], derivative(POINTS), rtol=1e-13, atol=1e-15)
    # at a kink: the function's value, and the derivative 0 (the kernels' convention)
    kinks = np.array(KINKS.get(act, []))
    np.testing.assert_array_equal(y[n:], forward(kinks))
    np.testing.assert_array_equal(dy[n:], np.zeros_like(kinks))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_an_activation_keeps_nan(tmp_path, act, backend):
    with np.errstate(invalid="ignore"):
        y, _ = probe(tmp_path, act, backend, np.array([0.7, np.nan, -0.7]))
    assert np.isnan(y[1]) and np.all(np.isfinite(y[[0, 2]]))


# The built-in mgu ----------------------------------------------------------------------------


def mgu_reference(xs, state0, p):
    h = state0["h"]
    ys = []
    for x in xs:
        f = sigma(x @ p["W_f"].T + h @ p["U_f"].T + p["b_f"])
        h_hat = np.tanh(x @ p["W_h"].T + (f * h) @ p["U_h"].T + p["b_h"])
        h = (1 - f) * h + f * h_hat
        ys.append(h)
    return np.stack(ys), {"h": h}


@pytest.mark.parametrize("backend", BACKENDS)
def test_mgu_computes_the_formulas_of_zhou_et_al(backend):
    assert "mgu" in builtin_cells()
    k = codegen.load("mgu", backend=backend)
    assert k.states == ("h",)
    assert k.param_shapes(3, 5) == {"W_f": (5, 3), "W_h": (5, 3), "U_f": (5, 5),
                                    "U_h": (5, 5), "b_f": (5,), "b_h": (5,)}  # fmt: skip
    xs, state0, params, _, _ = make_problem(k, T=6, B=2, I=3, H=5, seed=4)
    ys, final = mgu_reference(xs, state0, params)
    got_ys, got_final, _ = k.forward(xs, state0, params)
    assert rel_err(got_ys, ys) <= 1e-13 and rel_err(got_final["h"], final["h"]) <= 1e-13


def test_mgu_latex_and_generated_files():
    result = subprocess.run([sys.executable, "-m", "codegen", "latex", "mgu"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert r"\hat{h}_{t} &= \tanh(W_{h} x_{t} + U_{h} (f_{t} \odot h_{t-1})" in result.stdout
    for rel in ("numpy/mgu.py", "c/mgu.c", "c/mgu.h"):
        assert (ROOT / "generated" / rel).is_file(), rel


DIVIDING_CELL = """\
from codegen.activations import sigmoid
from codegen.cell import Cell

cell = Cell("dividing", description="a cell that divides by vectors", reference="a test")
x = cell.input("x")
(h_prev,) = cell.states("h")
W, U = cell.matrices("W U")
(b,) = cell.vectors("b")
a = cell.eq("a", sigmoid(W @ x + U @ h_prev + b), "gate")
h = cell.update("h", h_prev / (2 + a) + a / (3 + h_prev * h_prev) - 1 / (1 + a * a), "state")
"""


def test_division_by_vectors_has_right_values_and_gradients(tmp_path):
    """Quotients and their derivatives (-x / u**2) print correctly in both backends."""
    import numpy as np

    import codegen
    from codegen.verify import verify

    from conftest import BACKENDS, make_problem, rel_err

    path = tmp_path / "dividing.py"
    path.write_text(DIVIDING_CELL)
    for backend in BACKENDS:
        k = codegen.load(path, backend)
        xs, state0, params, _, _ = make_problem(k, T=4, B=2, I=3, H=5, seed=7)
        h, expected = state0["h"], []
        for x in xs:
            a = 1 / (1 + np.exp(-(x @ params["W"].T + h @ params["U"].T + params["b"])))
            h = h / (2 + a) + a / (3 + h * h) - 1 / (1 + a * a)
            expected.append(h)
        ys, _, _ = k.forward(xs, state0, params)
        assert rel_err(ys, np.stack(expected)) <= 1e-13
        rows = verify(path, backend, seed=3)
        assert rows and all(r.verdict == "PASS" for r in rows), [
            r for r in rows if r.verdict != "PASS"
        ]
