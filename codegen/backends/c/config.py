"""The C backend's registration: generated/c/<cell>.c and .h, compiled and called by ctypes."""

from __future__ import annotations

from pathlib import Path

from ..registry import BackendConfig, generated_file, register

FOLDER = Path(__file__).resolve().parent


def files(kernel, render) -> dict[str, str]:
    """generated/c/<cell>.h and <cell>.c: freestanding C99, float and double."""
    from .printer import context  # the printers load only when something is generated

    ctx = context(kernel)
    name = kernel.cell.name
    return {
        f"c/{name}.h": render("kernel.h.jinja", **ctx),
        f"c/{name}.c": render("kernel.c.jinja", **ctx),
    }


def load(generated: Path, spec, dtype: str | None):
    """The compiled C (built once, cached) for one dtype, behind forward() and backward()."""
    from .ffi import CFunctions

    params = tuple(p.name for p in spec.params)
    c_file = generated_file(generated, f"c/{spec.name}.c")
    return CFunctions(c_file, spec.name, spec.states, spec.output, params, dtype or "float64", spec)


CONFIG = register(
    BackendConfig(
        name="c",
        folder=FOLDER,
        files=files,
        load=load,
        title="C",
        description="C99 compiled with $CC or cc, called through ctypes; float64 or float32",
        default_dtype="float64",
        needs_contiguous=True,
        shipped=True,
    )
)
