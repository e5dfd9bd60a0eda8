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
        below = "x" if k == 0 else f"s->{layers[-1]['prefix']}{layers[-1]['output']}"
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
        "top": f"{top['prefix']}{top['output']}",
        "work_size": work,
        "tolerance": TOLERANCE[dtype],
        "weights_bytes": size
        * (
            sum(layer["packed_size"] for layer in layers)
            + (dense["O"] * (dense["H"] + 1) if dense else 0)
        ),
        "state_bytes": size * (sum(b["size"] for x in layers for b in x["buffers"]) + work),
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
    work_size.argtypes = [ctypes.c_size_t] * (1 + len(spec.all_sizes))  # B, I, H, declared
    work_size.restype = ctypes.c_size_t
    return {
        "c": c_file.read_text(encoding="utf-8"),
        "h": c_file.with_suffix(".h").read_text(encoding="utf-8"),
        "work_size": work_size,
    }


def _layer(k: int, layer: Layer, kernel: dict[str, Any], below: str, dtype: str) -> dict[str, Any]:
    """What the templates need of one layer; `below` is the C expression of its input."""
    import codegen

    params = {p: v.astype(dtype) for p, v in layer.params.items()}
    packed = codegen.load(layer.cell, "c", dtype).pack(params).data
    sizes = layer.sizes
    prefix = f"layer{k}_"
    states = layer.state_sizes
    # the state struct's arrays of the layer: its states, then its output if an equation
    named = dict(layer.spec.symbol_sizes)
    buffers = [
        {"name": state, "size": n, "note": f"{state} ({named[state]} = {n})"}
        for state, n in states.items()
    ]
    if not layer.output_is_state:
        note = f"{layer.output}, its output ({named[layer.output]} = {layer.output_size})"
        buffers.append({"name": layer.output, "size": layer.output_size, "note": note})
    return {
        "index": k,
        "cell": layer.cell,
        "I": sizes["I"],
        "H": sizes["H"],
        "sizes": ", ".join(str(n) for n in sizes.values()),  # the C size arguments: I, H, P...
        "title": layer.spec.description,
        "described": _described(layer),
        "prefix": prefix,
        "buffers": buffers,
        "output": layer.output,
        "output_size": layer.output_size,
        "ys": "NULL" if layer.output_is_state else f"s->{prefix}{layer.output}",
        "input": below,
        "state_args": ", ".join(f"s->{prefix}{state}" for state in states),
        "packed": c_numbers(packed, dtype, PER_LINE[dtype]),
        "packed_size": packed.size,
        "work": max(int(kernel["work_size"](1, *sizes.values())), 1),
    }


def _described(layer: Layer) -> str:
    """'input 3, hidden 8, P = 4; output h (P = 4); states h (P = 4), c (H = 8)': a layer's
    sizes, for the comments (the states and output named when any is not H-sized)."""
    sizes, named = layer.sizes, dict(layer.spec.symbol_sizes)
    text = f"input {sizes['I']}, hidden {sizes['H']}"
    text += "".join(f", {n} = {v}" for n, v in layer.extra_sizes.items())
    if layer.extra_sizes or not layer.output_is_state:
        states = ", ".join(f"{s} ({named[s]} = {n})" for s, n in layer.state_sizes.items())
        output = f"{layer.output} ({named[layer.output]} = {layer.output_size})"
        text += f"; output {output}; states {states}"
    return text


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
