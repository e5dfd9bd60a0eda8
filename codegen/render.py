"""From a cell to the text of its generated files, and writing them safely.

Each registered backend (codegen.backends) contributes `files(kernel, render)`, a mapping from
a path inside generated/ to text; `render` fills one of that backend's Jinja templates. Files
are written atomically and only after every cell generated without error, so a failure leaves
generated/ as it was.
"""

from __future__ import annotations

import difflib
import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import jinja2

from . import backends
from .backends import BackendConfig
from .errors import TemplateError
from .kernel import Kernel, build_kernel
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


def write_files(files: dict[str, str], out_dir: Path) -> list[str]:
    """Write the files that changed, each atomically (temporary file, then rename)."""
    changed = changed_files(files, out_dir)
    for rel in changed:
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(files[rel])
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return changed
