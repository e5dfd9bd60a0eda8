"""The backends: each a folder with a printer, templates and a config.py that registers it.

Importing this package registers the built-in backends once, in the order of BUILTIN (the
order of names()); the registry's functions are re-exported here: `codegen.backends.names()`,
`get(name)`, `register(config)`, `unregister(name)`.
"""

import importlib

from .registry import (
    BackendConfig,
    UnknownBackendError,
    configs,
    generated_file,
    get,
    names,
    register,
    unregister,
)

BUILTIN = ("numpy", "c")  # folders whose config.py registers a backend on import
for _folder in BUILTIN:
    importlib.import_module(f"{__name__}.{_folder}.config")

__all__ = [
    "BUILTIN",
    "BackendConfig",
    "UnknownBackendError",
    "configs",
    "generated_file",
    "get",
    "names",
    "register",
    "unregister",
]
