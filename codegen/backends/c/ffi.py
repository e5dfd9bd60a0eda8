"""Calling a compiled C kernel through ctypes, with the NumPy-module calling convention.

Arguments arrive validated (shapes, dtype, contiguity) from codegen.load; this module only
allocates the outputs and the saved buffer, keeps a workspace per thread, and passes pointers in
the order of the generated signatures (see printer.signatures). A call costs a few microseconds
of Python on top of the C: pointers are taken from the buffer protocol (cheaper than
ndarray.ctypes) and the workspace is reused from call to call, up to `work_limit` bytes per
thread (a larger one is allocated for its call only); it is freed with the CFunctions.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from .build import build, open_library

_REAL = {"float64": "f64", "float32": "f32"}
SIZE_MAX = ctypes.c_size_t(-1).value  # what a size function returns when a count cannot fit
WORK_KEPT = 1 << 26  # bytes: the largest workspace kept between calls (64 MiB), as NumPy's
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
        spec=None,
    ) -> None:
        """`spec` (the CellSpec) gives the sizes besides I and H, where a call's arrays have
        them; without it, every array is of size H."""
        self.cell, self.states, self.output, self.params = cell, states, output, params
        self.spec = spec
        self.extra = tuple(spec.sizes) if spec is not None else ()
        n_sizes = 4 + len(self.extra)  # T, B, I, H and the declared sizes
        self.dtype = np.dtype(dtype)
        self.library_path = build(c_file)
        lib = open_library(self.library_path)
        suffix = _REAL[dtype]
        size_t, ptr = ctypes.c_size_t, ctypes.c_void_p
        rows = [ptr, ctypes.c_int]  # lengths (int32, or NULL) and the direction
        prefix = f"cellgen_{cell}"
        self._saved_size = getattr(lib, f"{prefix}_saved_size")
        self._saved_size.argtypes, self._saved_size.restype = [size_t] * (n_sizes - 1), size_t
        self._work_size = getattr(lib, f"{prefix}_work_size")
        self._work_size.argtypes, self._work_size.restype = [size_t] * n_sizes, size_t
        n_states, n_params = len(states), len(params)
        self._forward = getattr(lib, f"{prefix}_forward_{suffix}")
        self._forward.argtypes = (
            [size_t] * n_sizes + [ptr] + rows + [ptr] * (n_states + n_params + 1 + n_states + 2)
        )
        self._forward.restype = None
        self._backward = getattr(lib, f"{prefix}_backward_{suffix}")
        self._backward.argtypes = (
            [size_t] * n_sizes
            + [ptr]
            + rows
            + [ptr] * (n_states + n_params + 3 + n_states + 1 + n_states + n_params + 1)
        )
        self._backward.restype = None
        self._packed_size = getattr(lib, f"{prefix}_packed_size")
        self._packed_size.argtypes = [size_t] * (n_sizes - 2)
        self._packed_size.restype = size_t
        self._infer_work_size = getattr(lib, f"{prefix}_infer_work_size")
        self._infer_work_size.argtypes = [size_t] * (n_sizes - 1)
        self._infer_work_size.restype = size_t
        self._pack = getattr(lib, f"{prefix}_pack_{suffix}")
        self._pack.argtypes = [size_t] * (n_sizes - 2) + [ptr] * (n_params + 1)
        self._pack.restype = None
        self._pack_bf16 = getattr(lib, f"{prefix}_pack_bf16_{suffix}", None)  # float only
        if self._pack_bf16 is not None:
            self._pack_bf16.argtypes, self._pack_bf16.restype = self._pack.argtypes, None
        self._infer = getattr(lib, f"{prefix}_infer_{suffix}")
        self._infer.argtypes = [size_t] * n_sizes + [ptr] * 2 + rows + [ptr] * (n_states + 2)
        self._infer.restype = None
        self._lib = lib  # keep the library loaded as long as the functions live
        self._local = threading.local()  # one workspace per thread: calls may run in parallel
        self.work_limit = WORK_KEPT

    def numbers(self, what: str, T: int, B: int, I: int, H: int, *extra: int) -> int | None:
        """Numbers a call allocates besides its results (saved, work), from the C size
        functions; None when one of them says the count does not fit in size_t."""
        if what == "infer":
            sizes = [self._infer_work_size(B, I, H, *extra)]
        else:
            sizes = [self._work_size(T, B, I, H, *extra)]
            sizes += [self._saved_size(T, B, H, *extra)] if what == "forward" else []
        return None if SIZE_MAX in sizes else sum(sizes)

    def _sizes(self, I: int, state0: dict, params: dict | None) -> dict[str, int]:
        """I, H and the declared sizes, from the call's arrays (validated by codegen.load)."""
        if self.spec is None:
            return {"I": I, "H": state0[self.output].shape[1]}
        return self.spec.read_sizes(I, state0, params)

    def _work(self, T: int, B: int, I: int, H: int, *extra: int) -> np.ndarray:
        """A workspace of work_size numbers: this thread's, reused, when it fits the limit.
        The caller holds the array for the duration of the call."""
        size = max(self._work_size(T, B, I, H, *extra), 1)
        work = getattr(self._local, "work", None)
        if work is not None and work.nbytes > self.work_limit:  # the limit was lowered
            work = self._local.work = None
        if work is None or work.size < size:
            work = np.empty(size, self.dtype)
            self._local.work = work if work.nbytes <= self.work_limit else None
        return work

    def _size_of(self, symbol: str, sizes: dict[str, int]) -> int:
        """The number of units of a state or of the output."""
        if self.spec is None:
            return sizes["H"]
        return sizes[dict(self.spec.symbol_sizes)[symbol]]

    def forward(self, xs: np.ndarray, state0: dict, params: dict, lengths=None, reverse=False):
        """lengths: None or int32 (B,), checked by codegen.load."""
        T, B, I = xs.shape
        z = self._sizes(I, state0, params)
        H, extra = z["H"], [z[n] for n in self.extra]
        dtype = self.dtype
        ys = np.empty((T, B, self._size_of(self.output, z)), dtype)
        final = {s: np.empty((B, self._size_of(s, z)), dtype) for s in self.states}
        saved = np.empty(self._saved_size(T, B, H, *extra), dtype)
        work = self._work(T, B, I, H, *extra)
        self._forward(
            T, B, I, H, *extra,
            address(xs),
            None if lengths is None else address(lengths),
            int(reverse),
            *[address(state0[s]) for s in self.states],
            *[address(params[p]) for p in self.params],
            address(ys),
            *[address(final[s]) for s in self.states],
            address(saved) if saved.size else None,
            address(work),
        )  # fmt: skip
        cache = {"xs": xs, "state0": state0, "params": params, "ys": ys, "saved": saved}
        cache["rows"] = (lengths, reverse)
        return ys, final, cache

    def backward(self, dys: np.ndarray, cache: dict, dfinal: dict):
        xs, state0, params, ys = cache["xs"], cache["state0"], cache["params"], cache["ys"]
        T, B, I = xs.shape
        z = self._sizes(I, state0, params)
        H, extra = z["H"], [z[n] for n in self.extra]
        dtype = self.dtype
        dxs = np.empty((T, B, I), dtype)
        dstate0 = {s: np.empty(state0[s].shape, dtype) for s in self.states}
        dparams = {p: np.empty(params[p].shape, dtype) for p in self.params}
        saved = cache["saved"]
        work = self._work(T, B, I, H, *extra)
        lengths, reverse = cache["rows"]
        self._backward(
            T, B, I, H, *extra,
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
            address(work),
        )  # fmt: skip
        return dxs, dstate0, dparams

    def pack(
        self,
        params: dict,
        input_size: int,
        hidden_size: int,
        sizes: dict | None = None,
        bf16: bool = False,
    ) -> np.ndarray:
        """The parameters in the C kernels' packed layout, for infer; `sizes`, the declared
        sizes by name, when the cell has any; bf16: the weight matrices stored as bfloat16."""
        extra = [(sizes or {})[n] for n in self.extra]
        n = self._packed_size(input_size, hidden_size, *extra)
        packed = np.empty(max(n, 1), self.dtype)
        pack = self._pack_bf16 if bf16 else self._pack
        pack(
            input_size,
            hidden_size,
            *extra,
            *[address(params[p]) for p in self.params],
            address(packed),
        )
        return packed

    def pack_bfloat16(
        self, params: dict, input_size: int, hidden_size: int, sizes: dict | None = None
    ) -> np.ndarray:
        """pack with the weight matrices stored as bfloat16 (float32 kernels only)."""
        if self._pack_bf16 is None:
            raise ValueError("weights='bfloat16' needs the float32 kernels")
        return self.pack(params, input_size, hidden_size, sizes, bf16=True)

    def infer(
        self,
        xs: np.ndarray,
        state0: dict,
        packed: np.ndarray,
        lengths=None,
        reverse=False,
        sizes: dict | None = None,
    ):
        """ys and the final states from packed weights; the states are copied, not changed.
        `sizes`: I, H and the declared sizes (from pack), when the cell declares sizes."""
        T, B, I = xs.shape
        z = dict(sizes) if sizes else self._sizes(I, state0, None)
        H, extra = z["H"], [z[n] for n in self.extra]
        ys = np.empty((T, B, self._size_of(self.output, z)), self.dtype)
        final = {s: np.array(state0[s], self.dtype, order="C") for s in self.states}
        work = np.empty(max(self._infer_work_size(B, I, H, *extra), 1), self.dtype)
        self._infer(
            T, B, I, H, *extra, address(packed), address(xs),
            None if lengths is None else address(lengths), int(reverse),
            *[address(final[s]) for s in self.states],
            address(ys), address(work),
        )  # fmt: skip
        return ys, final
