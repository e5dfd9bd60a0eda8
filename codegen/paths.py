"""Where cellgen finds the built-in equations, writes generated code and caches C builds.

In a checkout (an editable install) codegen/ sits beside equations/ and generated/. A regular
install ships both as package data under codegen/_bundled/ (see pyproject.toml).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CacheError

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE_DIR.parent
_BUNDLED = PACKAGE_DIR / "_bundled"


def checkout_root() -> Path | None:
    """The repository root when cellgen runs from a checkout, else None."""
    if (_CHECKOUT / "equations").is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT
    return None


def builtin_equations_dir() -> Path:
    root = checkout_root()
    return root / "equations" if root else _BUNDLED / "equations"


def builtin_generated_dir() -> Path:
    root = checkout_root()
    return root / "generated" if root else _BUNDLED / "generated"


def cache_dir() -> Path:
    """C builds and kernels generated on the fly: $CELLGEN_CACHE_DIR, else the user cache."""
    if os.environ.get("CELLGEN_CACHE_DIR"):
        return Path(os.environ["CELLGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cellgen"


def cache_error(where: Path, err: OSError) -> CacheError:
    """One line for a cache that cannot be written, naming the setting that moves it."""
    reason = err.strerror or str(err)
    return CacheError(
        f"cannot write the cellgen cache at {where} ({reason}); set CELLGEN_CACHE_DIR to a "
        "writable directory"
    )
