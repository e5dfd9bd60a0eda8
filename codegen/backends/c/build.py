"""Compile generated C into a shared library, cached by a hash of source, compiler and flags."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import CompileError
from ...paths import cache_dir

# Strict ISO C99 (which also keeps the compiler from contracting a*b+c into an FMA), optimised,
# and never -ffast-math: results must not depend on the optimiser.
FLAGS = ("-std=c99", "-O3", "-fPIC", "-shared")
WARNINGS = ("-Wall", "-Wextra", "-Wpedantic", "-Wdouble-promotion", "-Werror")


def compiler() -> str:
    """$CC, else cc."""
    return os.environ.get("CC") or "cc"


@functools.cache
def compiler_identity(cc: str) -> str:
    """The compiler's version banner: part of the cache key."""
    exe = shlex.split(cc)[0]
    if shutil.which(exe) is None:
        raise CompileError(f"no C compiler '{exe}' found; install one or set $CC")
    try:
        result = subprocess.run(
            [*shlex.split(cc), "--version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CompileError(f"cannot run the C compiler '{cc}': {err}") from None
    return result.stdout.strip()


def build(c_file: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    """The shared library of one generated .c file (with its .h beside it), built once."""
    cc = compiler()
    flags = (*FLAGS, *WARNINGS, *extra_flags)
    source = c_file.read_bytes() + c_file.with_suffix(".h").read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, compiler_identity(cc).encode(), " ".join(flags).encode()])
    ).hexdigest()[:24]
    out_dir = cache_dir() / "c"
    library = out_dir / f"{c_file.stem}-{key}.so"
    if library.is_file():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        # compile a copy so the cache entry matches exactly the source that was hashed
        work = Path(tmp)
        shutil.copy(c_file, work / c_file.name)
        shutil.copy(c_file.with_suffix(".h"), work / c_file.with_suffix(".h").name)
        target = work / library.name
        cmd = [*shlex.split(cc), *flags, "-o", str(target), str(work / c_file.name), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise CompileError(
                f"compiling {c_file.name} failed ({' '.join(cmd)}):\n{result.stderr.strip()}"
            )
        os.replace(target, library)
    return library


def open_library(library: Path) -> ctypes.CDLL:
    return ctypes.CDLL(str(library))
