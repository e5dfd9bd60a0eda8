"""The backends cellgen knows: one BackendConfig each, registered by name.

A backend is a printer plus templates (what `files` renders) and a loader (how `codegen.load`
runs what was rendered), with the capabilities the rest of cellgen asks about instead of its
name: the dtypes it computes in, whether it runs complex numbers (complex-step checks), whether
it needs C-contiguous arrays. The built-in backends register themselves in their folder's
config.py when codegen.backends is imported; another backend calls `register` (see README,
"Adding a backend"). Modelled on SymForce's CodegenConfig.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CellgenError

if TYPE_CHECKING:
    from ..cell import CellSpec
    from ..kernel import Kernel

Render = Callable[..., str]


class Functions(Protocol):
    """What a backend's loader returns: the kernels of one cell, arguments already checked."""

    def forward(
        self, xs: Any, state0: dict, params: dict, lengths: Any = None, reverse: bool = False
    ) -> tuple[Any, dict, dict]: ...

    def backward(self, dys: Any, cache: dict, dfinal: dict) -> tuple[Any, dict, dict]: ...

    def pack(self, params: dict, input_size: int, hidden_size: int) -> Any: ...

    def infer(
        self, xs: Any, state0: dict, packed: Any, lengths: Any = None, reverse: bool = False
    ) -> tuple[Any, dict]: ...


@dataclass(frozen=True)
class BackendConfig:
    """One backend: what it generates, how it is loaded, what it can do.

    files(kernel, render): relative path inside generated/ -> text, `render(template, **ctx)`
        filling one of the templates in folder/templates.
    load(generated_dir, spec, dtype): the cell's Functions, from the files `files` wrote under
        generated_dir; dtype is None (follow the inputs) or one of `dtypes`.
    dtypes: the real dtypes it computes in; default_dtype: the one a load without dtype fixes,
        None when the kernels follow the dtype of their inputs.
    complex_step: runs complex128 inputs too (so verify can use the complex step).
    needs_contiguous: its arrays must be C-contiguous.
    shipped: generated/ holds its files for the built-in cells; otherwise codegen.load
        generates them into the cache, as for an equation file.
    """

    name: str
    folder: Path
    files: Callable[[Kernel, Render], dict[str, str]]
    load: Callable[[Path, CellSpec, str | None], Functions]
    description: str
    title: str = ""  # its name in messages ("the C kernel needs ..."); the name by default
    dtypes: tuple[str, ...] = ("float32", "float64")
    default_dtype: str | None = None
    complex_step: bool = False
    needs_contiguous: bool = False
    shipped: bool = False

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)

    @property
    def templates(self) -> Path:
        return self.folder / "templates"

    def input_dtypes(self, dtype: str | None) -> tuple[str, ...]:
        """The dtypes a kernel loaded for `dtype` (None: the default) accepts."""
        fixed = dtype or self.default_dtype
        if fixed is not None:
            return (fixed,)
        return (*self.dtypes, "complex128") if self.complex_step else self.dtypes


class UnknownBackendError(CellgenError, ValueError):
    """A backend name that is not registered."""


_BACKENDS: dict[str, BackendConfig] = {}


def register(config: BackendConfig) -> BackendConfig:
    """Add a backend; its name must be new (unregister first to replace one)."""
    if not config.name.isidentifier():
        raise ValueError(f"backend name '{config.name}': use a Python identifier")
    if config.name in _BACKENDS or config.name == "all":
        raise ValueError(f"backend '{config.name}' is already registered")
    if config.default_dtype is not None and config.default_dtype not in config.dtypes:
        raise ValueError(
            f"backend '{config.name}': default_dtype {config.default_dtype} is not in dtypes"
        )
    _BACKENDS[config.name] = config
    return config


def unregister(name: str) -> None:
    """Remove a backend (a test's, or one to be replaced)."""
    get(name)
    del _BACKENDS[name]


def get(name: str) -> BackendConfig:
    """The backend called `name`; ValueError listing the known names otherwise."""
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(names())
        raise UnknownBackendError(f"unknown backend '{name}'; choose one of {known}") from None


def names() -> tuple[str, ...]:
    """Every registered backend's name, in registration order (the built-ins first)."""
    return tuple(_BACKENDS)


def configs() -> tuple[BackendConfig, ...]:
    """Every registered backend, in registration order."""
    return tuple(_BACKENDS.values())


def generated_file(generated: Path, relpath: str) -> Path:
    """A file a loader needs under generated_dir, or a CellgenError saying how to make it."""
    path = generated / relpath
    if not path.is_file():
        raise CellgenError(f"no generated kernel at {path}; run `cellgen generate`")
    return path
