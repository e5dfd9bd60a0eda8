"""cellgen export: a trained recurrent model as a standalone C99 module (weights baked in as
`static const` arrays, a caller-owned state, reset / step / run) with a generated test against
the framework's own outputs, a Makefile and a CMakeLists.txt.

    codegen.export(torch.nn.LSTM(3, 16, num_layers=2), "out", name="model")
    codegen.export([lstm, torch.nn.Linear(16, 2)], "out")
    codegen.export(torch.nn.LSTM(3, 16, proj_size=4), "out")  # lstmp layers: h (4), c (16)
    codegen.export("model.onnx", "out", dtype="float64")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CellgenError
from ..interop import InteropError
from .model import Model

DTYPES = ("float32", "float64")


class ExportError(CellgenError, ValueError):
    """An export request that cannot be carried out as given (name, dtype, folder)."""


AGREE = 1e-9  # the framework and cellgen's float64 kernels on the same weights, relative
RESERVED = ("all", "clean", "help", "install", "package", "test")  # make and CMake targets


def export(
    model: Any, out_dir: str | Path, name: str = "model", dtype: str = "float32"
) -> list[Path]:
    """Write the C module of `model` into out_dir; returns the files written (all of them).

    `model`: a torch.nn.LSTM / GRU (any num_layers, one direction; an LSTM with proj_size = P
    runs as the `lstmp` cell, its layers giving P numbers) or LSTMCell / GRUCell; a list
    of such layers optionally ending with one torch.nn.Linear; or the path of an ONNX file whose
    graph is a chain of LSTM / GRU nodes optionally followed by a dense layer. Anything else
    raises InteropError (a ValueError) naming what is unsupported, and nothing is written.
    """
    from ..render import write_files
    from . import emit

    if dtype not in DTYPES:
        raise ExportError(f"dtype '{dtype}': choose float32 or float64")
    converted = _convert(model, dtype)
    _check_name(name, [layer.cell for layer in converted.layers])
    _agree(converted)
    files = emit.files(converted, name, dtype)  # everything in memory first: errors write nothing
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; give another --out")
    write_files(files, out)
    paths = [out / rel for rel in sorted(files)]
    for path in paths:
        path.chmod(0o644)  # the atomic writes create private files; these are for sharing
    return paths


def _convert(model: Any, dtype: str) -> Model:
    from .from_torch import from_torch, is_torch_model

    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise InteropError(f"no ONNX file at {model}")
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ExportError(
                "exporting an ONNX file needs the onnx package: pip install onnx"
            ) from None
        from .from_onnx import from_onnx

        return from_onnx(model, dtype)
    if is_torch_model(model):
        return from_torch(model, dtype)
    raise InteropError(
        f"cannot export a {type(model).__name__}: give a torch.nn.LSTM / GRU / LSTMCell / "
        "GRUCell, a list of them ending with an optional torch.nn.Linear, or an ONNX file's path"
    )


def _check_name(name: str, cells: list[str]) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
        raise ExportError(
            f"name {name!r}: use a C identifier of letters, digits and _ that starts with a "
            "letter (it prefixes every C name and file)"
        )
    if name in RESERVED or name in cells:
        raise ExportError(
            f"name '{name}' is taken (by a build target or a kernel file); choose another"
        )


def _agree(model: Model) -> None:
    """The framework's function and cellgen's float64 kernels on the converted weights must
    agree on a random sequence: a conversion that misreads the model stops here."""
    import codegen

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(7, model.input_size))
    h = xs[:, None, :]
    for layer in model.layers:
        k = codegen.load(layer.cell, "numpy")
        state0 = {s: np.zeros((1, n)) for s, n in layer.state_sizes.items()}
        h, _ = k.infer(h, state0, k.pack(layer.params))
    ys = h[:, 0, :]
    if model.dense is not None:
        ys = ys @ model.dense.weight.T + model.dense.bias
    want = model.reference(xs)
    error = float(np.max(np.abs(ys - want), initial=0.0)) if ys.shape == want.shape else np.inf
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    if not error <= AGREE * scale:
        raise InteropError(
            f"{model.source}: the converted layers do not compute the model's function (max "
            f"difference {error:.3g} for outputs up to {scale:.3g}); the model has operations "
            "export cannot follow"
        )
