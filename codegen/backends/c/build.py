"""Compile generated C into a shared library, cached by a hash of source, compiler, flags, CPU."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import CompileError
from ...paths import cache_dir

# Strict ISO C99, optimised, and never -ffast-math: results must not depend on the optimiser.
# -ffp-contract=off keeps a*b + c two roundings under every compiler (clang would otherwise
# fuse it into an FMA where -march=native offers one), so that vectorised and scalar code, and
# every CPU, give the same numbers.
FLAGS = ("-std=c99", "-O3", "-ffp-contract=off", "-fPIC", "-shared")
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


def tuning_flags(cc: str) -> tuple[str, ...]:
    """Flags that make the generated loops fast on this machine, without changing results.

    -march=native lets the pointwise loops use the CPU's widest vectors (x86-64 only, where
    every compiler accepts it). The pointwise loops read and write many buffers; the compiler
    vectorises them after checking at run time that they do not overlap, and by default gives
    up when more than a few such checks are needed.
    """
    flags: list[str] = []
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags.append("-march=native")
    banner = compiler_identity(cc).lower()
    if "clang" in banner:
        flags += ["-mllvm", "-runtime-memory-check-threshold=1000"]
    elif "gcc" in banner or "free software foundation" in banner:
        flags.append("--param=vect-max-version-for-alias-checks=1000")
    return tuple(flags)


@functools.cache
def machine_identity() -> str:
    """The CPU the library is built for (-march=native): part of the cache key, so that a cached
    library is never loaded on a different CPU."""
    parts = [platform.machine(), platform.processor()]
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith(("model name", "flags", "Features", "CPU part")):
            parts.append(line)
            if len(parts) > 4:
                break
    return "\n".join(parts)


def build(c_file: Path) -> Path:
    """The shared library of one generated .c file (with its .h beside it), built once."""
    cc = compiler()
    flags = (*FLAGS, *tuning_flags(cc), *WARNINGS)
    source = c_file.read_bytes() + c_file.with_suffix(".h").read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                compiler_identity(cc).encode(),
                " ".join(flags).encode(),
                machine_identity().encode(),
            ]
        )
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
