"""Calling a compiled C kernel through ctypes, with the NumPy-module calling convention.

Arguments arrive validated (shapes, dtype, contiguity) from codegen.load; this module only
allocates the outputs, the saved buffer and the workspace, and passes pointers in the order of
the generated signatures (see printer.signatures).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .build import build, open_library

_REAL = {"float64": "f64", "float32": "f32"}


class CFunctions:
    """forward/backward of one generated C file for one dtype."""

    def __init__(
        self,
        c_file: Path,
        cell: str,
        states: tuple[str, ...],
        output: str,
        params: tuple[str, ...],
        dtype: str,
    ) -> None:
        self.cell, self.states, self.output, self.params = cell, states, output, params
        self.dtype = np.dtype(dtype)
        self.library_path = build(c_file)
        lib = open_library(self.library_path)
        suffix = _REAL[dtype]
        size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
        prefix = f"cellgen_{cell}"
        self._saved_size = getattr(lib, f"{prefix}_saved_size")
        self._saved_size.argtypes, self._saved_size.restype = [size_t] * 3, size_t
        self._work_size = getattr(lib, f"{prefix}_work_size")
        self._work_size.argtypes, self._work_size.restype = [size_t] * 4, size_t
        n_states, n_params = len(states), len(params)
        self._forward = getattr(lib, f"{prefix}_forward_{suffix}")
        self._forward.argtypes = [size_t] * 4 + [ptr] * (1 + n_states + n_params + 1 + n_states + 2)
        self._forward.restype = None
        self._backward = getattr(lib, f"{prefix}_backward_{suffix}")
        self._backward.argtypes = [size_t] * 4 + [ptr] * (
            1 + n_states + n_params + 3 + n_states + 1 + n_states + n_params + 1
        )
        self._backward.restype = None
        self._lib = lib  # keep the library loaded as long as the functions live

    def forward(self, xs: np.ndarray, state0: dict, params: dict):
        T, B, I = xs.shape
        H = state0[self.output].shape[1]
        ys = np.empty((T, B, H), self.dtype)
        final = {s: np.empty((B, H), self.dtype) for s in self.states}
        saved = np.empty(self._saved_size(T, B, H), self.dtype)
        work = np.empty(max(self._work_size(T, B, I, H), 1), self.dtype)
        self._forward(
            T, B, I, H,
            xs.ctypes.data,
            *(state0[s].ctypes.data for s in self.states),
            *(params[p].ctypes.data for p in self.params),
            ys.ctypes.data,
            *(final[s].ctypes.data for s in self.states),
            saved.ctypes.data,
            work.ctypes.data,
        )  # fmt: skip
        cache = {"xs": xs, "state0": state0, "params": params, "ys": ys, "saved": saved}
        return ys, final, cache

    def backward(self, dys: np.ndarray, cache: dict, dfinal: dict):
        xs, state0, params, ys = cache["xs"], cache["state0"], cache["params"], cache["ys"]
        T, B, I = xs.shape
        H = ys.shape[2]
        dxs = np.empty_like(xs)
        dstate0 = {s: np.empty((B, H), self.dtype) for s in self.states}
        dparams = {p: np.empty_like(params[p]) for p in self.params}
        work = np.empty(max(self._work_size(T, B, I, H), 1), self.dtype)
        self._backward(
            T, B, I, H,
            xs.ctypes.data,
            *(state0[s].ctypes.data for s in self.states),
            *(params[p].ctypes.data for p in self.params),
            ys.ctypes.data,
            cache["saved"].ctypes.data,
            dys.ctypes.data,
            *(dfinal[s].ctypes.data if s in dfinal else None for s in self.states),
            dxs.ctypes.data,
            *(dstate0[s].ctypes.data for s in self.states),
            *(dparams[p].ctypes.data for p in self.params),
            work.ctypes.data,
        )  # fmt: skip
        return dxs, dstate0, dparams
