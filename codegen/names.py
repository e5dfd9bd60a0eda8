"""One registry of names: users' names kept, every name cellgen makes unique.

Generated code needs names the user never wrote: adjoints, pre-activations, buffers, pointers.
Building them by gluing strings (`d_` + name) and parsing them back breaks legal cells (a state
`h` beside a vector `h_in` gives two `d_h_in`). Instead, every generated name is requested from a
`NameRegistry` under a typed key (what it names, and for what) and is made unique against every
name already taken: the user's, the target language's reserved words, the template's own names,
and the names made before it (Devito's SymbolRegistry, Tangent's Namer). Keys are looked up, never
parsed. Requests come in a fixed order, so the names are the same on every run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable


class NameRegistry:
    """Hands out names: `make(key, base)` returns base, or base2, base3, ... if base is taken."""

    def __init__(
        self, taken: Iterable[str] = (), reserved: Callable[[str], bool] | None = None
    ) -> None:
        self._taken: set[str] = set(taken)
        self._reserved = reserved or (lambda name: False)
        self._made: dict[Hashable, str] = {}

    def is_free(self, name: str) -> bool:
        return name not in self._taken and not self._reserved(name)

    def make(self, key: Hashable, base: str) -> str:
        """The name for `key`: made once, unique among every name of this registry."""
        if key in self._made:
            return self._made[key]
        name, k = base, 2
        while not self.is_free(name):
            name = f"{base}{k}"
            k += 1
        self._taken.add(name)
        self._made[key] = name
        return name

    def __getitem__(self, key: Hashable) -> str:
        return self._made[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._made


class Identifiers:
    """A backend's spelling of a kernel's symbols and of the names it derives from them.

    Each symbol keeps its own name unless the target reserves it (a keyword, a builtin, a macro,
    a name of the template); every derived name (`h_t`, the pointer to h at step t) is made
    unique against all of them. All symbols are registered first, so that no derived name can
    take a symbol's name.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        reserved: Iterable[str],
        reserved_pattern: str | None = None,
    ) -> None:
        pattern = re.compile(reserved_pattern) if reserved_pattern else None
        self._registry = NameRegistry(
            reserved, (lambda name: bool(pattern.fullmatch(name))) if pattern else None
        )
        for symbol in sorted(set(symbols)):
            self._registry.make(("symbol", symbol), symbol)

    def __call__(self, symbol: str) -> str:
        """The identifier of a kernel symbol."""
        return self._registry.make(("symbol", symbol), symbol)

    def derived(self, symbol: str, suffix: str, prefix: str = "") -> str:
        """A name derived from a symbol's, such as h_t for the pointer to h at step t."""
        return self._registry.make((prefix, symbol, suffix), f"{prefix}{self(symbol)}{suffix}")

    def local(self, name: str) -> str:
        """A name of the backend's own (a work array, a buffer) made unique once."""
        return self._registry.make(("local", name), name)
