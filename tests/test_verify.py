"""cellgen verify: its methods, the bugs it must catch, where it must say INCONCLUSIVE, its report.

Bugs are planted by wrapping a real kernel and altering its backward's output (one entry off
by 1e-4, an off-by-one time step), or by generating a kernel from a wrong derivative rule (a
missing factor). The expected entry is always computed here, from the correct kernel, never
taken from verify's own output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import codegen
from codegen import activations, numdiff
from codegen import verify as verify_module
from codegen.cli import main
from codegen.errors import CellgenError
from codegen.paths import builtin_equations_dir
from codegen.verify import (
    ENTRY_SIZES,
    FLOAT32_TOLERANCE,
    PROJECTION_SIZES,
    TOLERANCES,
    analytic_gradients,
    entry_problem,
    judge,
    locate,
    random_problem,
    verify,
    verify_kernel,
)
from codegen.verify.judge import Judgement
from codegen.verify.problems import declared_sizes

import conftest
from conftest import BACKENDS, CELLS

PIECEWISE = '''
"""Every piecewise activation in one cell: relu, hard_sigmoid and softsign."""

from codegen.activations import hard_sigmoid, relu, softsign
from codegen.cell import Cell

cell = Cell("piecewise", description="relu, hard_sigmoid and softsign", reference="tests")
x = cell.input("x")
(h_prev,) = cell.states("h")
W_a, W_g, U_a, U_g = cell.matrices("W_a W_g U_a U_g")
b_a, b_g = cell.vectors("b_a b_g")
g = cell.eq("g", hard_sigmoid(W_g @ x + U_g @ h_prev + b_g), "gate")
a = cell.eq("a", relu(W_a @ x + U_a @ h_prev + b_a), "candidate")
h = cell.update("h", (1 - g) * h_prev + g * softsign(a), "hidden state")
'''


@pytest.fixture(scope="module")
def piecewise(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "piecewise.py"
    path.write_text(textwrap.dedent(PIECEWISE))
    return path


class Planted:
    """A real kernel whose backward output is altered by `alter(dxs, dstate0, dparams)`."""

    def __init__(self, kernel, alter):
        self._kernel = kernel
        self._alter = alter

    def __getattr__(self, name):
        return getattr(self._kernel, name)

    def backward(self, dys, cache, dfinal=None):
        dxs, dstate0, dparams = self._kernel.backward(dys, cache, dfinal)
        dxs = dxs.copy()
        dstate0 = {k: v.copy() for k, v in dstate0.items()}
        dparams = {k: v.copy() for k, v in dparams.items()}
        self._alter(dxs, dstate0, dparams)
        return dxs, dstate0, dparams


def plain(kernel, seed: int = 0) -> dict:
    """verify's points without lengths or reverse: one pass each, so that a bug planted in
    every backward call shows at one entry (verify's own points add up several passes)."""
    return {
        "entry_problem": random_problem(kernel, seed, ENTRY_SIZES),
        "projection_problem": random_problem(kernel, seed + 1, PROJECTION_SIZES),
    }


def median_entry(gradient: np.ndarray) -> tuple[int, ...]:
    """The entry of median magnitude: a typical entry, neither the largest nor negligible."""
    flat = np.abs(gradient).ravel()
    k = int(np.argsort(flat, kind="stable")[flat.size // 2])
    return tuple(int(i) for i in np.unravel_index(k, gradient.shape))


def off_by(param: str, relative: float):
    """Alter one parameter gradient's median entry by `relative`."""

    def alter(dxs, dstate0, dparams):
        g = dparams[param]
        g[median_entry(g)] *= 1 + relative

    return alter


def matrix_param(kernel) -> str:
    """A recurrent matrix of the cell (H x H), so rows and columns are both hidden units; else
    (indrnn's only matrix is W, LSTMP's are (H, P) and (P, H)) its first matrix."""
    shapes = kernel.param_shapes(2, 3, **declared_sizes(kernel, 3))
    matrices = [p for p, shape in shapes.items() if len(shape) == 2]
    return next((p for p in matrices if shapes[p] == (3, 3)), matrices[0])


# the methods on correct kernels ---------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_complex_step_is_the_numpy_default_and_reaches_rounding(cell):
    rows = verify(cell, "numpy")
    assert {r.method for r in rows} == {"complex"}
    assert all(r.verdict == "PASS" for r in rows), rows
    # the complex step has no truncation and no cancellation: errors are a few eps
    assert max(r.max_rel for r in rows) < 2e-14
    assert max(r.projection_rel for r in rows) < 2e-14
    assert all(r.projections == 3 and r.seed == 0 for r in rows)


@pytest.mark.parametrize("cell", CELLS)
def test_richardson_is_the_c_default_and_the_fallback_for_complex(cell):
    rows = verify(cell, "c")
    assert {r.method for r in rows} == {"richardson"}
    assert all(r.verdict == "PASS" for r in rows), rows
    assert max(r.max_rel for r in rows) < TOLERANCES["richardson"]
    # the C kernels cannot take complex numbers: asking for the complex step falls back
    assert {r.method for r in verify(cell, "c", method="complex")} == {"richardson"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["central", "dot", "taylor"])
def test_every_method_passes_correct_kernels(method, backend):
    for cell in ("lstm", "gru"):
        rows = verify(cell, backend, method=method, seed=3)
        assert all(r.verdict == "PASS" for r in rows), rows
        if method == "taylor":
            # a correct gradient leaves a second-order remainder
            assert all(1.8 <= r.rate <= 2.3 for r in rows), [r.rate for r in rows]
        else:
            assert all(r.max_rel <= r.tolerance for r in rows)


def test_default_tolerances_are_far_below_the_smallest_bug_to_catch():
    assert TOLERANCES["complex"] <= 1e-12 and TOLERANCES["richardson"] <= 1e-9
    assert FLOAT32_TOLERANCE < 1e-4


def test_the_numerical_methods_on_a_known_function():
    """sin along a line: every estimate within its own noise estimate of cos."""
    x0 = 0.3
    line = numdiff.Line(lambda t: np.sin(x0 + t) - np.sin(x0))
    delta = numdiff.EPS
    for estimate in (
        numdiff.richardson(line, delta),
        numdiff.central(line, delta),
        numdiff.one_sided(line, delta, +1),
        numdiff.one_sided(line, delta, -1),
    ):
        assert abs(estimate.value - np.cos(x0)) <= estimate.noise < 1e-8
    assert abs(numdiff.richardson(line, delta).value - np.cos(x0)) < 1e-13
    assert not numdiff.at_kink(line, delta)
    taylor = numdiff.taylor_rate(line, np.cos(x0), delta)
    assert abs(taylor.rate - 2) < 0.05
    wrong = numdiff.taylor_rate(line, np.cos(x0) * (1 + 1e-3), delta)
    assert abs(wrong.rate - 1) < 0.1


def test_a_kink_is_seen_and_its_smooth_side_is_used():
    """|t - 0.003| + 2t: a kink inside the step on the right; the left side is smooth."""
    line = numdiff.Line(lambda t: abs(t - 0.003) - 0.003 + 2 * t)
    assert numdiff.at_kink(line, numdiff.EPS)
    left = numdiff.one_sided(line, numdiff.EPS, -1, numdiff.RICHARDSON_STEP / 16)
    assert abs(left.value - 1.0) < 1e-12  # the derivative at 0 is 2 - 1


# planted bugs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_one_entry_off_by_1e_4_is_caught_and_named(cell, backend):
    kernel = codegen.load(cell, backend)
    param = matrix_param(kernel)
    true = analytic_gradients(kernel, random_problem(kernel, 0, ENTRY_SIZES))[param]
    expected = median_entry(true)
    rows = verify_kernel(Planted(kernel, off_by(param, 1e-4)), seed=0, **plain(kernel))
    failed = [r for r in rows if r.verdict != "PASS"]
    assert [r.tensor for r in failed] == [param], failed
    row = failed[0]
    assert row.verdict == "FAIL" and row.worst == expected
    assert (row.row, row.column, row.time_step) == (expected[0], expected[1], None)
    assert row.gate.startswith(param) or param in row.location
    assert f"{param}[{expected[0]}, {expected[1]}]" in row.location
    assert row.analytic == pytest.approx(true[expected] * (1 + 1e-4), rel=1e-12)
    assert row.reference == pytest.approx(true[expected], rel=1e-9)


@pytest.mark.parametrize("method", ["dot", "taylor"])
def test_direction_methods_catch_one_entry_off_by_1e_4_and_locate_it(method):
    """Random projections are known to miss single wrong entries when their tolerance is
    loose; here they catch it, and the entrywise follow-up finds it."""
    kernel = codegen.load("lstm")
    true = analytic_gradients(kernel, random_problem(kernel, 6, PROJECTION_SIZES))["U_i"]
    rows = verify_kernel(
        Planted(kernel, off_by("U_i", 1e-4)), method=method, seed=5, **plain(kernel, 5)
    )
    failed = [r for r in rows if r.verdict != "PASS"]
    assert [(r.tensor, r.verdict) for r in failed] == [("U_i", "FAIL")]
    assert failed[0].worst == median_entry(true)
    assert failed[0].gate == "i (input gate)"


def test_off_by_one_time_step_is_caught_with_its_time_step():
    for backend in BACKENDS:
        kernel = codegen.load("gru", backend)

        def shift(dxs, dstate0, dparams):
            dxs[:] = np.roll(dxs, 1, axis=0)  # dL/dx_t reported at t + 1

        true = analytic_gradients(kernel, random_problem(kernel, 0, ENTRY_SIZES))["xs"]
        wrong = np.abs(np.roll(true, 1, axis=0) - true)
        expected = tuple(int(i) for i in np.unravel_index(np.argmax(wrong), wrong.shape))
        rows = verify_kernel(Planted(kernel, shift), **plain(kernel))
        failed = [r for r in rows if r.verdict != "PASS"]
        assert [r.tensor for r in failed] == ["xs"]
        row = failed[0]
        assert row.worst == expected and row.time_step == expected[0]
        assert (row.row, row.column) == expected[1:]
        assert f"time step {expected[0]}" in row.location


@pytest.fixture(scope="module")
def missing_factor_kernels(tmp_path_factory):
    """LSTM kernels generated with sigmoid' = y instead of y (1 - y): a missing factor."""
    tmp = tmp_path_factory.mktemp("missing")
    shutil.copy(builtin_equations_dir() / "lstm.py", tmp / "lstm.py")
    patch = pytest.MonkeyPatch()
    patch.setenv("CELLGEN_CACHE_DIR", str(tmp / "cache"))
    patch.setattr(activations.sigmoid, "derivative", classmethod(lambda cls, x, y: y))
    try:
        kernels = {b: codegen.load(tmp / "lstm.py", b) for b in BACKENDS}
    finally:
        patch.undo()
    return kernels


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_derivative_missing_a_factor_is_caught_at_the_worst_entry(
    missing_factor_kernels, backend
):
    bad = missing_factor_kernels[backend]
    good = codegen.load("lstm", backend)
    problem = entry_problem(good, 0)  # verify's own, with lengths and both directions
    true, wrong = analytic_gradients(good, problem), analytic_gradients(bad, problem)
    rows = {r.tensor: r for r in verify_kernel(bad)}
    assert rows["b_f"].verdict == rows["W_o"].verdict == rows["U_i"].verdict == "FAIL"
    assert rows["b_f"].gate == "f (forget gate)"
    for name, row in rows.items():
        if row.verdict == "FAIL":
            error = np.abs(wrong[name] - true[name])
            assert row.worst == np.unravel_index(np.argmax(error), error.shape), name


def test_float32_is_checked_against_the_float64_reference():
    for backend in BACKENDS:
        rows = verify("lstm", backend, dtype="float32")
        assert all(r.verdict == "PASS" and r.dtype == "float32" for r in rows), rows
        assert all(r.tolerance == FLOAT32_TOLERANCE for r in rows)
        # the reference is a float64 derivative: its noise is far below float32's eps
        assert max(r.noise for r in rows) < 1e-9
        # and float32 was really checked: its rounding shows, well within the tolerance
        assert 1e-9 < max(r.max_rel for r in rows) < FLOAT32_TOLERANCE
    # why: float32 central differences could not check float32 kernels to this tolerance
    k32 = codegen.load("lstm", "numpy", dtype="float32")
    p = random_problem(k32, 0, ENTRY_SIZES).astype(np.float32)
    exact = analytic_gradients(codegen.load("lstm"), p.astype(np.float64))["W_f"]
    loss = conftest.loss_function(k32, p)
    fd = conftest.central_differences(p.params["W_f"], loss, 1e-3)
    assert np.max(np.abs(fd - exact)) / np.max(np.abs(exact)) > 10 * FLOAT32_TOLERANCE


def test_float32_bug_of_1e_3_is_caught():
    kernel = codegen.load("gru", "c", dtype="float32")
    reference = codegen.load("gru", "c", dtype="float64")
    p = random_problem(reference, 0, ENTRY_SIZES).astype(np.float32).astype(np.float64)
    expected = median_entry(analytic_gradients(reference, p)["U_z"])
    planted = Planted(kernel, off_by("U_z", 1e-3))
    rows = verify_kernel(planted, reference=reference, **plain(reference))
    failed = [r for r in rows if r.verdict != "PASS"]
    assert [(r.tensor, r.worst) for r in failed] == [("U_z", expected)]


# INCONCLUSIVE -----------------------------------------------------------------------------------


def test_judge_separates_pass_fail_and_inconclusive():
    ones = np.ones(1)
    assert judge(np.array([5e-7]), np.array([1e-5]), ones, 1e-6, {}).verdict == "PASS"
    # an error within the noise, the noise above the tolerance: cannot tell
    noisy = judge(np.array([2e-6]), np.array([5e-6]), ones, 1e-6, {})
    assert noisy.verdict == "INCONCLUSIVE" and "noise" in noisy.detail
    # an error far beyond the noise: still no verdict while the noise is above the tolerance
    assert judge(np.array([1e-2]), np.array([5e-6]), ones, 1e-6, {}).verdict == "INCONCLUSIVE"
    assert judge(np.array([2e-6]), np.array([1e-8]), ones, 1e-6, {}).verdict == "FAIL"
    kink = judge(np.array([2e-6]), np.array([1e-8]), ones, 1e-6, {0: "on a kink"})
    assert kink.verdict == "INCONCLUSIVE" and "kink" in kink.detail
    assert judge(np.array([np.nan]), ones, ones, 1e-6, {}).verdict == "FAIL"


def test_noise_above_the_tolerance_is_never_a_failure():
    """Issue 15 item 5: Richardson on a correct C gradient of a 200-term cell, noise 1.2e-5
    against a tolerance of 1e-10 and an error beyond 100 times that noise, was a FAIL."""
    ones = np.ones(3)
    errors, noise = np.array([3e-3, 1e-11, 2e-11]), np.array([1.2e-5, 1e-12, 1e-12])
    verdict = judge(errors, noise, ones, 1e-10, {})
    assert verdict.verdict == "INCONCLUSIVE" and verdict.index == 0
    assert "1.2e-05" in verdict.detail and "3.0e-03" in verdict.detail
    # a failing entry whose own noise is within the tolerance still fails, noisy ones aside
    errors[2] = 1e-6
    assert judge(errors, noise, ones, 1e-10, {}) == Judgement("FAIL", 2)


def test_a_saturated_gate_is_inconclusive_for_differences_and_passes_the_complex_step():
    """With f's pre-activation near 12, dL/dW_f is ~1e-5 of the loss: Richardson's rounding
    (~1e-13 of the loss) is then above its tolerance; the complex step still resolves it."""
    kernel = codegen.load("lstm")
    small = random_problem(kernel, 0, ENTRY_SIZES)
    large = random_problem(kernel, 1, PROJECTION_SIZES)
    for p in (small, large):
        p.params["b_f"][:] = 12.0
    rows = {}
    for m in ("richardson", "complex"):
        checked = verify_kernel(kernel, method=m, entry_problem=small, projection_problem=large)
        rows[m] = {r.tensor: r for r in checked}
    row = rows["richardson"]["W_f"]
    assert row.verdict == "INCONCLUSIVE" and "noise" in row.detail
    assert row.noise > row.tolerance
    assert rows["complex"]["W_f"].verdict == "PASS"
    assert all(r.verdict != "FAIL" for r in rows["richardson"].values())


def _on_the_kink(kernel, gate_bias, value):
    """A point where unit 0 of a gate has pre-activation `value` at every step and row."""
    p = random_problem(kernel, 0, ENTRY_SIZES)
    matrix = "W" + gate_bias[1:]
    p.params[matrix][0] = 0.0
    p.params["U" + gate_bias[1:]][0] = 0.0
    p.params[gate_bias][0] = value
    return p


def test_a_point_on_a_relu_kink_is_inconclusive_not_a_failure(piecewise):
    kernel = codegen.load(piecewise, "c")
    p = _on_the_kink(kernel, "b_a", 0.0)  # relu's pre-activation exactly 0
    rows = {r.tensor: r for r in verify_kernel(kernel, entry_problem=p)}
    row = rows["b_a"]
    assert row.verdict == "INCONCLUSIVE", row
    assert "on a kink" in row.detail and row.worst == (0,)
    assert all(r.verdict != "FAIL" for r in rows.values())


def test_a_point_on_a_hard_sigmoid_kink_is_inconclusive_for_the_complex_step_too(piecewise):
    """hard_sigmoid's upper kink: u = 0.2 x + 0.5 = 1 at x = 2.5. The complex step takes the
    derivative from one side (1/5) and the backward from the other (0): a kink, not a bug."""
    kernel = codegen.load(piecewise, "numpy")
    p = _on_the_kink(kernel, "b_g", 2.5)
    rows = {r.tensor: r for r in verify_kernel(kernel, method="complex", entry_problem=p)}
    assert rows["b_g"].verdict == "INCONCLUSIVE" and "on a kink" in rows["b_g"].detail
    assert all(r.verdict != "FAIL" for r in rows.values())


def test_a_kink_within_the_step_is_resolved_by_one_sided_differences(piecewise):
    kernel = codegen.load(piecewise, "c")
    p = _on_the_kink(kernel, "b_a", 0.003)  # inside Richardson's step of 0.02, not on it
    row = {r.tensor: r for r in verify_kernel(kernel, entry_problem=p)}["b_a"]
    assert row.verdict == "PASS" and "one-sided" in row.detail
    assert row.max_rel < TOLERANCES["richardson"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_piecewise_activations_verify_end_to_end(piecewise, backend):
    """relu, hard_sigmoid and softsign through both backends; in NumPy through the complex
    step, which needs their spellings to be complex-safe."""
    rows = verify(piecewise, backend)
    assert all(r.verdict == "PASS" for r in rows), rows
    if backend == "numpy":
        assert {r.method for r in rows} == {"complex"}
        assert max(r.max_rel for r in rows) < 1e-14


# the report -------------------------------------------------------------------------------------


def test_locate_maps_entries_to_gate_row_column_and_time_step():
    gates = verify_module.gates_of(codegen.registry.load_cell("lstm"))
    assert gates["W_f"] == "f (forget gate)" and gates["b_o"] == "o (output gate)"
    assert gates["U_c"] == "c_tilde (candidate)"
    where = locate("xs", (2, 1, 0), gates)
    assert (where.time_step, where.row, where.column, where.gate) == (2, 1, 0, None)
    where = locate("U_i", (1, 2), gates)
    assert (where.gate, where.row, where.column, where.time_step) == ("i (input gate)", 1, 2, None)
    assert locate("b_c", (3,), gates).text == "b_c[3]: gate c_tilde (candidate), row 3"
    assert locate("state0[c]", (1, 2), gates).gate == "c"


def test_the_cli_names_the_worst_entry_and_never_dumps_tensors(monkeypatch, capsys):
    real_load = verify_module.run.load

    def planted_load(cell, backend="numpy", dtype=None):
        return Planted(real_load(cell, backend, dtype), off_by("W_o", 1e-4))

    monkeypatch.setattr(verify_module.run, "load", planted_load)
    problems = verify_module.run.problems  # one pass per point: see plain()
    monkeypatch.setattr(problems, "entry_problem", lambda k, s: random_problem(k, s, ENTRY_SIZES))
    monkeypatch.setattr(
        problems, "projection_problem", lambda k, s: random_problem(k, s, PROJECTION_SIZES)
    )
    assert main(["verify", "lstm", "--backend", "numpy"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if " FAIL" in line]
    assert len(failed) == 1 and failed[0].split()[2] == "W_o"
    true = analytic_gradients(real_load("lstm"), random_problem(real_load("lstm"), 0))["W_o"]
    j, k = median_entry(true)
    assert f"worst W_o[{j}, {k}]: gate o (output gate), row {j}, column {k}" in failed[0]
    assert "analytic" in failed[0] and "reference" in failed[0]
    assert "14 passed, 1 failed, 0 inconclusive" in out
    assert "[[" not in out and max(len(line) for line in out.splitlines()) < 300


def cellgen(*args):
    return subprocess.run([sys.executable, "-m", "codegen", *args], capture_output=True, text=True)


def test_cli_methods_seed_and_json():
    result = cellgen("verify", "gru", "--method", "dot", "--seed", "7", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {(r["backend"], r["method"], r["seed"]) for r in rows} == {
        ("numpy", "dot", 7),
        ("c", "dot", 7),
    }
    assert all(r["verdict"] == "PASS" and r["projections"] == 3 for r in rows)
    table = cellgen("verify", "mgu", "--backend", "c", "--dtype", "float32", "--seed", "7")
    assert table.returncode == 0, table.stdout
    assert table.stdout.startswith("seed 7;")
    assert all(" float32 " in line for line in table.stdout.splitlines() if line.startswith("mgu"))


def test_cli_rejects_the_taylor_test_for_float32_in_one_line():
    result = cellgen("verify", "lstm", "--method", "taylor", "--dtype", "float32")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "float64 reference" in result.stderr
    with pytest.raises(CellgenError):
        verify("lstm", method="newton")
