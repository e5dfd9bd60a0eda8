"""`cellgen latex`: what it prints, that pdflatex compiles it, and that the backward is faithful.

The compile tests run the real pdflatex (CI installs TeX Live; see .ci/run) and fail, not
skip, when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy

import codegen
from codegen import activations
from codegen.bptt import Outer, Row, SumOverSteps, Transposed, bptt
from codegen.cell import prev_name
from codegen.derive import derive
from codegen.latex import CellLatexPrinter, Equations, paste
from codegen.registry import builtin_cells, load_cell

from conftest import make_problem, rel_err

CELLS = builtin_cells()
ROOT = Path(__file__).resolve().parent.parent


def cellgen(*args, cwd=None):
    result = subprocess.run(
        [sys.executable, "-m", "codegen", *args], capture_output=True, text=True, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def pdflatex(tmp_path, source: str, name: str = "doc") -> str:
    """Compile with pdflatex; returns the log. Fails on any error or overfull box."""
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.fail("pdflatex is not installed: .ci/run installs texlive-latex-base")
    (tmp_path / f"{name}.tex").write_text(source)
    result = subprocess.run(
        [exe, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log = (tmp_path / f"{name}.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert result.returncode == 0 and not errors, errors or log[-2000:]
    bad = re.findall(r"^(Overfull .*|LaTeX Warning: .*|Missing character.*)$", log, re.M)
    assert not bad, bad
    return log


def pages(log: str) -> int:
    return int(re.search(r"Output written on .*\((\d+) pages?", log).group(1))


def minimal_document(body: str) -> str:
    return (
        "\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n"
        f"Some text before.\n\n{body}\nSome text after.\n\\end{{document}}\n"
    )


# what it prints ------------------------------------------------------------------------


def test_the_forward_of_the_lstm_is_an_align_star_in_the_files_order():
    out = cellgen("latex", "lstm")
    assert r"\begin{align*}" in out and r"\begin{aligned}" not in out
    assert r"f_{t} &= \sigma(W_{f} x_{t} + U_{f} h_{t-1} + b_{f})" in out
    assert r"c_{t} &= f_{t} \odot c_{t-1} + i_{t} \odot \tilde{c}_{t}" in out
    assert r"h_{t} &= o_{t} \odot \tanh(c_{t})" in out
    assert r"\sigma\left(" not in out  # \left( after σ leaves a gap


def test_terms_keep_the_order_of_the_equation_file():
    gru = cellgen("latex", "gru")  # (1 - z) * h_prev + z * h_hat
    assert r"h_{t} &= (1 - z_{t}) \odot h_{t-1} + z_{t} \odot \hat{h}_{t}" in gru
    after = cellgen("latex", "gru_reset_after")  # (1 - z) * n + z * h_prev
    assert r"h_{t} &= (1 - z_{t}) \odot n_{t} + z_{t} \odot h_{t-1}" in after
    assert r"n_{t} &= \tanh(W_{n} x_{t} + b_{in} + r_{t} \odot (U_{n} h_{t-1} + b_{hn}))" in after


def test_the_order_follows_a_users_file_both_ways(tmp_path):
    template = textwrap.dedent("""\
        from codegen.activations import sigmoid, tanh
        from codegen.cell import Cell

        cell = Cell("{name}", description="order test", reference="a test")
        x = cell.input("x")
        (h_prev,) = cell.states("h")
        W_z, W_h, U_z, U_h = cell.matrices("W_z W_h U_z U_h")
        b_z, b_h = cell.vectors("b_z b_h")
        z = cell.eq("z", sigmoid(b_z + U_z @ h_prev + W_z @ x), "gate")
        h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ h_prev + b_h), "candidate")
        h = cell.update("h", {update}, "hidden state")
        """)
    cases = {
        "one": ("z * h_hat + (1 - z) * h_prev",
                r"z_{t} \odot \hat{h}_{t} + (1 - z_{t}) \odot h_{t-1}"),
        "two": ("h_prev * (1 - z) + h_hat * z",
                r"h_{t-1} \odot (1 - z_{t}) + \hat{h}_{t} \odot z_{t}"),
    }  # fmt: skip
    for name, (update, printed) in cases.items():
        (tmp_path / f"{name}.py").write_text(template.format(name=name, update=update))
        out = cellgen("latex", "--equations", str(tmp_path / f"{name}.py"))
        assert f"h_{{t}} &= {printed}" in out
    assert r"z_{t} &= \sigma(b_{z} + U_{z} h_{t-1} + W_{z} x_{t})" in out


def test_the_lstm_backward_reads_as_textbook_bptt():
    out = cellgen("latex", "lstm", "--backward")
    rows = [line.strip().rstrip("\\").strip() for line in out.splitlines() if "&=" in line]
    assert r"\delta o_{t} &= \delta h_{t} \odot \tanh(c_{t})" in rows
    assert r"\delta a_{o,t} &= \delta o_{t} \odot o_{t} \odot (1 - o_{t})" in rows
    assert (
        r"\delta c_{t} &= \delta c_{t}^{\mathrm{in}} + \delta h_{t} \odot o_{t} \odot "
        r"(1 - \tanh^{2}(c_{t}))"
    ) in rows
    assert (
        r"\delta x_{t} &= W_{f}^{\top} \delta a_{f,t} + W_{i}^{\top} \delta a_{i,t} + "
        r"W_{c}^{\top} \delta a_{\tilde{c},t} + W_{o}^{\top} \delta a_{o,t}"
    ) in rows
    assert (
        r"\delta h_{t-1} &= U_{f}^{\top} \delta a_{f,t} + U_{i}^{\top} \delta a_{i,t} + "
        r"U_{c}^{\top} \delta a_{\tilde{c},t} + U_{o}^{\top} \delta a_{o,t}"
    ) in rows
    assert r"\delta c_{t-1} &= \delta c_{t} \odot f_{t}" in rows
    assert r"\delta W_{f} &= \sum_{t=1}^{T} \delta a_{f,t}\, x_{t}^{\top}" in rows
    assert r"\delta U_{o} &= \sum_{t=1}^{T} \delta a_{o,t}\, h_{t-1}^{\top}" in rows
    assert r"\delta b_{c} &= \sum_{t=1}^{T} \delta a_{\tilde{c},t}" in rows
    # each gradient written once; no renaming rows, no row-vector forms, no +=
    lhs = [r.split("&")[0].strip() for r in rows]
    assert len(lhs) == len(set(lhs)) == 9 + 3 + 12
    assert not any(r"\delta (W" in r or r"\delta (U" in r or "mathrel" in r for r in rows)
    # the meaning of the incoming gradients is in rendered text, not in % comments
    text = " ".join(line for line in out.splitlines() if not line.startswith("%"))
    assert "from the loss at step $t$" in text and "passes back as its" in text
    assert r"$\delta c_{t}^{\mathrm{in}}$ is the gradient that reaches $c_{t}$" in text


def test_the_gru_backward_defines_the_reset_product_before_using_it():
    out = cellgen("latex", "gru", "--backward")
    first = out.index(r"\delta (r_{t} \odot h_{t-1}) &= U_{h}^{\top} \delta a_{\hat{h},t}")
    assert first < out.index(r"\delta r_{t} &= \delta (r_{t} \odot h_{t-1}) \odot h_{t-1}")
    grad = r"\delta U_{h} &= \sum_{t=1}^{T} \delta a_{\hat{h},t}\, (r_{t} \odot h_{t-1})^{\top}"
    assert grad in out


@pytest.mark.parametrize("name", CELLS)
def test_every_adjoint_is_defined_before_it_is_used_and_none_is_a_renaming(name):
    cell = load_cell(name)
    view = bptt(cell)
    outside = {*cell.states, cell.output}  # an output equation's gradient comes from the loss
    given = {f"d_{s}_in" for s in outside} | {f"d_{s}" for s in outside}
    defined = set(given)
    seen = []
    for row in view.rows:
        used = {s.name for s in row.rhs.free_symbols if s.name.startswith("d_")}
        assert used <= defined, (row, used - defined)
        assert not isinstance(row.rhs, sympy.Symbol), row  # a renaming
        assert row.lhs.name not in seen, row
        seen.append(row.lhs.name)
        defined.add(row.lhs.name)
    wanted = {f"d_{p.name}" for p in cell.params} | {f"d_{cell.input}"}
    assert wanted | {f"d_{prev_name(s)}" for s in cell.states} <= set(seen)


def test_the_readme_shows_the_lstm_backward_as_cellgen_prints_it():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Printing the math\n", 1)[1].split("\n## ", 1)[0]
    shown = re.search(r"\$\$\n\\begin\{aligned\}\n(.*?)\n\\end\{aligned\}\n\$\$", section, re.S)
    printed = cellgen("latex", "lstm", "--backward")
    rows = [line.strip().removesuffix(r" \\") for line in printed.splitlines() if "&=" in line]
    assert shown.group(1).split(" \\\\\n") == rows


def test_help_names_the_packages_the_output_needs():
    out = cellgen("latex", "--help")
    assert "amsmath" in out and "amssymb" in out and "--standalone" in out


# the rows compute what the kernels compute -----------------------------------------------

_NUMPY = {
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0),
    "softsign": lambda v: v / (1 + np.abs(v)),
    "hard_sigmoid": lambda v: np.clip(v / 5 + 0.5, 0, 1),
    "positive": lambda y: (y > 0).astype(float),
    "inside_unit": lambda y: ((y > 0) & (y < 1)).astype(float),
    "sign": np.sign,
    "sqrt": np.sqrt,
    "rsqrt": lambda v: 1 / np.sqrt(v),
    "mean": lambda *vs: np.mean(np.concatenate(vs)),  # over the units, stacked
    "sum": lambda *vs: np.sum(np.concatenate(vs)),
    "SumOverUnits": np.sum,
}


def evaluate(expr, env):
    """A row's right-hand side on NumPy values: vectors (H,), matrices, one step."""
    if isinstance(expr, sympy.Symbol):
        return env[expr.name]
    if expr.is_Number:
        return float(expr)
    args = [evaluate(a, env) for a in expr.args]
    if isinstance(expr, sympy.Add):
        return sum(args[1:], args[0])
    if isinstance(expr, sympy.Mul):
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if isinstance(expr, sympy.Pow):
        return args[0] ** args[1]
    if isinstance(expr, Transposed):
        return args[0].T @ args[1]
    if isinstance(expr, Outer):
        return np.outer(args[0], args[1])
    if isinstance(expr, SumOverSteps):
        return args[0]
    return _NUMPY[type(expr).__name__](*args)


@pytest.mark.parametrize("name", CELLS)
def test_the_printed_backward_computes_the_kernels_gradients(name):
    """One step (T = 1, B = 1): the rows, evaluated in order, give the generated kernels'."""
    cell = load_cell(name)
    k = codegen.load(name, backend="numpy")
    xs, state0, params, dys, dfinal = make_problem(k, T=1, B=1, I=4, H=5, seed=3)
    _, _, cache = k.forward(xs, state0, params)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal)

    env = {p: v for p, v in params.items()} | {cell.input: xs[0, 0], "_H": 5}
    env |= {prev_name(s): state0[s][0] for s in cell.states}
    derivation = derive(cell)
    for p in derivation.forward:  # the forward of the step, products as matrix @ vector
        env[p.name] = evaluate(p.expr.xreplace(_products(cell)), env)
    for m in cell.matmuls:
        env[m.name] = env[m.matrix] @ env[m.operand]
    view = bptt(cell, derivation)
    for s in view.incoming:  # the states, and an output equation (dys alone)
        incoming = (dfinal[s][0] if s in cell.states else 0) + (
            dys[0, 0] if s == cell.output else 0
        )
        env[f"d_{s}_in" if view.incoming[s] else f"d_{s}"] = incoming
    for row in view.rows:
        env[row.lhs.name] = evaluate(row.rhs, env)
    assert rel_err(env[f"d_{cell.input}"], dxs[0, 0]) < 1e-12
    for s in cell.states:
        assert rel_err(env[f"d_{prev_name(s)}"], dstate0[s][0]) < 1e-12, s
    for p in cell.params:
        assert rel_err(env[f"d_{p.name}"], dparams[p.name]) < 1e-12, p.name


def _products(cell):
    matvec = sympy.Function("matvec")
    return {
        sympy.Symbol(m.name): matvec(sympy.Symbol(m.matrix), sympy.Symbol(m.operand))
        for m in cell.matmuls
    }


_NUMPY["matvec"] = lambda matrix, vector: matrix @ vector


# pdflatex --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_pasted_and_standalone_output_compiles_without_errors_or_overfull_boxes(name, tmp_path):
    for part in ([], ["--backward"]):
        pasted = cellgen("latex", name, *part)
        pdflatex(tmp_path, minimal_document(pasted), "pasted")
        log = pdflatex(tmp_path, cellgen("latex", name, *part, "--standalone"), "standalone")
        if part and name == "lstm":
            assert pages(log) >= 2  # the backward breaks across pages


PIECEWISE = """\
from codegen.activations import hard_sigmoid, relu, softsign
from codegen.cell import Cell

cell = Cell("piecewise", description="relu, hard_sigmoid & softsign: 100% piecewise_test",
            reference="a test")
x = cell.input("x")
(h_prev,) = cell.states("h")
W_a, W_b, W_c, W_d, U_a, U_b = cell.matrices("W_a W_b W_c W_d U_a U_b")
b_a, b_b, p, q, r, s = cell.vectors("b_a b_b p q r s")
a = cell.eq("a", hard_sigmoid(W_a @ x + U_a @ h_prev + b_a), "gate")
g = cell.eq("g", relu(W_b @ x + U_b @ (a * h_prev) + b_b), "candidate")
k = cell.eq("k", softsign(W_c @ x + W_d @ x + p * h_prev + q * h_prev + r * g + s * a + b_a * g
                          + b_b * a + h_prev / (2 + a * a)), "a long one")
h = cell.update("h", a * h_prev + (1 - a) * g + k * a, "hidden state")
"""


def test_a_cell_with_indicators_and_long_rows_compiles_and_breaks_its_rows(tmp_path):
    path = tmp_path / "piecewise.py"
    path.write_text(PIECEWISE)
    for part in ([], ["--backward"]):
        pasted = cellgen("latex", "--equations", str(path), *part)
        pdflatex(tmp_path, minimal_document(pasted), "pasted")
        pdflatex(tmp_path, cellgen("latex", "--equations", str(path), *part, "--standalone"))
    forward = cellgen("latex", "--equations", str(path))
    assert r"&\quad + " in forward  # the long sum continues on a second line
    backward = cellgen("latex", "--equations", str(path), "--backward")
    assert r"\mathbb{1}_{>0}" in backward and r"\mathbb{1}_{(0,1)}" in backward


def test_floats_print_as_their_shortest_decimal():
    """ln_lstm's eps is written 1e-5: it prints as 10^{-5}, not SymPy's 1.0 \\cdot 10^{-5}."""
    assert r"\sqrt{10^{-5} + v_{x,t}}" in cellgen("latex", "ln_lstm")
    printer = CellLatexPrinter(load_cell("lstm"))
    shown = [printer.doprint(sympy.Float(v)) for v in (0.5, 2.5e-7, -1e-5, 1e20)]
    assert shown == ["0.5", r"2.5 \cdot 10^{-7}", "-10^{-5}", "10^{20}"]


def test_row_objects_are_exported_for_other_printers():
    view = bptt(load_cell("mgu"))
    assert all(isinstance(r, Row) for r in view.rows)
    assert activations.sigmoid.latex_name == r"\sigma"


def test_a_display_longer_than_a_page_breaks_across_pages(tmp_path):
    rows = tuple((f"a_{{{k}}}", (rf"\sum_{{t=1}}^{{T}} b_{{{k}}}",)) for k in range(60))
    log = pdflatex(tmp_path, minimal_document(paste([Equations(rows)])))
    assert pages(log) >= 3  # an unbreakable display would overflow one page instead
