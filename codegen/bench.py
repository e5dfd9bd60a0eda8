"""`cellgen bench`: the generated NumPy and C kernels against torch.nn.LSTM and torch.nn.GRU.

Every implementation runs the same problem (cell, shape, dtype, weights) in the same process.
Timings are taken in rounds: a round times each implementation and pass once, in an order that
rotates from round to round, so that a slow spell of the machine hits all of them alike. Before
each sample the bench pauses briefly and makes one untimed call: OpenBLAS and OpenMP worker
threads spin for a while after a call, and would otherwise slow down whichever runtime comes
next. A sample is the median of REPEATS timed repetitions, each the mean of enough back-to-back
calls to last `min_time`; a result is the median over the rounds, so that even one round is not
decided by a single stall. A row whose repetitions spread too widely (interquartile range over
median above UNSTEADY) is marked as not to be trusted.

GFLOP/s count the matrix products only (2 T B H K per product, three times that for forward and
backward, the steps of each row only with lengths); `% peak` divides by the speed of one large
matrix product in NumPy measured at the start of the same run. torch's forward is timed with
autograd recording, the forward that a backward needs, like ours.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import backends as backend_registry
from .errors import CellgenError
from .verify import Problem, random_problem

DEFAULT_CELLS = ("lstm", "gru_reset_after")
DEFAULT_SHAPES = ("T32,B32,I256,H256", "T64,B16,I128,H128", "T100,B1,I32,H32", "T1000,B1,I64,H64")
DTYPES = ("float32", "float64")
PASSES = ("forward", "forward+backward")
# with --lengths, forward+backward again with lengths: all T, and spread evenly over 1..T
LENGTH_PASSES = ("forward+backward lengths=T", "forward+backward lengths=1..T")
LABELS = dict(zip((*PASSES, *LENGTH_PASSES), ("fwd", "fwd+bwd", "L=T", "L=1..T"), strict=True))
TORCH_LAYERS = {"lstm": "LSTM", "gru_reset_after": "GRU"}  # cells that torch.nn computes
REPEATS = 3  # timed repetitions in each round's sample; the sample is their median
UNSTEADY = 0.25  # a row whose repetitions' interquartile range exceeds this of its median


class BenchError(CellgenError, ValueError):
    """A bench request that cannot run: a malformed shape, an unknown dtype or backend."""


@dataclass(frozen=True)
class Shape:
    """Sequence length T, batch B, input size I, hidden size H."""

    T: int
    B: int
    I: int
    H: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        """'T32,B32,I256,H256', '32,32,256,256' or '32x32x256x256'."""
        parts = [p for p in re.split(r"[,x\s]+", text.strip()) if p]
        values = []
        for part, letter in zip(parts, "TBIH", strict=False):
            m = re.fullmatch(rf"{letter}?(\d+)", part, re.I)
            if m:
                values.append(int(m.group(1)))
        if len(parts) != 4 or len(values) != 4 or min(values) < 1:
            raise BenchError(
                f"shape '{text}': expected four positive sizes T,B,I,H such as T32,B32,I256,H256"
            )
        return cls(*values)

    def __str__(self) -> str:
        return f"T{self.T},B{self.B},I{self.I},H{self.H}"


@dataclass(frozen=True)
class Row:
    """The timing of one implementation on one problem and pass."""

    cell: str
    shape: str
    dtype: str
    passes: str  # "forward" or "forward+backward"
    impl: str  # a backend's name, or "torch"
    median_ms: float
    min_ms: float
    rounds: int
    calls_per_sample: int
    gflops: float  # matrix-product GFLOP per second at the median
    peak_fraction: float  # gflops / the large-GEMM peak of this dtype
    torch_ratio: float | None  # median_ms / torch's median_ms, when torch ran
    max_rel_diff: float  # largest |ys - ys of the default backend (NumPy)| / largest |ys|
    spread: float = 0.0  # interquartile range / median of every timed repetition
    steady: bool = True  # spread <= UNSTEADY: else the timing is not to be trusted


@dataclass
class Report:
    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def table(self) -> str:
        """The rows as a fixed-width table, with the run's conditions above it."""
        m = self.meta
        peaks = ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in m["peak_gflops"].items())
        torch = m["torch"] or "not installed"
        if m["torch"] and not m.get("torch_run", True):
            torch += ", not run (--no-torch)"
        repeats = m.get("repeats", REPEATS)
        lines = [
            f"cellgen bench: median of {m['rounds']} interleaved rounds of {repeats} timed "
            "repetitions; ratio = ours / torch for the same pass, shape and dtype",
            f"large-GEMM peak (NumPy, {m['peak_size']}^3): {peaks}; "
            f"load average {m['load_average']}; torch {torch}",
            "",
            f"{'cell':<16} {'shape':<20} {'dtype':<8} {'pass':<8} {'impl':<6} "
            f"{'ms':>10} {'GFLOP/s':>8} {'%peak':>6} {'/torch':>7} {'spread':>7}",
        ]
        steady = {(r.cell, r.shape, r.dtype, r.passes, r.impl): r.steady for r in self.rows}
        for r in self.rows:
            ratio = f"{r.torch_ratio:7.2f}" if r.torch_ratio is not None else f"{'':>7}"
            trusted = r.steady and steady.get((r.cell, r.shape, r.dtype, r.passes, "torch"), True)
            lines.append(
                f"{r.cell:<16} {r.shape:<20} {r.dtype:<8} "
                f"{LABELS[r.passes]:<8} {r.impl:<6} "
                f"{r.median_ms:10.3f} {r.gflops:8.1f} {100 * r.peak_fraction:6.1f} {ratio} "
                f"{100 * r.spread:6.0f}%{'' if trusted else ' !'}"
            )
        if not all(steady.values()):
            lines.append(
                f"! the timed repetitions of this row (or of torch's, for its ratio) spread by "
                f"more than {100 * UNSTEADY:.0f}% of their median: not to be trusted; rerun with "
                "more --rounds, on a quieter machine"
            )
        return "\n".join(lines)


# problems and implementations ---------------------------------------------------------------


def spread_lengths(T: int, B: int) -> np.ndarray:
    """Lengths spread evenly over 1..T: the middles of B equal slices (T // 2 for B = 1)."""
    return np.ceil(T * (np.arange(B) + 0.5) / B).astype(np.int32)


class Ours:
    """A generated kernel (NumPy or C) as the timed calls."""

    def __init__(self, kernel: Any, p: Problem, lengths: np.ndarray | None = None) -> None:
        self.kernel, self.p, self.lengths = kernel, p, lengths

    def forward(self) -> np.ndarray:
        return self.kernel.forward(self.p.xs, self.p.state0, self.p.params)[0]

    def forward_backward(self) -> None:
        p = self.p
        cache = self.kernel.forward(p.xs, p.state0, p.params, lengths=self.lengths)[2]
        self.kernel.backward(p.dys, cache)


class Torch:
    """torch.nn.LSTM or torch.nn.GRU holding the same weights, on the same inputs."""

    def __init__(self, cell: str, p: Problem) -> None:
        import torch

        from . import interop

        I, H = p.xs.shape[2], p.dys.shape[2]
        dtype = torch.float32 if p.xs.dtype == np.float32 else torch.float64
        layer = getattr(torch.nn, TORCH_LAYERS[cell])(I, H, dtype=dtype)
        convert = interop.to_torch_lstm if cell == "lstm" else interop.to_torch_gru
        convert(p.params, layer)
        self.torch, self.layer = torch, layer
        self.xs = torch.from_numpy(p.xs).requires_grad_()
        states = [torch.from_numpy(p.state0[s][None].copy()).requires_grad_() for s in ("h", "c")
                  if s in p.state0]  # fmt: skip
        self.hx = tuple(states) if cell == "lstm" else states[0]
        self.dys = torch.from_numpy(p.dys)
        self.leaves = [self.xs, *states, *layer.parameters()]

    def forward(self) -> np.ndarray:
        with self.torch.enable_grad():
            ys, _ = self.layer(self.xs, self.hx)
        return ys.detach().numpy()

    def forward_backward(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None  # fresh gradients each call, as our backward returns
        ys, _ = self.layer(self.xs, self.hx)
        ys.backward(self.dys)


def torch_version() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return f"{torch.__version__} ({torch.get_num_threads()} threads)"


def product_flops(cell: str | Path, shape: Shape) -> int:
    """Floating-point operations of the forward's matrix products: 2 T B H K per product."""
    from .registry import load_cell

    spec = load_cell(cell)
    k = sum(shape.I if m.operand == spec.input else shape.H for m in spec.matmuls)
    return 2 * shape.T * shape.B * shape.H * k


@contextlib.contextmanager
def progress_line(stream: TextIO | None) -> Iterator[Callable[[str], None]]:
    """`show(text)` rewrites one progress line on `stream` (None: shows nothing); the line is
    cleared on any exit, so that an error is printed on a line of its own."""

    def show(text: str) -> None:
        if stream is not None:
            stream.write(f"\r{text}".ljust(73))
            stream.flush()

    try:
        yield show
    finally:
        if stream is not None:
            stream.write("\r" + " " * 72 + "\r")
            stream.flush()


# timing -------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], calls: int = 1) -> float:
    """Seconds per call over `calls` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_for(fn: Callable[[], object], min_time: float) -> int:
    """How many back-to-back calls make a sample of at least min_time (after a warm-up; the
    faster of two timed calls, so that one stall does not shrink every sample to one call)."""
    fn()
    once = min(timed(fn), timed(fn))
    return max(1, math.ceil(min_time / max(once, 1e-9)))


def sample(
    fn: Callable[[], object], calls: int, settle: float, repeats: int = REPEATS
) -> list[float]:
    """Seconds per call of `repeats` timed repetitions of `calls` back-to-back calls each,
    after a pause and one untimed call."""
    if settle:
        time.sleep(settle)
    fn()
    return [timed(fn, calls) for _ in range(repeats)]


def interleaved(
    tasks: dict[str, Callable[[], object]],
    rounds: int,
    min_time: float,
    settle: float,
    repeats: int = REPEATS,
) -> dict[str, tuple[list[list[float]], int]]:
    """Per task: the seconds per call of each round's repetitions, and the calls per sample."""
    calls = {name: calls_for(fn, min_time) for name, fn in tasks.items()}
    times: dict[str, list[list[float]]] = {name: [] for name in tasks}
    names = list(tasks)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(sample(tasks[name], calls[name], settle, repeats))
    return {name: (times[name], calls[name]) for name in names}


def summary(rounds: list[list[float]]) -> tuple[float, float, float]:
    """The median over rounds of each round's median repetition, the fastest repetition, and
    the spread: the interquartile range of every repetition over their median."""
    every = np.concatenate([np.asarray(r, float) for r in rounds])
    median = float(np.median([np.median(r) for r in rounds]))
    q1, q2, q3 = np.percentile(every, [25, 50, 75])
    return median, float(every.min()), float((q3 - q1) / q2) if q2 > 0 else math.inf


def gemm_peak(dtype: str, size: int, repeats: int = 5) -> float:
    """GFLOP/s of one large square matrix product in NumPy: the machine's practical peak."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty((size, size), dtype)
    np.matmul(a, b, out=out)
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(best)) / 1e9


# the run ------------------------------------------------------------------------------------


def run(
    cells: Sequence[str | Path] = DEFAULT_CELLS,
    shapes: Sequence[Shape] | None = None,
    dtypes: Sequence[str] = DTYPES,
    backends: Sequence[str] | None = None,
    *,
    rounds: int = 7,
    min_time: float = 0.02,
    settle: float = 0.05,
    with_torch: bool = True,
    peak_size: int = 1024,
    progress: TextIO | None = None,
    lengths: bool = False,
) -> Report:
    """Time every (cell, shape, dtype): our backends (all registered ones by default) and,
    where it exists, torch; one report. `lengths`: our forward+backward also with lengths,
    all T and spread over 1..T."""
    import codegen

    backends = backend_registry.names() if backends is None else tuple(backends)
    shapes = list(shapes) if shapes is not None else [Shape.parse(s) for s in DEFAULT_SHAPES]
    for d in dtypes:
        if d not in DTYPES:
            raise BenchError(f"dtype '{d}': choose float32 or float64")
    for b in backends:
        if b not in backend_registry.names():
            raise BenchError(f"backend '{b}': choose {' or '.join(backend_registry.names())}")
    if rounds < 1:
        raise BenchError("rounds: at least 1")
    torch_info = torch_version()
    torch_run = with_torch and torch_info is not None
    peak = {d: gemm_peak(d, peak_size) for d in dtypes}
    cases = [(c, s, d) for c in cells for s in shapes for d in dtypes]
    rows: list[Row] = []
    with progress_line(progress) as show:
        for n, (cell, shape, dtype) in enumerate(cases, 1):
            show(f"[{n}/{len(cases)}] {cell} {shape} {dtype} ...")
            rows += _case(cell, shape, dtype, backends, torch_run, peak[dtype],
                          rounds, min_time, settle, codegen, lengths)  # fmt: skip
    meta = {
        "rounds": rounds,
        "repeats": REPEATS,
        "unsteady_spread": UNSTEADY,
        "min_time_s": min_time,
        "settle_s": settle,
        "peak_size": peak_size,
        "peak_gflops": peak,
        "torch": torch_info,  # installed, run or not
        "torch_run": torch_run,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": _load_average(),
        "command": " ".join(sys.argv) if sys.argv else "",
    }
    return Report(rows, meta)


def _case(cell, shape, dtype, backends, with_torch, peak, rounds, min_time, settle, codegen,
          lengths=False):  # fmt: skip
    """The rows of one (cell, shape, dtype): every implementation and pass, interleaved."""
    reference = codegen.load(cell, dtype=dtype)  # the default backend
    sizes = {"T": shape.T, "B": shape.B, "I": shape.I, "H": shape.H}
    p = random_problem(reference, seed=0, sizes=sizes).astype(dtype)
    impls: dict[str, Any] = {}
    for backend in backends:
        impls[backend] = Ours(codegen.load(cell, backend, dtype), p)
    name = reference.name
    if with_torch and name in TORCH_LAYERS:
        impls["torch"] = Torch(name, p)
    expected = Ours(reference, p).forward()
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    diffs = {
        k: float(np.max(np.abs(impl.forward() - expected))) / scale for k, impl in impls.items()
    }
    tasks: dict[str, Callable[[], object]] = {}
    for k, impl in impls.items():
        tasks[f"{k}|forward"] = impl.forward
        tasks[f"{k}|forward+backward"] = impl.forward_backward
    spread_rows = spread_lengths(shape.T, shape.B)
    steps = {p: 1.0 for p in PASSES}  # the fraction of the T B row steps each pass runs
    for backend in backends if lengths else ():
        full = np.full(shape.B, shape.T)
        for passes, rows_lengths in zip(LENGTH_PASSES, (full, spread_rows), strict=True):
            ours = Ours(impls[backend].kernel, p, rows_lengths.astype(np.int32))
            tasks[f"{backend}|{passes}"] = ours.forward_backward
            steps[passes] = float(np.mean(rows_lengths)) / shape.T
    timings = interleaved(tasks, rounds, min_time, settle)
    flops = product_flops(cell, shape)
    summaries = {key: summary(ts) for key, (ts, _) in timings.items()}
    medians = {key: s[0] for key, s in summaries.items()}
    rows = []
    for key, (ts, calls) in timings.items():
        impl, passes = key.split("|")
        median, fastest, spread = summaries[key]
        total = flops * (1 if passes == "forward" else 3) * steps[passes]
        torch_key = f"torch|{passes}"
        rows.append(
            Row(
                cell=name,
                shape=str(shape),
                dtype=dtype,
                passes=passes,
                impl=impl,
                median_ms=median * 1e3,
                min_ms=fastest * 1e3,
                rounds=len(ts),
                calls_per_sample=calls,
                gflops=total / median / 1e9,
                peak_fraction=total / median / 1e9 / peak,
                torch_ratio=median / medians[torch_key] if torch_key in medians else None,
                max_rel_diff=diffs[impl],
                spread=spread,
                steady=spread <= UNSTEADY,
            )
        )
    order = {p: k for k, p in enumerate((*PASSES, *LENGTH_PASSES))}
    impl_order = {b: k for k, b in enumerate((*backend_registry.names(), "torch"))}
    return sorted(rows, key=lambda r: (order[r.passes], impl_order[r.impl]))


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def parse_shapes(texts: Iterable[str]) -> list[Shape]:
    return [Shape.parse(t) for t in texts]
