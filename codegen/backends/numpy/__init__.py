"""The NumPy backend: generated/numpy/<cell>.py, one module with forward() and backward()."""

from __future__ import annotations

from ...kernel import Kernel
from .printer import context


def files(kernel: Kernel, render) -> dict[str, str]:
    return {f"numpy/{kernel.cell.name}.py": render("kernel.py.jinja", **context(kernel))}
