"""The NumPy backend's registration: generated/numpy/<cell>.py, imported as a module."""

from __future__ import annotations

from pathlib import Path

from ..registry import BackendConfig, register

FOLDER = Path(__file__).resolve().parent


def files(kernel, render) -> dict[str, str]:
    """generated/numpy/<cell>.py: one module with forward() and backward()."""
    from .printer import context  # the printers load only when something is generated

    return {f"numpy/{kernel.cell.name}.py": render("kernel.py.jinja", **context(kernel))}


def load(generated: Path, spec, dtype: str | None):
    """The generated module's functions, with work arrays of their own (see functions.py)."""
    from ...load import import_generated
    from .functions import NumpyFunctions

    return NumpyFunctions(import_generated(generated / "numpy" / f"{spec.name}.py"))


CONFIG = register(
    BackendConfig(
        name="numpy",
        folder=FOLDER,
        files=files,
        load=load,
        title="NumPy",
        description="NumPy, one module per cell; follows the dtype of its inputs",
        complex_step=True,
        shipped=True,
    )
)
