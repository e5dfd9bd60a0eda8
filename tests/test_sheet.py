"""`cellgen sheet`: the derivation sheet in HTML (rendered by headless Chromium), Markdown, LaTeX
and PDF, the cell diagram, and `codegen.cell_info` for notebooks.

Chromium and pdflatex are real renderers that CI installs (.ci/run); a test that needs one fails,
not skips, when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib

import pytest

import codegen
from codegen.activations import Activation
from codegen.reductions import Reduction
from codegen.registry import builtin_cells, load_cell
from codegen.sheet import build, markdown

CELLS = builtin_cells()
SVG = "{http://www.w3.org/2000/svg}"

MEASURE = """
<script>
(() => {
  const box = (e) => { const r = e.getBoundingClientRect();
                       return [r.left, r.top, r.width, r.height]; };
  const maths = [...document.querySelectorAll("math")].map(box);
  const subs = [...document.querySelectorAll("msub")].map(
      (e) => [box(e.children[0]), box(e.children[1])]);
  const sums = [...document.querySelectorAll("munderover")].map(
      (e) => [box(e.children[0]), box(e.children[1])]);
  const svg = document.querySelector("svg.diagram");
  const shapes = [...svg.querySelectorAll("rect, ellipse")].map(box);
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify({maths, subs, sums, svg: box(svg), shapes});
  document.body.appendChild(pre);
})();
</script>
"""


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    command = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", "--force-device-scale-factor=1", "--hide-scrollbars",
        *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def read_png(path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    step = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * step, [], bytearray(width * step)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b, c = prev[i], prev[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r) for r in rows], step


def cellgen(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "codegen", *args], capture_output=True, text=True, env=env
    )


# HTML in a real browser ------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_the_html_sheet_renders_its_math_and_its_diagram_in_chromium(name, tmp_path):
    page = tmp_path / f"{name}.html"
    result = cellgen("sheet", name, "-o", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # self-contained: no script, nothing fetched
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", MEASURE + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri(), tmp_path=tmp_path).stdout
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, dom[-1000:]
    m = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))

    assert len(m["maths"]) > 20
    assert all(w > 0 and h > 0 for _, _, w, h in m["maths"])  # every formula laid out
    # laid out as MathML: subscripts sit lower than their base, limits under the Σ
    lower = [sub[1] + sub[3] > base[1] + base[3] for base, sub in m["subs"]]
    assert len(lower) > 20 and all(lower)
    assert m["sums"] and all(under[1] > big[1] for big, under in m["sums"])
    x, y, w, h = m["svg"]
    assert w > 300 and h > 150
    drawn = html.count("<rect") + html.count("<ellipse")  # indrnn's diagram has one box
    assert drawn >= 1 and len(m["shapes"]) == drawn
    assert all(sw > 20 and sh > 20 for _, _, sw, sh in m["shapes"])

    shot = tmp_path / "shot.png"
    size = f"--window-size={int(x + w) + 40},{int(y + h) + 40}"
    chromium(f"--screenshot={shot}", size, page.as_uri(), tmp_path=tmp_path)
    width, height, rows, step = read_png(shot)
    gate, op = (255, 229, 153), (244, 204, 204)  # the fills of gate boxes and operations
    region = [
        tuple(rows[j][i * step : i * step + 3])
        for j in range(int(y), min(int(y + h), height))
        for i in range(int(x), min(int(x + w), width), 2)
    ]
    assert region.count(gate) > 500  # every diagram has a gate box
    assert (region.count(op) > 200) == ("<ellipse" in html)  # and its operations, if any
    ink = sum(1 for p in region if max(p) < 120)  # lines, arrows and labels
    assert ink > 500


# Markdown, LaTeX, PDF ----------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_the_markdown_sheet_is_math_blocks_and_text_with_the_diagram_beside_it(name, tmp_path):
    out = tmp_path / f"{name}.md"
    result = cellgen("sheet", name, "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert not re.search(r"</?[a-zA-Z][^>]*>", text), "GitHub strips HTML"
    assert text.count("$$") % 2 == 0 and text.count("$$") >= 8
    assert f"![{name}: one step]({name}.svg)" in text
    svg = ET.fromstring((tmp_path / f"{name}.svg").read_text())
    gates = [e for e in svg.iter(f"{SVG}rect")]
    cell = load_cell(name)
    # a gate box: an equation that is an activation of a compound argument (indrnn's h too)
    boxed = [e for e in cell.equations if isinstance(e.expr, Activation) and not e.auto]
    reductions = [e for e in cell.equations if isinstance(e.expr, Reduction)]  # a box each
    assert len(gates) == sum(1 for e in boxed if not e.expr.args[0].is_Symbol) + len(reductions)


@pytest.mark.parametrize(("name", "suffix"), [(c, ".tex") for c in CELLS] + [("lstm", ".pdf")])
def test_the_latex_and_pdf_sheets_compile(name, suffix, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.fail("pdflatex is not installed: .ci/run installs texlive-latex-base")
    out = tmp_path / f"{name}{suffix}"
    result = cellgen("sheet", name, "-o", str(out))
    assert result.returncode == 0, result.stderr
    if suffix == ".pdf":
        assert out.read_bytes()[:5] == b"%PDF-"
        return
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", out.name],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log = (tmp_path / f"{name}.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    assert not re.findall(r"^(Overfull .*|Underfull .*|LaTeX Warning: .*)$", log, re.M)
    assert r"\begin{picture}" in out.read_text()


def test_a_pdf_without_pdflatex_is_one_clear_line(tmp_path):
    result = cellgen("sheet", "gru", "-o", str(tmp_path / "gru.pdf"), env={"PATH": "/nowhere"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "pdflatex" in result.stderr
    assert not (tmp_path / "gru.pdf").exists()


def test_an_unknown_format_is_one_clear_line(tmp_path):
    result = cellgen("sheet", "gru", "-o", str(tmp_path / "gru.docx"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ".html, .md, .tex, .pdf" in result.stderr


MUT3 = """\
from codegen.activations import relu, sigmoid, tanh
from codegen.cell import Cell

cell = Cell("mut3", description="MUT3", reference="Jozefowicz et al. 2015")
x = cell.input("x")
(h_prev,) = cell.states("h")
W_z, W_r, W_h = cell.matrices("W_z W_r W_h")
U_z, U_r, U_h = cell.matrices("U_z U_r U_h")
b_z, b_r, b_h = cell.vectors("b_z b_r b_h")
z = cell.eq("z", sigmoid(W_z @ x + U_z @ tanh(h_prev) + b_z), "update gate")
r = cell.eq("r", relu(W_r @ x + U_r @ h_prev + b_r), "reset gate")
h_hat = cell.eq("h_hat", tanh(W_h @ x + U_h @ (r * h_prev) + b_h), "candidate")
h = cell.update("h", z * h_hat + (1 - z) * h_prev, "hidden state")
"""


def test_a_users_cell_gets_a_sheet_and_a_diagram_of_its_own(tmp_path):
    path = tmp_path / "mut3.py"
    path.write_text(MUT3)
    out = tmp_path / "mut3.md"
    result = cellgen("sheet", "--equations", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    svg = ET.fromstring((tmp_path / "mut3.svg").read_text())
    texts = ["".join(t.itertext()) for t in svg.iter(f"{SVG}text")]
    assert len(list(svg.iter(f"{SVG}rect"))) == 3  # the three gates
    assert {"σ", "relu", "tanh", "1−", "×", "+"} <= set(texts)  # tanh(h_prev): a circle
    assert any(t.startswith("h\u0302") for t in texts)  # ĥ, the candidate's label
    assert r"\operatorname{relu}" in out.read_text()


# Jupyter ---------------------------------------------------------------------------------


def test_cell_info_shows_itself_as_latex_and_as_html():
    info = codegen.cell_info("lstm")
    latex = info._repr_latex_()
    assert latex.startswith("$$") and latex.rstrip().endswith("$$")
    assert r"c_{t} &= f_{t} \odot c_{t-1} + i_{t} \odot \tilde{c}_{t}" in latex
    html = info._repr_html_()
    assert html.count("<math") == 1 and "<svg" in html and "<mtable>" in html
    assert r"\delta a_{f,t}" in info.latex(backward=True)


def test_mathml_draws_a_square_root_as_a_radical():
    """ln_lstm's s = sqrt(eps + v): a radical over both terms, not the word sqrt beside them."""
    html = codegen.cell_info("ln_lstm")._repr_html_()
    assert "<msqrt><mrow><msup><mn>10</mn>" in html and "<mi>sqrt</mi>" not in html


def test_sheet_pieces_are_built_from_the_cell():
    sheet = build(load_cell("gru"))
    assert [p[0] for p in sheet.params][:2] == ["W_{z}", "W_{r}"]
    assert ("U_{h}", r"H \times H", r"\hat{h}_{t}") in sheet.params
    assert r"\hat{h}_{t}" in sheet.saved and "r_{t} \\odot h_{t-1}" in " ".join(sheet.saved)
    assert "## Backward" in markdown(sheet, None)


def test_a_loaded_kernel_shows_its_cells_equations_in_a_notebook():
    k = codegen.load("gru", "numpy")
    assert k._repr_latex_() == codegen.cell_info("gru")._repr_latex_()
    assert r"\hat{h}_{t}" in k._repr_latex_() and "<svg" in k._repr_html_()
