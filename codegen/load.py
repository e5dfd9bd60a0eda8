"""codegen.load: a cell's generated kernels behind one validated interface, NumPy or C.

    k = codegen.load("lstm", backend="c", dtype="float64")
    ys, final, cache = k.forward(xs, state0, params)
    dxs, dstate0, dparams = k.backward(dys, cache, dfinal=None)

Arguments are checked here, before any generated code runs: a wrong shape, a missing or unknown
parameter, a wrong dtype, or non-contiguous data for a backend that needs it (C) raise
ValueError naming the argument and what was expected.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import backends
from .backends import BackendConfig
from .backends.registry import Functions
from .cell import CellSpec
from .errors import CellgenError
from .paths import PACKAGE_DIR, builtin_generated_dir, cache_dir
from .registry import builtin_cells, load_cell, resolve

Arrays = dict[str, np.ndarray]


def load(cell: str | Path, backend: str = "numpy", dtype: str | None = None) -> CellKernel:
    """The kernels of a built-in cell (by name) or of an equation file (by path), on one of
    the registered backends (codegen.backends.names()).

    `dtype` fixes the kernels' dtype (one of the backend's dtypes); without it, the backend's
    default: NumPy follows the dtype of its inputs (float32 or float64; complex128 too, for
    complex-step checks), C is compiled (with $CC or cc, cached) for float64.
    """
    config = backends.get(backend)
    if dtype is not None:
        dtype = str(np.dtype(dtype))
        if dtype not in config.dtypes:
            raise ValueError(f"unsupported dtype '{dtype}'; choose {' or '.join(config.dtypes)}")
    generated, spec = generated_dir_for(cell, config)
    functions = config.load(generated, spec, dtype)
    source = hashlib.sha256(resolve(cell).read_bytes()).hexdigest()[:16]
    return CellKernel(spec, config, dtype or config.default_dtype, functions, source)


def generated_dir_for(cell: str | Path, config: BackendConfig) -> tuple[Path, CellSpec]:
    """Where a cell's kernels for one backend are, and the cell: generated/ for a built-in cell
    on a backend shipped there; else the cache, where they are generated once for each
    equation file's text and version of cellgen (see generation_key), then found again."""
    path = resolve(cell)
    spec = load_cell(path)
    if config.shipped and str(cell) in builtin_cells():
        return builtin_generated_dir(), spec
    out = cache_dir() / "kernels" / f"{spec.name}-{generation_key(path, config)}"
    if not _complete(out):
        from .kernel import build_kernel
        from .render import kernel_files, write_files

        files = kernel_files(build_kernel(spec), [config])
        write_files(files, out)  # writes only what is missing or differs, each file atomically
        write_files({_COMPLETE: "".join(f"{name}\n" for name in sorted(files))}, out)
    return out, spec


_COMPLETE = "cellgen-complete"  # written last, listing the files: the folder holds them all


def _complete(out: Path) -> bool:
    """Whether a cache folder holds a whole generated set (its list, and every file on it)."""
    try:
        names = (out / _COMPLETE).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(names) and all((out / name).is_file() for name in names)


def generation_key(path: Path, config: BackendConfig) -> str:
    """What a cell's generated files depend on, hashed: the equation file's path (named in the
    files) and text, the backend, and the code that generates them (cellgen's sources and
    templates, the backend's folder, the versions of SymPy and Jinja)."""
    digest = hashlib.sha256()
    for part in (str(path).encode(), config.name.encode(), path.read_bytes()):
        digest.update(len(part).to_bytes(8, "little") + part)
    digest.update(_code_digest(config.folder).encode())
    return digest.hexdigest()[:24]


@functools.lru_cache(maxsize=16)
def _code_digest(backend_folder: Path) -> str:
    """A hash of cellgen's own sources and templates and a backend's (once per process)."""
    import jinja2
    import sympy

    digest = hashlib.sha256(f"sympy {sympy.__version__} jinja2 {jinja2.__version__}".encode())
    folders = [PACKAGE_DIR] + ([] if PACKAGE_DIR in backend_folder.parents else [backend_folder])
    for folder in folders:
        for file in sorted(folder.rglob("*")):
            if file.suffix in (".py", ".jinja") and "__pycache__" not in file.parts:
                digest.update(f"{file.relative_to(folder)}\0".encode() + file.read_bytes())
    return digest.hexdigest()


def import_generated(path: Path) -> ModuleType:
    """Import a generated NumPy module from its file."""
    if not path.is_file():
        raise CellgenError(f"no generated kernel at {path}; run `cellgen generate`")
    key = "cellgen_generated_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    sys.modules[key] = module
    return module


@functools.lru_cache(maxsize=1)
def physical_memory() -> int:
    """Bytes of physical memory (where the system says; else 2**63, no limit in practice)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 63


def _bytes(n: int) -> str:
    """A number of bytes for people: 1.5 GiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class PackedParams:
    """A cell's parameters rearranged for inference by one kernel: pass it to its `infer`."""

    cell: str
    backend: str
    dtype: str
    input_size: int
    hidden_size: int
    data: Any  # C: one array in the kernels' packed layout; NumPy: a dict of arrays
    sizes: tuple[tuple[str, int], ...] = ()  # the declared sizes besides I and H
    weights: str = ""  # how the matrices are stored: "" as dtype, or "bfloat16"

    def __repr__(self) -> str:
        extra = "".join(f" {n}={v}" for n, v in self.sizes)
        stored = f" weights={self.weights}" if self.weights else ""
        return (
            f"<cellgen packed params {self.cell} backend={self.backend} dtype={self.dtype}"
            f"{stored} I={self.input_size} H={self.hidden_size}{extra}>"
        )


def bfloat16_round(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as float32:
    what pack(weights="bfloat16") stores, for backends without a bfloat16 layout."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    high = np.uint32(0xFFFF0000)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & high
    quiet = (bits | np.uint32(0x00400000)) & high
    return np.where(np.isnan(a), quiet, rounded).view(np.float32)


class CellKernel:
    """Forward and backward kernels of one cell on one backend, with checked arguments."""

    def __init__(
        self,
        spec: CellSpec,
        config: BackendConfig,
        dtype: str | None,
        functions: Functions,
        source: str = "",
    ) -> None:
        """`source`: a hash of the cell's equation file, part of the tag of every cache."""
        self._functions = functions
        self._source = source
        self.config = config
        self.spec = spec
        self.name: str = spec.name
        self.backend = config.name
        self.dtype = dtype
        self.input_dtypes: tuple[str, ...] = config.input_dtypes(dtype)
        self.states: tuple[str, ...] = tuple(spec.states)
        self.output: str = spec.output
        self.params: tuple[str, ...] = tuple(p.name for p in spec.params)
        self.sizes: tuple[str, ...] = tuple(spec.sizes)  # declared besides I and H
        self._shapes = {p.name: tuple(p.shape) for p in spec.params}
        self._size_of = dict(spec.symbol_sizes)  # a state's or the output's size name
        self._sources = spec.size_sources()
        self._contiguous = config.needs_contiguous
        # the most memory one call may need, in bytes; None: the machine's physical memory
        self.memory_limit: int | None = None
        self._fits: set[tuple] = set()  # calls that passed _check_memory
        self._shape_cache: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}

    def __repr__(self) -> str:
        return f"<cellgen kernel {self.name} backend={self.backend} dtype={self.dtype or 'any'}>"

    def _repr_latex_(self) -> str:
        """In a notebook: the cell's equations as rendered math."""
        from .info import cell_info

        return cell_info(self.spec)._repr_latex_()

    def _repr_html_(self) -> str:
        """In a notebook: the equations as MathML and the cell's diagram."""
        from .info import cell_info

        return cell_info(self.spec)._repr_html_()

    @property
    def work_limit(self) -> int | None:
        """Bytes of work arrays the kernel keeps between the calls of each thread (64 MiB by
        default; None if its backend keeps none); a call that needs more allocates the rest
        for itself. Set it to trade memory for speed; 0 keeps nothing."""
        return getattr(self._functions, "work_limit", None)

    @work_limit.setter
    def work_limit(self, limit: int) -> None:
        if not hasattr(self._functions, "work_limit"):
            raise ValueError(f"work_limit: the {self.config.title} kernel keeps no work arrays")
        self._functions.work_limit = int(limit)

    def param_shapes(
        self, input_size: int, hidden_size: int, **sizes: int
    ) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape, for the input size, the hidden size and the cell's
        declared sizes by name (`k.sizes`), e.g. param_shapes(3, 4, P=2)."""
        return self.spec.param_shapes(input_size, hidden_size, **sizes)

    def output_size(self, hidden_size: int, **sizes: int) -> int:
        """The number of units of ys, for the sizes as param_shapes takes them."""
        return self.spec.size_values(0, hidden_size, **sizes)[self._size_of[self.output]]

    def state_shapes(self, batch: int, hidden_size: int, **sizes: int) -> dict[str, tuple]:
        """Every state's shape (B, its size), for the sizes as param_shapes takes them."""
        values = self.spec.size_values(0, hidden_size, **sizes)
        return {s: (int(batch), values[self._size_of[s]]) for s in self.states}

    def forward(
        self,
        xs: np.ndarray,
        state0: Arrays,
        params: Arrays,
        lengths: Any = None,
        reverse: bool = False,
    ) -> tuple[np.ndarray, Arrays, dict[str, Any]]:
        """ys, the final states and the cache for backward. Row b runs its first lengths[b]
        steps (all T without lengths), reversed (xs[lengths[b] - 1], ..., xs[0]) if `reverse`;
        past its length its ys and gradients are zero and its state is carried."""
        xs, state0, params, sizes = self._check_forward(xs, state0, params)
        T, B = xs.shape[:2]
        self._check_memory("forward", T, B, sizes["I"], sizes["H"], xs.dtype, sizes)
        # the cache owns what backward reads: copies of the inputs, and the ys it computed
        # (the caller gets a copy), so that changing any of them leaves the gradients alone
        xs = xs.copy()
        state0 = {s: a.copy() for s, a in state0.items()}
        params = {p: a.copy() for p, a in params.items()}
        rows = self._rows(lengths, reverse, xs.shape)
        ys, final, cache = self._functions.forward(xs, state0, params, *rows)
        cache = dict(cache)
        cache["__cellgen__"] = (self.name, self._source, self.backend, str(xs.dtype))
        return ys.copy(), final, cache

    def backward(
        self, dys: np.ndarray, cache: dict[str, Any], dfinal: Arrays | None = None
    ) -> tuple[np.ndarray, Arrays, Arrays]:
        self._check_cache(cache)
        ys = cache["ys"]
        dtype = ys.dtype
        dys = self._array("dys", dys, ys.shape, f"(T, B, {self._size_of[self.output]})", dtype)
        dfinal = dict(dfinal or {})
        unknown = sorted(set(dfinal) - set(self.states))
        if unknown:
            raise ValueError(
                f"dfinal: unknown state '{unknown[0]}'; {self.name} has states {self.states}"
            )
        B = ys.shape[1]
        xs = cache.get("xs")
        I = xs.shape[2] if isinstance(xs, np.ndarray) and xs.ndim == 3 else 0
        sizes = self.spec.read_sizes(I, cache.get("state0") or {}, cache.get("params") or {})
        dfinal = {
            s: self._array(
                f"dfinal['{s}']",
                v,
                (B, sizes[self._size_of[s]]),
                f"(B, {self._size_of[s]})",
                dtype,
            )
            for s, v in dfinal.items()
        }
        self._check_memory("backward", ys.shape[0], B, I, sizes["H"], dtype, sizes)
        return self._functions.backward(dys, cache, dfinal)

    def pack(self, params: Arrays, weights: str | None = None) -> PackedParams:
        """The parameters rearranged once for `infer` (C: the kernels' packed layout; NumPy:
        a copy). Checked like forward's params; sizes are read from their shapes.
        weights="bfloat16" (float32 params only) stores the weight matrices rounded to bfloat16
        (C: in half the bytes, which infer streams per step; the arithmetic stays float32)."""
        if weights not in (None, "bfloat16"):
            raise ValueError(
                f"weights: expected None (the params' dtype) or 'bfloat16', not {weights!r}"
            )
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict with keys {', '.join(self.params)}")
        sizes = self._sizes_of(params)
        I, H = sizes["I"], sizes["H"]
        extra = {n: sizes[n] for n in self.sizes}
        dtype = self._dtype_of("params", np.asarray(next(iter(params.values()))))
        if weights and dtype != np.float32:
            raise ValueError(
                f"weights='bfloat16' needs float32 params (these are {dtype}): cast them first"
            )
        shapes = self.param_shapes(I, H, **extra)
        self._check_names("params", params, self.params, shapes)
        params = {
            p: self._array(f"params['{p}']", params[p], shapes[p], self._shape_text(p), dtype)
            for p in self.params
        }
        z = {"sizes": extra} if self.sizes else {}
        if not weights:
            data = self._functions.pack(params, I, H, **z)
        elif hasattr(self._functions, "pack_bfloat16"):
            data = self._functions.pack_bfloat16(params, I, H, **z)
        else:  # the same rounded weights, stored as float32
            rounded = {p: bfloat16_round(v) if v.ndim == 2 else v for p, v in params.items()}
            data = self._functions.pack(rounded, I, H, **z)
        return PackedParams(
            self.name, self.backend, str(dtype), I, H, data, tuple(extra.items()), weights or ""
        )

    def infer(
        self,
        xs: np.ndarray,
        state0: Arrays,
        packed: PackedParams | Arrays,
        lengths: Any = None,
        reverse: bool = False,
    ) -> tuple[np.ndarray, Arrays]:
        """ys and the final states, keeping nothing for a backward: `packed` from pack(), or a
        params dict, packed here. Equal to forward's ys and final; on the C backend, calling
        infer on one step at a time with the previous final gives the same numbers bit for bit
        as one call over the sequence. `lengths` and `reverse` as in forward."""
        if isinstance(packed, dict):
            packed = self.pack(packed)
        if not isinstance(packed, PackedParams) or (packed.cell, packed.backend) != (
            self.name,
            self.backend,
        ):
            raise ValueError(
                f"packed: expected the result of this kernel's pack() ({self.name}, "
                f"{self.backend}) or a params dict"
            )
        xs_arr = np.asarray(xs)
        if xs_arr.ndim != 3 or 0 in xs_arr.shape:
            raise ValueError(
                f"xs: expected a non-empty array of shape (T, B, I), got shape {xs_arr.shape}"
            )
        dtype = np.dtype(packed.dtype)
        T, B, I = xs_arr.shape
        if packed.input_size != I:
            raise ValueError(
                f"xs: expected shape (T, B, I) = (T, B, {packed.input_size}) for these weights, "
                f"got {xs_arr.shape}"
            )
        xs_arr = self._array("xs", xs_arr, (T, B, I), "(T, B, I)", dtype)
        if not isinstance(state0, dict):
            raise ValueError(f"state0: expected a dict with keys {self.states}")
        sizes = {"I": I, "H": packed.hidden_size, **dict(packed.sizes)}
        for size, (kind, name, _) in self._sources.items():  # a size only a state has
            if kind == "state" and not sizes.get(size) and np.ndim(state0.get(name)) == 2:
                sizes[size] = int(np.shape(state0[name])[1])
        shapes = {s: (B, sizes[self._size_of[s]]) for s in self.states}
        self._check_names("state0", state0, self.states, shapes)
        state0 = {
            s: self._array(
                f"state0['{s}']",
                state0[s],
                shapes[s],
                f"(B, {self._size_of[s]}) = {shapes[s]}",
                dtype,
            )
            for s in self.states
        }
        self._check_memory("infer", T, B, I, sizes["H"], dtype, sizes)
        rows = self._rows(lengths, reverse, xs_arr.shape)
        if self.sizes:
            return self._functions.infer(xs_arr, state0, packed.data, *rows, sizes=sizes)
        return self._functions.infer(xs_arr, state0, packed.data, *rows)

    @staticmethod
    def _rows(lengths: Any, reverse: bool, shape: tuple[int, ...]) -> tuple:
        """() for every row over every step forwards, else (lengths as int32 or None, True or
        False), after checking lengths: integers of shape (B,) in 0..T."""
        if lengths is None and not reverse:
            return ()
        if not isinstance(reverse, (bool, np.bool_)):
            raise ValueError(f"reverse: expected True or False, got {reverse!r}")
        if lengths is None:
            return (None, bool(reverse))
        T, B = shape[0], shape[1]
        arr = np.asarray(lengths)
        if arr.dtype.kind not in "iu":
            raise ValueError(
                f"lengths: expected integers of shape (B,) = ({B},), got dtype {arr.dtype}"
            )
        if arr.shape != (B,):
            raise ValueError(f"lengths: expected shape (B,) = ({B},), got {arr.shape}")
        if B and (arr.min() < 0 or arr.max() > T):
            bad = int(arr[(arr < 0) | (arr > T)][0])
            raise ValueError(f"lengths: each must be in 0..T = 0..{T}, got {bad}")
        return (np.ascontiguousarray(arr, np.int32), bool(reverse))

    def _check_memory(
        self,
        what: str,
        T: int,
        B: int,
        I: int,
        H: int,
        dtype: Any,
        sizes: dict[str, int] | None = None,
    ) -> None:
        """Refuse a call whose arrays cannot fit, before anything is allocated: the arrays it
        returns, and what its backend saves and works in (where the backend can say).
        `sizes`: I, H and the declared sizes, when the cell declares any."""
        sizes = sizes or {**{n: H for n in self.spec.all_sizes}, "I": I}
        declared = [sizes[n] for n in self.sizes]
        key = (what, T, B, I, H, *declared, dtype, self.memory_limit)
        if key in self._fits:  # the common case: sizes seen before
            return
        states = sum(B * sizes[self._size_of[s]] for s in self.states)
        Y = sizes[self._size_of[self.output]]
        P = sum(math.prod(shape) for shape in self._shapes_for(sizes).values())
        inputs = T * B * I + states + P  # xs, state0, params: forward's copies, backward's d
        if what == "backward":
            numbers = inputs
        elif what == "forward":  # ys and the final states; the cache's ys and inputs
            numbers = 2 * T * B * Y + states + inputs
        else:  # ys and the final states
            numbers = T * B * Y + states
        count = getattr(self._functions, "numbers", None)
        extra = count(what, T, B, I, H, *declared) if count is not None else 0
        limit = self.memory_limit if self.memory_limit is not None else physical_memory()
        itemsize = np.dtype(dtype).itemsize
        if extra is not None and (numbers + extra) * itemsize <= limit:
            if len(self._fits) >= 64:
                self._fits.clear()
            self._fits.add(key)
            return
        named = "".join(f", {n}={sizes[n]}" for n in self.sizes)
        call = f"{what} at T={T}, B={B}, I={I}, H={H}{named} in {np.dtype(dtype)}"
        fix = "split the sequence (the final state carries over) or the batch"
        if extra is None:
            raise ValueError(f"{call}: its memory does not even fit in size_t; {fix}")
        where = "k.memory_limit" if self.memory_limit is not None else "the physical memory"
        raise ValueError(
            f"{call}: needs at least {_bytes((numbers + extra) * itemsize)} of memory, more "
            f"than {where} ({_bytes(limit)}); {fix}, or set k.memory_limit"
        )

    def _sizes_of(self, params: Arrays) -> dict[str, int]:
        """I, H and the declared sizes from the shapes of the parameters (0 for a declared
        size that no parameter has)."""
        sizes: dict[str, int] = {}
        for p, shape in self._shapes.items():
            if p in params:
                for dim, n in zip(shape, np.shape(params[p]), strict=False):
                    sizes.setdefault(dim, int(n))
        wanted = {d for shape in self._shapes.values() for d in shape}
        if any(d not in sizes for d in wanted):
            missing = next(p for p in self.params if p not in params)
            raise ValueError(f"params: missing parameter '{missing}'")
        if self.spec.input_hidden:  # I = H
            sizes.setdefault("I", sizes.get("H", 0))
        return {n: sizes.get(n, 0) for n in self.spec.all_sizes}

    def _check_names(self, what: str, given: dict, names: tuple, shapes: dict) -> None:
        missing = [n for n in names if n not in given]
        if missing:
            n = missing[0]
            raise ValueError(f"{what}: missing '{n}' of shape {shapes[n]}")
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"{what}: unknown '{unknown[0]}'; {self.name} has {', '.join(names)}")

    # validation ---------------------------------------------------------------------------

    def _check_cache(self, cache: object) -> None:
        """The cache must come from a forward of this cell (the same equation file's text), on
        this backend, in a dtype this kernel computes in: anything else would be misread."""
        tag = cache.get("__cellgen__") if isinstance(cache, dict) else None
        mine = (self.name, self._source, self.backend)
        ours = isinstance(tag, tuple) and len(tag) == 4
        if ours and tag[:3] == mine and tag[3] in self.input_dtypes:
            return
        made = "not a cache of codegen.load's kernels"
        if ours:
            name, source, backend, dtype = tag
            cell = name if source == self._source else f"{name} from another {name}.py"
            made = f"made by a {backend} kernel of {cell} in {dtype}"
        wanted = " or ".join(self.input_dtypes)
        raise ValueError(
            f"cache: {made}; this is a {self.backend} kernel of {self.name} "
            f"({self.spec.source}) in {wanted}: pass the cache of this kernel's forward"
        )

    def _check_forward(self, xs, state0, params) -> tuple[np.ndarray, Arrays, Arrays, dict]:
        xs_arr = np.asarray(xs) if not isinstance(xs, np.ndarray) else xs
        if xs_arr.ndim != 3 or 0 in xs_arr.shape:
            raise ValueError(
                f"xs: expected a non-empty array of shape (T, B, I), got shape {xs_arr.shape}"
            )
        dtype = self._dtype_of("xs", xs_arr)
        T, B, I = xs_arr.shape
        if not isinstance(state0, dict):
            raise ValueError(f"state0: expected a dict with keys {self.states}")
        missing = [s for s in self.states if s not in state0]
        if missing:
            raise ValueError(
                f"state0: missing state '{missing[0]}' of shape (B, {self._size_of[missing[0]]}); "
                f"{self.name} has states {self.states}"
            )
        unknown = sorted(set(state0) - set(self.states))
        if unknown:
            raise ValueError(
                f"state0: unknown state '{unknown[0]}'; {self.name} has states {self.states}"
            )
        sized = self._size_of
        if self.output in self.states:
            first = np.asarray(state0[self.output])
            Y = sized[self.output]
            if first.ndim != 2 or first.shape[0] != B or first.shape[1] == 0:
                raise ValueError(
                    f"state0['{self.output}']: expected shape (B, {Y}) with B = {B} (xs is "
                    f"(T, B, I) = {xs_arr.shape}) and {Y} > 0, got {first.shape}"
                )
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict with keys {', '.join(self.params)}")
        sizes = self._read_sizes(I, B, state0, params)
        shapes = self._shapes_for(sizes)
        state_shapes = {s: (B, sizes[sized[s]]) for s in self.states}
        if self.spec.input_hidden and sizes["H"] != I:
            raise ValueError(
                f"xs: the input {self.spec.input} of {self.name} is hidden-sized (I = H), so xs "
                f"must be (T, B, H) = (T, {B}, {sizes['H']}); got {xs_arr.shape}"
            )
        if self._all_valid(state0, state_shapes, params, shapes, dtype):  # the common case
            return (
                self._array("xs", xs_arr, (T, B, I), "(T, B, I)", dtype),
                {s: state0[s] for s in self.states},
                {p: params[p] for p in self.params},
                sizes,
            )
        state0 = {
            s: self._array(f"state0['{s}']", state0[s], state_shapes[s], f"(B, {sized[s]})", dtype)
            for s in self.states
        }
        missing = [p for p in self.params if p not in params]
        if missing:
            p = missing[0]
            raise ValueError(
                f"params: missing parameter '{p}' of shape {self._shape_text(p)} = {shapes[p]}"
            )
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(
                f"params: unknown parameter '{unknown[0]}'; {self.name} has "
                + ", ".join(self.params)
            )
        self._check_input_size(I, sizes, params)
        params = {
            p: self._array(f"params['{p}']", params[p], shapes[p], self._shape_text(p), dtype)
            for p in self.params
        }
        xs_arr = self._array("xs", xs_arr, (T, B, I), "(T, B, I)", dtype)
        return xs_arr, state0, params, sizes

    def _read_sizes(self, I: int, B: int, state0: dict, params: dict) -> dict[str, int]:
        """I, H and the declared sizes from the arrays that have them (size_sources), after
        checking those arrays can say: each size is then checked against every other array."""
        for size, (kind, name, axis) in self._sources.items():
            if kind == "state":
                shape = np.shape(state0[name])
                if len(shape) != 2 or shape[0] != B or shape[1] == 0:
                    raise ValueError(
                        f"state0['{name}']: expected shape (B, {size}) with B = {B} and "
                        f"{size} > 0, got {shape}"
                    )
                continue
            if name not in params:
                raise ValueError(
                    f"params: missing parameter '{name}' of shape {self._shape_text(name)}"
                )
            shape = np.shape(params[name])
            if len(shape) != len(self._shapes[name]) or shape[axis] == 0:
                raise ValueError(
                    f"params['{name}']: expected shape {self._shape_text(name)} with "
                    f"{size} > 0, got {shape}"
                )
        return self.spec.read_sizes(I, state0, params)

    def _shapes_for(self, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """param_shapes, kept per kernel (not in a global cache, which would keep it alive)."""
        key = tuple(sizes[n] for n in self.spec.all_sizes)
        shapes = self._shape_cache.get(key)
        if shapes is None:
            if len(self._shape_cache) >= 64:
                self._shape_cache.clear()
            extra = {n: sizes[n] for n in self.sizes}
            shapes = self._shape_cache[key] = self.param_shapes(sizes["I"], sizes["H"], **extra)
        return shapes

    def _check_input_size(self, I: int, sizes: dict[str, int], params: Arrays) -> None:
        """Blame xs, not the weights, when every weight of shape (H, I) agrees on another I."""
        found = {}
        for p in self.params:
            shape = self._shapes[p]
            if "I" in shape:
                got = np.shape(params[p])
                if len(got) != len(shape) or any(
                    n != sizes[d] for n, d in zip(got, shape, strict=True) if d != "I"
                ):
                    return  # this weight is wrong in another way: its own message says how
                found[p] = got[shape.index("I")]
        if found and len(set(found.values())) == 1 and I not in found.values():
            p, size = next(iter(found.items()))
            raise ValueError(
                f"xs: input size I = {I} does not match the weights: params['{p}'] has shape "
                f"{self._shape_text(p)} = {np.shape(params[p])}, so I = {size}; "
                f"pass xs of shape (T, B, I) = (T, B, {size})"
            )

    def _all_valid(self, state0, state_shapes, params, shapes, dtype) -> bool:
        """True when every state and parameter is present, well-shaped, of dtype (and, for C,
        contiguous), and nothing else is given; the slow path then finds and names a problem."""
        contiguous = self._contiguous
        if len(state0) != len(self.states) or len(params) != len(self.params):
            return False
        for arrays, names in ((state0, self.states), (params, self.params)):
            for name in names:
                a = arrays.get(name)
                shape = state_shapes[name] if arrays is state0 else shapes[name]
                if (
                    type(a) is not np.ndarray
                    or a.shape != shape
                    or a.dtype != dtype
                    or (contiguous and not a.flags.c_contiguous)
                ):
                    return False
        return True

    def _shape_text(self, param: str) -> str:
        return "(" + ", ".join(self._shapes[param]) + ")"

    def _dtype_of(self, name: str, arr: np.ndarray) -> np.dtype:
        allowed = self.input_dtypes
        if str(arr.dtype) not in allowed:
            raise ValueError(
                f"{name}: dtype {arr.dtype} is not supported by this {self.config.title} kernel; "
                f"expected {' or '.join(allowed)}"
            )
        return arr.dtype

    def _array(self, name, value, shape, shape_text, dtype) -> np.ndarray:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.shape != tuple(shape):
            raise ValueError(
                f"{name}: expected shape {shape_text} = {tuple(shape)}, got {arr.shape}"
            )
        if arr.dtype != dtype:
            raise ValueError(
                f"{name}: dtype {arr.dtype} does not match xs ({dtype}); "
                "pass every array in one dtype"
            )
        if self._contiguous and not arr.flags.c_contiguous:
            raise ValueError(
                f"{name}: the {self.config.title} kernel needs C-contiguous data; "
                f"pass np.ascontiguousarray({name})"
            )
        return arr
