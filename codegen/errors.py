"""The exceptions cellgen raises for mistakes a user can fix.

The CLI prints these as one line and exits 2; anything else is a bug in cellgen.
"""

from __future__ import annotations


class CellgenError(Exception):
    """A user error: the message says what is wrong and how to fix it."""


class UnknownCellError(CellgenError, ValueError):
    """A cell name that is neither a built-in cell nor an equation file."""


class EquationError(CellgenError):
    """A cell definition that cannot be turned into kernels."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        equation: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.equation = equation
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        what = f"equation '{self.equation}': " if self.equation else ""
        return where + what + self.problem


class TemplateError(CellgenError):
    """A Jinja template failed to render (a bug in a template, reported plainly)."""


class CompileError(CellgenError):
    """The C compiler rejected generated code or could not be run."""


class CacheError(CellgenError, OSError):
    """The cache (C builds, kernels of equation files) cannot be written."""


class WriteError(CellgenError, OSError):
    """Generated files cannot be written (a full disk, a read-only directory)."""
