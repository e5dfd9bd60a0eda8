"""Calling a compiled C kernel through ctypes, with the NumPy-module calling convention.

Arguments arrive validated (shapes, dtype, contiguity) from codegen.load; this module only
allocates the outputs and the saved buffer, keeps a workspace per thread, and passes pointers in
the order of the generated signatures (see printer.signatures). A call costs a few microseconds
of Python on top of the C: pointers are taken from the buffer protocol (cheaper than
ndarray.ctypes) and the workspace is reused from call to call.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from .build import build, open_library

_REAL = {"float64": "f64", "float32": "f32"}
_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's first element."""
    try:
        return _addressof(_char_from_buffer(array))
    except (TypeError, ValueError):  # read-only or empty: the slower, general route
        return array.ctypes.data


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
        rows = [ptr, ctypes.c_int]  # lengths (int32, or NULL) and the direction
        prefix = f"cellgen_{cell}"
        self._saved_size = getattr(lib, f"{prefix}_saved_size")
        self._saved_size.argtypes, self._saved_size.restype = [size_t] * 3, size_t
        self._work_size = getattr(lib, f"{prefix}_work_size")
        self._work_size.argtypes, self._work_size.restype = [size_t] * 4, size_t
        n_states, n_params = len(states), len(params)
        self._forward = getattr(lib, f"{prefix}_forward_{suffix}")
        self._forward.argtypes = (
            [size_t] * 4 + [ptr] + rows + [ptr] * (n_states + n_params + 1 + n_states + 2)
        )
        self._forward.restype = None
        self._backward = getattr(lib, f"{prefix}_backward_{suffix}")
        self._backward.argtypes = (
            [size_t] * 4
            + [ptr]
            + rows
            + [ptr] * (n_states + n_params + 3 + n_states + 1 + n_states + n_params + 1)
        )
        self._backward.restype = None
        self._packed_size = getattr(lib, f"{prefix}_packed_size")
        self._packed_size.argtypes, self._packed_size.restype = [size_t] * 2, size_t
        self._infer_work_size = getattr(lib, f"{prefix}_infer_work_size")
        self._infer_work_size.argtypes, self._infer_work_size.restype = [size_t] * 3, size_t
        self._pack = getattr(lib, f"{prefix}_pack_{suffix}")
        self._pack.argtypes, self._pack.restype = [size_t] * 2 + [ptr] * (n_params + 1), None
        self._infer = getattr(lib, f"{prefix}_infer_{suffix}")
        self._infer.argtypes = [size_t] * 4 + [ptr] * 2 + rows + [ptr] * (n_states + 2)
        self._infer.restype = None
        self._lib = lib  # keep the library loaded as long as the functions live
        self._local = threading.local()  # one workspace per thread: calls may run in parallel

    def _work(self, T: int, B: int, I: int, H: int) -> int:
        """The address of a workspace of work_size numbers, reused by this thread's calls."""
        size = max(self._work_size(T, B, I, H), 1)
        work = getattr(self._local, "work", None)
        if work is None or work.size < size:
            work = self._local.work = np.empty(size, self.dtype)
        return address(work)

    def forward(self, xs: np.ndarray, state0: dict, params: dict, lengths=None, reverse=False):
        """lengths: None or int32 (B,), checked by codegen.load."""
        T, B, I = xs.shape
        H = state0[self.output].shape[1]
        dtype = self.dtype
        ys = np.empty((T, B, H), dtype)
        final = {s: np.empty((B, H), dtype) for s in self.states}
        saved = np.empty(self._saved_size(T, B, H), dtype)
        self._forward(
            T, B, I, H,
            address(xs),
            None if lengths is None else address(lengths),
            int(reverse),
            *[address(state0[s]) for s in self.states],
            *[address(params[p]) for p in self.params],
            address(ys),
            *[address(final[s]) for s in self.states],
            address(saved) if saved.size else None,
            self._work(T, B, I, H),
        )  # fmt: skip
        cache = {"xs": xs, "state0": state0, "params": params, "ys": ys, "saved": saved}
        cache["rows"] = (lengths, reverse)
        return ys, final, cache

    def backward(self, dys: np.ndarray, cache: dict, dfinal: dict):
        xs, state0, params, ys = cache["xs"], cache["state0"], cache["params"], cache["ys"]
        T, B, I = xs.shape
        H = ys.shape[2]
        dtype = self.dtype
        dxs = np.empty((T, B, I), dtype)
        dstate0 = {s: np.empty((B, H), dtype) for s in self.states}
        dparams = {p: np.empty(params[p].shape, dtype) for p in self.params}
        saved = cache["saved"]
        lengths, reverse = cache["rows"]
        self._backward(
            T, B, I, H,
            address(xs),
            None if lengths is None else address(lengths),
            int(reverse),
            *[address(state0[s]) for s in self.states],
            *[address(params[p]) for p in self.params],
            address(ys),
            address(saved) if saved.size else None,
            address(dys),
            *[address(dfinal[s]) if s in dfinal else None for s in self.states],
            address(dxs),
            *[address(dstate0[s]) for s in self.states],
            *[address(dparams[p]) for p in self.params],
            self._work(T, B, I, H),
        )  # fmt: skip
        return dxs, dstate0, dparams

    def pack(self, params: dict, input_size: int, hidden_size: int) -> np.ndarray:
        """The parameters in the C kernels' packed layout, for infer."""
        packed = np.empty(max(self._packed_size(input_size, hidden_size), 1), self.dtype)
        self._pack(
            input_size, hidden_size, *[address(params[p]) for p in self.params], address(packed)
        )
        return packed

    def infer(self, xs: np.ndarray, state0: dict, packed: np.ndarray, lengths=None, reverse=False):
        """ys and the final states from packed weights; the states are copied, not changed."""
        T, B, I = xs.shape
        H = state0[self.output].shape[1]
        ys = np.empty((T, B, H), self.dtype)
        final = {s: np.array(state0[s], self.dtype, order="C") for s in self.states}
        work = np.empty(max(self._infer_work_size(B, I, H), 1), self.dtype)
        self._infer(
            T, B, I, H, address(packed), address(xs),
            None if lengths is None else address(lengths), int(reverse),
            *[address(final[s]) for s in self.states],
            address(ys), address(work),
        )  # fmt: skip
        return ys, final
