"""The export's C plumbing for any built-in cell, not only those torch converts to: a stack of
`sru` (its output h is an equation, kept in its own buffer; I = H) and `lstmp` (states of two
sizes, output P), with a dense head, emitted from a deploy Model directly, built strictly with
gcc and run: its generated test compares the C module with cellgen's NumPy kernels (a separate
implementation), and its step with its run, bit for bit."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import codegen
from codegen.deploy import _agree, emit
from codegen.deploy.model import Dense, Layer, Model, checked, rounded
from codegen.render import write_files

STRICT = "-O2 -ffp-contract=off -Wall -Wextra -Wpedantic -Wdouble-promotion -Werror"


def _params(cell: str, I: int, H: int, dtype: str, rng, **sizes: int) -> dict[str, np.ndarray]:
    shapes = codegen.load(cell, "numpy").param_shapes(I, H, **sizes)
    return {p: rounded(0.5 * rng.normal(size=shape), dtype) for p, shape in shapes.items()}


def _model(dtype: str) -> Model:
    rng = np.random.default_rng(11)
    layers = (
        Layer("sru", _params("sru", 4, 4, dtype, rng)),
        Layer("lstmp", _params("lstmp", 4, 6, dtype, rng, P=3)),
    )
    dense = Dense(rounded(rng.normal(size=(2, 3)), dtype), rounded(rng.normal(size=2), dtype))

    def reference(xs: np.ndarray) -> np.ndarray:
        h = xs[:, None, :]
        for layer in layers:
            k = codegen.load(layer.cell, "numpy")
            state0 = {s: np.zeros((1, n)) for s, n in layer.state_sizes.items()}
            h, _ = k.infer(h, state0, layer.params)
        return h[:, 0, :] @ dense.weight.T + dense.bias

    return checked(Model(layers, dense, "sru + lstmp + dense", "cellgen numpy", reference))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_equation_output_and_declared_sizes_build_and_pass(dtype, tmp_path):
    model = _model(dtype)
    assert [layer.output_size for layer in model.layers] == [4, 3]
    assert model.layers[1].state_sizes == {"h": 3, "c": 6}
    _agree(model)
    write_files(emit.files(model, "net", dtype), tmp_path)
    header = (tmp_path / "net.h").read_text()
    ctype = "float" if dtype == "float32" else "double"
    assert f"{ctype} layer0_h[4]; /* layer 0 (sru): h, its output (H = 4) */" in header
    assert f"{ctype} layer1_h[3]; /* layer 1 (lstmp): h (P = 3) */" in header
    assert f"{ctype} layer1_c[6]; /* layer 1 (lstmp): c (H = 6) */" in header
    result = subprocess.run(
        ["make", "-C", str(tmp_path), "test", "CC=gcc", f"CFLAGS={STRICT}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
