"""Compile generated C into a shared library, cached by a hash of source, compiler, flags, CPU.

Beside each library `<name>.so` the cache keeps `<name>.so.sha256`, the SHA-256 of the bytes the
compiler wrote. A library is loaded only when its bytes still have that hash: a truncated or
corrupt file (a full disk, a copy cut short, a bad sector) would crash the interpreter inside
dlopen ("Bus error"), so it is rebuilt instead and the cache heals itself.
"""

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
from ...paths import cache_dir, cache_error

# Strict ISO C99, optimised, and never -ffast-math: results must not depend on the optimiser.
# -ffp-contract=off keeps a*b + c two roundings under every compiler (clang would otherwise
# fuse it into an FMA where -march=native offers one), so that vectorised and scalar code, and
# every CPU, give the same numbers. -fno-trapping-math: no code reads the floating-point
# exception flags, so the compiler may compute both sides of a select without masking them (the
# branch-free activations vectorise to shorter code); it changes no result.
FLAGS = ("-std=c99", "-O3", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared")
WARNINGS = ("-Wall", "-Wextra", "-Wpedantic", "-Wdouble-promotion", "-Werror")


def compiler() -> str:
    """$CC, else cc."""
    return os.environ.get("CC") or "cc"


NO_COMPILER_HINT = "set $CC to a working C compiler (gcc, clang), or use --backend numpy"


@functools.cache
def compiler_identity(cc: str) -> str:
    """The compiler's version banner: part of the cache key. Checks that the compiler runs."""
    words = shlex.split(cc)
    if not words or shutil.which(words[0]) is None:
        raise CompileError(f"no C compiler '{cc}' found; {NO_COMPILER_HINT}")
    try:
        result = subprocess.run([*words, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CompileError(
            f"cannot run the C compiler '{cc}' ({err}); {NO_COMPILER_HINT}"
        ) from None
    banner = result.stdout.strip()
    if result.returncode != 0 or not banner:
        raise CompileError(
            f"'{cc} --version' exited with status {result.returncode} and printed "
            f"{'no version' if not banner else _first_line(banner)}: it is not a working C "
            f"compiler; {NO_COMPILER_HINT}"
        )
    return banner


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


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
    if intact(library):
        return library
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            _compile(cc, flags, c_file, Path(tmp), library)
    except OSError as err:
        raise cache_error(out_dir, err) from None
    return library


def _compile(cc: str, flags: tuple[str, ...], c_file: Path, work: Path, library: Path) -> None:
    """Compile a copy of c_file in `work`, then move the library and its hash into the cache."""
    # compile a copy so the cache entry matches exactly the source that was hashed
    shutil.copy(c_file, work / c_file.name)
    shutil.copy(c_file.with_suffix(".h"), work / c_file.with_suffix(".h").name)
    target = work / library.name
    cmd = [*shlex.split(cc), *flags, "-o", str(target), str(work / c_file.name), "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not target.is_file():
        said = result.stderr.strip() or result.stdout.strip()
        if not said:  # a compiler that fails silently (CC=false) is not a working compiler
            raise CompileError(
                f"compiling {c_file.name} with '{cc}' failed with exit status "
                f"{result.returncode} and no message; {NO_COMPILER_HINT}"
            )
        raise CompileError(f"compiling {c_file.name} failed ({' '.join(cmd)}):\n{said}")
    digest = work / (library.name + ".sha256")
    digest.write_text(_sha256(target) + "\n", encoding="ascii")
    # the hash first: a library is trusted only when it matches, so a crash between the two
    # renames leaves a library that is rebuilt, never one that is loaded unchecked
    os.replace(digest, _hash_file(library))
    os.replace(target, library)


def _hash_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def intact(library: Path) -> bool:
    """True when the library exists and its bytes have the hash recorded when it was built."""
    try:
        recorded = _hash_file(library).read_text(encoding="ascii").strip()
        return library.is_file() and _sha256(library) == recorded
    except (OSError, UnicodeDecodeError):
        return False


def open_library(library: Path) -> ctypes.CDLL:
    """Load a library that build() returned; one that still fails to load is removed, so that
    the next build() compiles it again."""
    try:
        return ctypes.CDLL(str(library))
    except OSError as err:
        _hash_file(library).unlink(missing_ok=True)
        raise CompileError(
            f"the cached library {library} cannot be loaded ({err}); it has been marked for "
            "rebuilding: run the command again"
        ) from None
