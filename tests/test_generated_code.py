"""Properties of the generated source: no transcendental calls in the backward, strict C."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest

from codegen.activations import Activation
from codegen.paths import builtin_generated_dir
from codegen.registry import builtin_cells, load_cell

GENERATED = builtin_generated_dir()
TRANSCENDENTAL = re.compile(r"\b(exp|expf|tanh|tanhf|sigmoid\w*|np\.exp|np\.tanh|log\w*)\s*\(")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wdouble-promotion", "-Werror"]


def _python_function(source: str, name: str) -> str:
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(source, node)


def _c_function(source: str, name: str) -> str:
    start = source.index(name + "(")
    body = source.index("\n{", start)
    end = source.index("\n}\n", body)
    return source[body:end]


def _transcendental(cell: str) -> bool:
    """Whether the cell's equations call an activation that evaluates exp or tanh (indrnn's
    relu does not: its forward has nothing for the pattern to see)."""
    calls = {
        type(a).__name__ for eq in load_cell(cell).equations for a in eq.expr.atoms(Activation)
    }
    return bool(calls - {"relu", "hard_sigmoid", "softsign"})


@pytest.mark.parametrize("cell", builtin_cells())
def test_backward_kernels_evaluate_no_exp_tanh_or_sigmoid(cell):
    numpy_src = (GENERATED / "numpy" / f"{cell}.py").read_text()
    forward = _python_function(numpy_src, "_forward")  # the kernel; forward() adds lengths
    backward = _python_function(numpy_src, "_backward")
    seen = _transcendental(cell)
    assert bool(TRANSCENDENTAL.search(forward)) == seen, "the pattern must see the activations"
    assert not TRANSCENDENTAL.search(backward), TRANSCENDENTAL.search(backward)
    c_src = (GENERATED / "c" / f"{cell}.c").read_text()
    for suffix in ("f64", "f32"):
        forward_c = _c_function(c_src, f"cellgen_{cell}_forward_{suffix}")
        assert bool(TRANSCENDENTAL.search(forward_c)) == seen
        found = TRANSCENDENTAL.search(_c_function(c_src, f"cellgen_{cell}_backward_{suffix}"))
        assert not found, found


@pytest.mark.parametrize("cell", builtin_cells())
def test_float_entry_points_stay_in_float(cell):
    c_src = (GENERATED / "c" / f"{cell}.c").read_text()
    float_part = c_src[c_src.index("/* ---- float ---- */") :]
    float_part = re.sub(r"/\*.*?\*/", "", float_part, flags=re.S)  # code, not comments
    assert not re.search(r"\b(exp|tanh|fabs)\(", float_part), "double math in the float code"
    assert not re.search(r"(?<![\w.])\d+\.\d*(?![\dFfe])", float_part), "a double literal"
    assert "double" not in float_part


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
@pytest.mark.parametrize("cell", builtin_cells())
def test_c_compiles_without_warnings(cell, compiler, tmp_path):
    assert shutil.which(compiler), f"{compiler} is required (.ci/run installs it)"
    result = subprocess.run(
        [compiler, *STRICT, "-O2", "-c", str(GENERATED / "c" / f"{cell}.c"),
         "-o", str(tmp_path / f"{cell}.o")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("cell", builtin_cells())
def test_c_header_compiles_alone_and_declares_the_entry_points(cell, tmp_path):
    probe = tmp_path / "probe.c"
    probe.write_text(f'#include "{cell}.h"\nint main(void) {{ return 0; }}\n')
    result = subprocess.run(
        ["cc", *STRICT, "-I", str(GENERATED / "c"), "-c", str(probe), "-o", str(tmp_path / "p.o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    header = (GENERATED / "c" / f"{cell}.h").read_text()
    for name in ("saved_size", "work_size", "forward_f64", "forward_f32", "backward_f64",
                 "backward_f32"):  # fmt: skip
        assert f"cellgen_{cell}_{name}(" in header
    assert "malloc" not in (GENERATED / "c" / f"{cell}.c").read_text()
