"""The files of an exported model: the text of each, rendered from the templates beside this
module, with the weights packed by each cell's own generated C (its packed layout is the
kernels' business, never read here)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, backends
from .literals import C_TYPE, SUFFIX, c_numbers
from .model import Layer, Model, rounded

TEMPLATES = Path(__file__).resolve().parent / "templates"
TOLERANCE = {"float32": "1e-5", "float64": "1e-12"}  # relative to the largest output
# the golden sequences of the generated test: label, length, scale of the normal inputs
GOLDEN = (("short", 4, 1.0), ("long", 256, 1.0), ("saturating", 32, 8.0))
PER_LINE = {"float32": 6, "float64": 4}  # numbers a line of an array initializer
SEED = 20261201  # fixed: exporting the same model twice gives the same files


def files(model: Model, name: str, dtype: str) -> dict[str, str]:
    """File name -> text of everything export writes into its folder."""
    kernels = {layer.cell: _kernel(layer.cell) for layer in model.layers}
    layers: list[dict[str, Any]] = []
    for k, layer in enumerate(model.layers):
        below = "x" if k == 0 else f"s->layer{k - 1}_{kernels[model.layers[k - 1].cell]['output']}"
        layers.append(_layer(k, layer, kernels[layer.cell], below, dtype))
    size = np.dtype(dtype).itemsize
    work = max(layer["work"] for layer in layers)
    dense = None
    if model.dense is not None:
        O, H = model.dense.weight.shape
        dense = {
            "O": O,
            "H": H,
            "weight": c_numbers(rounded(model.dense.weight, dtype), dtype, PER_LINE[dtype]),
            "bias": c_numbers(rounded(model.dense.bias, dtype), dtype, PER_LINE[dtype]),
        }
    top = layers[-1]
    context: dict[str, Any] = {
        "name": name,
        "guard": f"{name.upper()}_H",
        "version": __version__,
        "source": model.source,
        "reference": model.framework,
        "dtype": dtype,
        "ctype": C_TYPE[dtype],
        "suffix": SUFFIX[dtype],
        "input_size": model.input_size,
        "output_size": model.output_size,
        "cells": list(kernels),
        "layers": layers,
        "dense": dense,
        "top": f"{top['prefix']}{kernels[model.layers[-1].cell]['output']}",
        "work_size": work,
        "tolerance": TOLERANCE[dtype],
        "weights_bytes": size
        * (
            sum(layer["packed_size"] for layer in layers)
            + (dense["O"] * (dense["H"] + 1) if dense else 0)
        ),
        "state_bytes": size * (sum(len(x["states"]) * x["H"] for x in layers) + work),
        "work_bytes": size * work,
        **_golden(model, dtype),
    }
    out = {
        f"{name}.h": _render("model.h.jinja", context),
        f"{name}.c": _render("model.c.jinja", context),
        f"{name}_test.c": _render("test.c.jinja", context),
        "Makefile": _render("Makefile.jinja", context),
        "CMakeLists.txt": _render("CMakeLists.txt.jinja", context),
        "README.md": _render("README.md.jinja", context),
    }
    for cell, kernel in kernels.items():
        out[f"{cell}.c"], out[f"{cell}.h"] = kernel["c"], kernel["h"]
    return out


def _kernel(cell: str) -> dict[str, Any]:
    """The generated C of a cell (the very files codegen.load compiles) and its library."""
    from ..backends.c.build import build, open_library
    from ..load import generated_dir_for

    generated, spec = generated_dir_for(cell, backends.get("c"))
    c_file = generated / "c" / f"{cell}.c"
    library = open_library(build(c_file))
    work_size = getattr(library, f"cellgen_{cell}_infer_work_size")
    work_size.argtypes, work_size.restype = [ctypes.c_size_t] * 3, ctypes.c_size_t
    return {
        "c": c_file.read_text(encoding="utf-8"),
        "h": c_file.with_suffix(".h").read_text(encoding="utf-8"),
        "work_size": work_size,
        "states": list(spec.states),
        "output": spec.output,
    }


def _layer(k: int, layer: Layer, kernel: dict[str, Any], below: str, dtype: str) -> dict[str, Any]:
    """What the templates need of one layer; `below` is the C expression of its input."""
    import codegen

    params = {p: v.astype(dtype) for p, v in layer.params.items()}
    packed = codegen.load(layer.cell, "c", dtype).pack(params).data
    I, H = layer.input_size, layer.hidden_size
    prefix = f"layer{k}_"
    return {
        "index": k,
        "cell": layer.cell,
        "I": I,
        "H": H,
        "prefix": prefix,
        "states": kernel["states"],
        "input": below,
        "state_args": ", ".join(f"s->{prefix}{state}" for state in kernel["states"]),
        "packed": c_numbers(packed, dtype, PER_LINE[dtype]),
        "packed_size": packed.size,
        "work": max(int(kernel["work_size"](1, I, H)), 1),
    }


def _golden(model: Model, dtype: str) -> dict[str, Any]:
    """Inputs of the generated test and the framework's outputs for them."""
    rng = np.random.default_rng(SEED)
    golden, inputs, expected = [], [], []
    for label, T, scale in GOLDEN:
        xs = rounded(scale * rng.normal(size=(T, model.input_size)), dtype)
        ys = model.reference(xs)
        golden.append({"label": label, "T": T})
        inputs.append(xs)
        expected.append(ys)
    xs_all, ys_all = np.concatenate(inputs), np.concatenate(expected)
    return {
        "golden": golden,
        "max_T": max(T for _, T, _ in GOLDEN),
        "inputs": c_numbers(xs_all, dtype, PER_LINE[dtype]),
        "inputs_size": xs_all.size,
        "expected": c_numbers(ys_all, "float64", PER_LINE["float64"]),
        "expected_size": ys_all.size,
    }


def _render(template: str, context: dict[str, Any]) -> str:
    from ..render import renderer  # Jinja with StrictUndefined, as for the kernels

    return renderer(TEMPLATES.parent, "deploy")(template, **context)
