"""The C backend: generated/c/<cell>.c and <cell>.h, freestanding C99 with float and double."""

from __future__ import annotations

from ...kernel import Kernel
from .printer import context


def files(kernel: Kernel, render) -> dict[str, str]:
    ctx = context(kernel)
    name = kernel.cell.name
    return {
        f"c/{name}.h": render("kernel.h.jinja", **ctx),
        f"c/{name}.c": render("kernel.c.jinja", **ctx),
    }
