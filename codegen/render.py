"""From a cell to the text of its generated files, and writing them safely.

Each registered backend (codegen.backends) contributes `files(kernel, render)`, a mapping from
a path inside generated/ to text; `render` fills one of that backend's Jinja templates. Files
are written only after every cell generated without error, and as one set (see
`write_files`): a failure, a Ctrl-C or a kill never leaves some files new and others old.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jinja2

from . import backends
from .backends import BackendConfig
from .errors import CellgenError, TemplateError, WriteError
from .kernel import Kernel, build_kernel
from .paths import cache_dir, cache_error
from .registry import load_cell

Render = Callable[..., str]


def _environment(templates: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@functools.cache
def renderer(backend_dir: Path, backend: str) -> Render:
    """Fills one backend's templates; built once per process, so each template compiles once."""
    env = _environment(backend_dir / "templates")

    def render(template: str, **context: object) -> str:
        try:
            return env.get_template(template).render(
                template=f"{backend}/templates/{template}", **context
            )
        except jinja2.TemplateError as err:
            raise TemplateError(f"template {backend}/{template} failed: {err}") from err

    return render


def kernel_files(kernel: Kernel, configs: Iterable[BackendConfig] | None = None) -> dict[str, str]:
    """The generated files of one cell, for every registered backend (or for `configs`):
    relative path -> text."""
    out: dict[str, str] = {}
    for config in backends.configs() if configs is None else configs:
        out.update(config.files(kernel, renderer(config.folder, config.name)))
    return out


def generate_files(cells: Iterable[str | Path]) -> dict[str, str]:
    """Generate every cell in memory; raises before anything is written."""
    out: dict[str, str] = {}
    for cell in cells:
        out.update(kernel_files(build_kernel(load_cell(cell))))
    return out


def changed_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """The files whose text on disk differs from the generated text."""
    changed = []
    for rel, text in sorted(files.items()):
        path = out_dir / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            changed.append(rel)
    return changed


def diff(files: dict[str, str], out_dir: Path, rel: str) -> str:
    path = out_dir / rel
    old = path.read_text(encoding="utf-8").splitlines(True) if path.is_file() else []
    return "".join(difflib.unified_diff(old, files[rel].splitlines(True), f"a/{rel}", f"b/{rel}"))


def stray_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """Files under out_dir that no generated file accounts for (Python's caches aside): left by
    a cell that no longer exists, by hand, or by an interrupted write."""
    if not out_dir.is_dir():
        return []
    found = (
        p.relative_to(out_dir).as_posix()
        for p in out_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.relative_to(out_dir).parts
    )
    return sorted(rel for rel in found if rel not in files)


# Writing a set of files as one: every changed file is first written into STAGE/new (beside
# the targets, so renames stay on one file system) and every old one linked into STAGE/old.
# Creating STAGE/journal commits the set; then each file is renamed into place. An error while
# renaming puts the old files back; a kill leaves the journal, and the next write of that
# directory (or `generate`) completes the set before anything else. A stage without a journal
# was never committed and is deleted.
STAGE = ".cellgen-stage"


def write_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """Write the files that changed, all or none, with the umask's permissions; returns them.

    An OSError (a full disk, a read-only directory) becomes a one-line WriteError (an OSError
    too), or a CacheError naming CELLGEN_CACHE_DIR when out_dir is in the cache.
    """
    out_dir = Path(out_dir)
    changed = changed_files(files, out_dir)
    if not changed and not (out_dir / STAGE).exists():
        return []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with _locked(out_dir):
            _recover(out_dir)
            changed = changed_files(files, out_dir)
            if changed:
                _write_set({rel: files[rel] for rel in changed}, out_dir)
    except OSError as err:
        if isinstance(err, CellgenError):
            raise
        raise _write_error(out_dir, err) from None
    return changed


def _write_set(files: dict[str, str], out_dir: Path) -> None:
    stage = out_dir / STAGE
    committed = False
    try:
        stage.mkdir()
        for rel, text in files.items():
            new, old, target = stage / "new" / rel, stage / "old" / rel, out_dir / rel
            new.parent.mkdir(parents=True, exist_ok=True)
            with open(new, "w", encoding="utf-8", newline="\n") as handle:  # umask's mode
                handle.write(text)
            if target.is_file():
                old.parent.mkdir(parents=True, exist_ok=True)
                _keep(target, old)
        journal = stage / "journal.tmp"
        journal.write_text(json.dumps(sorted(files)), encoding="utf-8")
        with _interrupts_deferred():  # from here on the set completes: Ctrl-C waits for it
            os.replace(journal, stage / "journal")
            committed = True
            _apply(sorted(files), out_dir)
    finally:
        if not committed:
            shutil.rmtree(stage, ignore_errors=True)


def _keep(target: Path, old: Path) -> None:
    """Keep the current file for a rollback: a hard link, or a copy where links are refused."""
    try:
        os.link(target, old)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        shutil.copy2(target, old)


def _apply(rels: list[str], out_dir: Path) -> None:
    """Rename the staged files into place; on an error put back the ones already replaced."""
    stage, done = out_dir / STAGE, []
    try:
        for rel in rels:
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / "new" / rel, out_dir / rel)
            done.append(rel)
    except OSError as err:
        for rel in reversed(done):
            old = stage / "old" / rel
            if old.is_file():
                os.replace(old, out_dir / rel)
            else:
                (out_dir / rel).unlink()
        shutil.rmtree(stage)
        raise _write_error(out_dir, err) from None
    shutil.rmtree(stage)


def _recover(out_dir: Path) -> None:
    """Finish a set whose writer was killed after committing it; drop one never committed."""
    stage = out_dir / STAGE
    if not stage.exists():
        return
    journal = stage / "journal"
    if journal.is_file():
        for rel in json.loads(journal.read_text(encoding="utf-8")):
            new = stage / "new" / rel
            if new.is_file():
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(new, out_dir / rel)
    shutil.rmtree(stage)


def _write_error(out_dir: Path, err: OSError) -> OSError:
    if out_dir.resolve().is_relative_to(cache_dir().resolve()):
        return cache_error(out_dir, err)
    return WriteError(
        f"cannot write the generated files into {out_dir} ({err.strerror or err}); nothing "
        "was changed"
    )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a directory: one writer at a time (released if killed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (in the main thread) until the block is done, then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
