"""`cellgen bench --infer`: C inference timed in C, one step per call and one call per sequence.

A timing driver (templates/bench_infer.c.jinja, rendered for the cell) is compiled with the
cell's C and the kernels' flags, and run once per size: it packs deterministic random weights,
then times T calls of one step each with the state carried (per-sample streaming, as an audio
plugin runs) and one call over all T steps, after a warm-up of each; the result is the median of
`rounds` samples. The samples are taken in rounds over all cases, each round running every case
once in a fresh driver process, so that a slow spell of a shared host (a case can run up to
twice as slow for a second or more) falls on every case alike instead of on whichever case runs
during it. Time is the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that on a shared
machine the time spent descheduled is not counted.

The bounds: multiply-adds per step over the machine's multiply-add rate, measured by the driver
(16 independent chains of vector FMAs, the widest the build targets); packed weight bytes per
step (every weight is read once per streaming step) over the read bandwidth of the cache level
that holds them, also measured by the driver (8 independent chains of vector loads over a buffer
of 16 KiB, 512 KiB or 8 MiB).

The cell's C comes from its kernel plan: any cell, built-in or from a file, whose generated
header declares the inference entry points.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .backends.c import build
from .bench import BenchError, _load_average, progress_line
from .cell import CellSpec
from .errors import CompileError
from .paths import cache_dir

DEFAULT_CELLS = ("lstm", "gru_reset_after")
DEFAULT_HIDDEN = (8, 16, 32, 64, 128)
DTYPES = ("float32", "float64")

# Issue 14's targets: RTNeural's best backend, float32, batch 1, per-sample streaming, in ns per
# step, measured on an Intel Xeon with AVX-512 (not this machine).
TARGETS: dict[tuple[str, str], tuple[float, ...]] = {
    ("lstm", "1"): (87, 72, 135, 594, 2112),
    ("lstm", "H"): (97, 87, 207, 1110, 3932),
    ("gru_reset_after", "1"): (75, 73, 133, 424, 1607),
    ("gru_reset_after", "H"): (77, 87, 185, 809, 3066),
}


@dataclass(frozen=True)
class Size:
    """Input size I, hidden size H and the values of a cell's declared sizes, by name."""

    I: int
    H: int
    declared: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Size:
        """'I1,H64' or '1x64', then any declared sizes: 'I1,H64,P32' (or P=32)."""
        parts = [part.strip() for part in text.split(",")]
        lead = 1 if "x" in parts[0].lower() else 2  # "1x64" or "I1,H64", then declared sizes
        head, rest = ",".join(parts[:lead]), parts[lead:]
        m = re.fullmatch(r"\s*I?(\d+)\s*[,x]\s*H?(\d+)\s*", head, re.I)
        named = [re.fullmatch(r"([A-Za-z_][A-Za-z_]*)=?(\d+)", part) for part in rest]
        if not m or not all(named) or min(int(m.group(1)), int(m.group(2))) < 1:
            raise BenchError(
                f"size '{text}': expected positive sizes I,H such as I1,H64, then any of the "
                "cell's declared sizes such as P32"
            )
        declared = tuple((n.group(1), int(n.group(2))) for n in named if n)
        if any(v < 1 for _, v in declared):
            raise BenchError(f"size '{text}': every size at least 1")
        return cls(int(m.group(1)), int(m.group(2)), declared)

    def __str__(self) -> str:
        return f"I{self.I},H{self.H}" + "".join(f",{n}{v}" for n, v in self.declared)

    def values(self) -> dict[str, int]:
        """{"I": ..., "H": ..., and each declared size}."""
        return {"I": self.I, "H": self.H, **dict(self.declared)}


def for_cell(spec: CellSpec, size: Size) -> Size:
    """The size as the cell takes it: its declared sizes in its order, H where not given (other
    names are for other cells); an input used elementwise needs I = H."""
    if spec.input_hidden and size.I != size.H:
        raise BenchError(
            f"size '{size}': {spec.name} uses its input elementwise, so I must equal H"
        )
    given = dict(size.declared)
    return Size(size.I, size.H, tuple((z, given.get(z, size.H)) for z in spec.sizes))


def default_sizes() -> list[Size]:
    return [Size(i, h) for h in DEFAULT_HIDDEN for i in (1, h)]


def target(cell: str, size: Size) -> float | None:
    """Issue 14's target in ns per step for this cell and size, if it names one."""
    kind = "1" if size.I == 1 else "H" if size.I == size.H else None
    if kind is None or (cell, kind) not in TARGETS or size.H not in DEFAULT_HIDDEN:
        return None
    return TARGETS[cell, kind][DEFAULT_HIDDEN.index(size.H)]


@dataclass(frozen=True)
class Row:
    """One cell, size and dtype: times in ns per step (medians), bounds and the target."""

    cell: str
    I: int
    H: int
    declared: str  # the cell's declared sizes, such as "P32" ("" for none)
    B: int
    T: int
    dtype: str
    weights: str  # "" (as dtype) or "bfloat16" (pack_bf16_f32)
    source: str  # "generated" or "prototype"
    stream_ns: float  # T calls of one step, state carried
    stream_min_ns: float
    sequence_ns: float  # one call over T steps
    sequence_min_ns: float
    steps_per_s: float  # streaming
    macs_per_step: int
    peak_fraction_stream: float
    peak_fraction_sequence: float
    mac_bound_ns: float
    weight_bytes: int  # packed weights: read once per streaming step
    weight_level: str  # the cache level that holds them: L1, L2 or L3
    bytes_bound_ns: float
    target_ns: float | None
    checksum: float


@dataclass
class Report:
    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    def json(self) -> str:
        return json.dumps({"meta": self.meta, "rows": [asdict(r) for r in self.rows]}, indent=1)

    def table(self) -> str:
        m = self.meta
        peaks = ", ".join(f"{k} {v:.1f}" for k, v in m["fma_macs_per_ns"].items())
        bws = ", ".join(f"{k} {v:.0f}" for k, v in m["read_bytes_per_ns"].items())
        lines = [
            f"cellgen bench --infer: B={m['B']}, T={m['T']}, median of {m['rounds']} samples "
            f"(thread CPU time); CPU {m['cpu']}; load average {m['load_average']}",
            f"multiply-add peak (measured, MAC/ns): {peaks}; read bandwidth (measured, B/ns): "
            f"{bws}",
            f"compiled: {m['compile']}",
            "target: issue 14's RTNeural ns/step (float32, B=1, streaming, Intel Xeon; "
            "not measured here)",
            "",
            f"{'cell':<16} {'I':>4} {'H':>4} {'dtype':<9} {'stream':>9} {'sequence':>9} "
            f"{'steps/s':>9} {'%peak':>6} {'MAC bound':>9} {'bytes bound':>15} {'target':>7}",
        ]
        for r in self.rows:
            tgt = f"{r.target_ns:7.0f}" if r.target_ns is not None else f"{'-':>7}"
            dtype = "bf16 w" if r.weights else r.dtype
            cell = f"{r.cell} {r.declared}" if r.declared else r.cell
            lines.append(
                f"{cell:<16} {r.I:>4} {r.H:>4} {dtype:<9} {r.stream_ns:9.1f} "
                f"{r.sequence_ns:9.1f} {r.steps_per_s:9.3g} {100 * r.peak_fraction_stream:6.1f} "
                f"{r.mac_bound_ns:9.1f} {r.bytes_bound_ns:9.1f} ({r.weight_level}) {tgt}"
            )
        lines.append("times in ns per step; %peak of streaming; bounds in ns per step")
        if any(r.weights for r in self.rows):
            lines.append("bf16 w: float32 arithmetic, weight matrices stored as bfloat16")
        return "\n".join(lines)


# sources and the driver ---------------------------------------------------------------------


def _render():
    from .backends import c as c_backend
    from .render import renderer

    return renderer(Path(c_backend.__file__).parent, "c")


@dataclass(frozen=True)
class Sources:
    """The C files of one driver build: name -> text, the files to compile, where from."""

    files: dict[str, str]
    compile: tuple[str, ...]
    source: str


def sources(cell: str | Path) -> Sources:
    """The cell's generated C with its infer functions, and the driver."""
    from .kernel import build_kernel
    from .registry import load_cell
    from .render import kernel_files

    spec = load_cell(cell)
    name = spec.name
    generated = kernel_files(build_kernel(spec))
    files = {f"{name}.c": generated[f"c/{name}.c"], f"{name}.h": generated[f"c/{name}.h"]}
    render = _render()
    types = (("double", "f64"), ("float", "f32"))
    prefix = f"cellgen_{name}"
    if f"{prefix}_infer_f32" not in files[f"{name}.h"]:
        raise BenchError(f"cell '{name}' has no C inference functions ({prefix}_infer_f32)")
    header, compile_, origin = f"{name}.h", (f"{name}.c",), "generated"
    size_of = dict(spec.symbol_sizes)

    def numbers(dims: Sequence[str]) -> str:
        """A C expression of the product of sizes, read from the driver's `d`."""
        return " * ".join("1" if z == "1" else f"d.{z}" for z in dims)

    files["driver.c"] = render(
        "bench_infer.c.jinja",
        prefix=prefix,
        header=header,
        params=[{"name": p.name, "numel": numbers(p.shape)} for p in spec.params],
        states=[{"name": st, "size": numbers([size_of[st]])} for st in spec.states],
        output_size=numbers([size_of[spec.output]]),
        declared=spec.sizes,
        size_args=", ".join(f"d.{z}" for z in ("I", "H", *spec.sizes)),
        declared_usage="".join(f" {z}" for z in spec.sizes),
        types=types,
    )
    return Sources(files, (*compile_, "driver.c"), origin)


def compile_flags() -> tuple[str, ...]:
    """The kernels' flags (codegen.backends.c.build), for an executable."""
    cc = build.compiler()
    flags = [f for f in build.FLAGS if f not in ("-fPIC", "-shared")]
    return (*flags, *build.tuning_flags(cc), *build.WARNINGS)


class Driver:
    """The compiled timing driver of one cell."""

    def __init__(self, cell: str | Path) -> None:
        self.cell = cell
        src = sources(cell)
        self.source = src.source
        cc = build.compiler()
        flags = compile_flags()
        key = hashlib.sha256(
            b"\0".join(
                [
                    *(f"{k}\0{v}".encode() for k, v in sorted(src.files.items())),
                    build.compiler_identity(cc).encode(),
                    " ".join(flags).encode(),
                    build.machine_identity().encode(),
                ]
            )
        ).hexdigest()[:24]
        out_dir = cache_dir() / "bench_infer"
        self.exe = out_dir / f"{Path(str(cell)).stem}-{key}"
        self.command = " ".join([cc, *flags])
        if self.exe.is_file():
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            work = Path(tmp)
            for rel, text in src.files.items():
                (work / rel).write_text(text, encoding="utf-8")
            target_path = work / self.exe.name
            cmd = [*shlex.split(cc), *flags, "-o", str(target_path)]
            cmd += [str(work / f) for f in src.compile] + ["-lm"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise CompileError(
                    f"compiling the infer bench driver failed ({' '.join(cmd)}):\n"
                    f"{result.stderr.strip()}"
                )
            os.replace(target_path, self.exe)

    def _run(self, *args: object) -> dict[str, list[float]]:
        result = subprocess.run(
            [str(self.exe), *map(str, args)], capture_output=True, text=True, timeout=3600
        )
        if result.returncode != 0:
            raise CompileError(f"the infer bench driver failed: {result.stderr.strip()}")
        out: dict[str, list[float]] = {}
        for line in result.stdout.splitlines():
            key, value = line.split()
            out.setdefault(key, []).append(float(value))
        return out

    def time(
        self, dtype: str, size: Size, B: int, T: int, rounds: int, weights: str = ""
    ) -> dict[str, list[float]]:
        """ns per step of each streaming and sequence sample; packed and work sizes; checksum.
        weights="bfloat16": float32 with the weight matrices stored as bfloat16."""
        extra = [v for _, v in size.declared]
        return self._run("time", weights or dtype, size.I, size.H, B, T, rounds, *extra)

    def peak(self) -> dict[str, float]:
        """Measured multiply-adds per ns (fma_f32, fma_f64) and read bytes per ns (read_l1..3)."""
        return {k: v[0] for k, v in self._run("peak").items()}

    def check(
        self,
        dtype: str,
        params: Sequence[np.ndarray],
        xs: np.ndarray,
        states: Sequence[np.ndarray],
        size: Size | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, list[np.ndarray]]:
        """ys and final states of one call over xs, then of T calls of one step each. size: I, H
        and the declared sizes (None: H from the first state, no declared sizes)."""
        from .registry import load_cell

        T, B, I = xs.shape
        size = size or Size(I, states[0].shape[1])
        spec = load_cell(self.cell)
        values = spec.size_values(I, size.H, **dict(size.declared))
        size_of = dict(spec.symbol_sizes)
        widths = [values[size_of[st]] for st in spec.states]
        out_width = values[size_of[spec.output]]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            with src.open("wb") as f:
                for a in (*params, xs, *states):
                    f.write(np.ascontiguousarray(a, dtype=dtype).tobytes())
            extra = [v for _, v in size.declared]
            self._run("check", dtype, I, size.H, B, T, src, dst, *extra)
            raw = np.fromfile(dst, dtype=dtype)
        half = T * B * out_width + B * sum(widths)
        if raw.size != 2 * half:
            raise CompileError(f"the infer bench driver wrote {raw.size} numbers, not {2 * half}")

        def split(part: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
            at = T * B * out_width
            finals = []
            for w in widths:
                finals.append(part[at : at + B * w].reshape(B, w))
                at += B * w
            return part[: T * B * out_width].reshape(T, B, out_width), finals

        seq_ys, seq_final = split(raw[:half])
        stream_ys, stream_final = split(raw[half:])
        return seq_ys, seq_final, stream_ys, stream_final


# machine ------------------------------------------------------------------------------------


@functools.cache
def cache_sizes() -> dict[str, int]:
    """Bytes of the L1 data, L2 and L3 caches of CPU 0 (Linux sysfs), with fallbacks."""
    sizes = {"L1": 32 << 10, "L2": 512 << 10, "L3": 8 << 20}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if m:
            scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
            sizes[f"L{level}"] = int(m.group(1)) * scale
    return sizes


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def weight_level(nbytes: int) -> str:
    sizes = cache_sizes()
    return "L1" if nbytes <= sizes["L1"] else "L2" if nbytes <= sizes["L2"] else "L3"


# the run ------------------------------------------------------------------------------------


def run(
    cells: Sequence[str | Path] = DEFAULT_CELLS,
    sizes: Sequence[Size] | None = None,
    dtypes: Sequence[str] = ("float32",),
    *,
    B: int = 1,
    T: int = 48000,
    rounds: int = 7,
    progress: TextIO | None = None,
    bfloat16: bool = False,
) -> Report:
    """Time every (cell, size, dtype); one report. bfloat16: also float32 with bfloat16 weight
    matrices, in a row after each float32 row."""
    from .registry import load_cell

    given = list(sizes) if sizes is not None else None
    for d in dtypes:
        if d not in DTYPES:
            raise BenchError(f"dtype '{d}': choose float32 or float64")
    if rounds < 1 or B < 1 or T < 1:
        raise BenchError("rounds, batch and steps: at least 1 each")
    specs = {c: load_cell(c) for c in cells}
    known = {z for spec in specs.values() for z in spec.sizes}
    for size in given or ():
        unknown = [n for n, _ in size.declared if n not in known]
        if unknown:
            have = ", ".join(sorted(known)) if known else "no sizes besides I and H"
            raise BenchError(f"size '{size}': {unknown[0]} is no size of these cells ({have})")
    per_cell = {c: _cell_sizes(specs[c], given) for c in cells}  # checked before any build
    drivers = {cell: Driver(cell) for cell in cells}
    peak = next(iter(drivers.values())).peak()
    macs = {"float32": peak["fma_f32"], "float64": peak["fma_f64"]}
    read = {level: peak[f"read_{level.lower()}"] for level in ("L1", "L2", "L3")}
    cases = [(c, s, d, "") for c in cells for s in per_cell[c] for d in dtypes]
    if bfloat16:  # a bfloat16-weights row after each float32 row
        with_bf16 = [[c, (*c[:3], "bfloat16")] if c[2] == "float32" else [c] for c in cases]
        cases = [c for pair in with_bf16 for c in pair]
    samples: list[dict[str, list[float]]] = [{} for _ in cases]
    with progress_line(progress) as show:
        for r in range(rounds):  # every case once per round: see the module's docstring
            for n, (cell, size, dtype, weights) in enumerate(cases):
                show(f"round {r + 1}/{rounds}: [{n + 1}/{len(cases)}] {cell} {size} "
                     f"{weights or dtype} ...")  # fmt: skip
                out = drivers[cell].time(dtype, size, B, T, 1, weights)
                for key, values in out.items():
                    samples[n].setdefault(key, []).extend(values)
    rows = [
        _row(cell, drivers[cell], size, dtype, B, T, samples[n], macs[dtype], read, weights)
        for n, (cell, size, dtype, weights) in enumerate(cases)
    ]
    meta = {
        "B": B,
        "T": T,
        "rounds": rounds,
        "cpu": cpu_name(),
        "cache_bytes": cache_sizes(),
        "fma_macs_per_ns": macs,
        "read_bytes_per_ns": read,
        "compile": next(iter(drivers.values())).command,
        "load_average": _load_average(),
        "command": " ".join(sys.argv) if sys.argv else "",
    }
    return Report(rows, meta)


def _cell_sizes(spec: CellSpec, given: list[Size] | None) -> list[Size]:
    """The sizes a cell is timed at: those given, or the defaults (I = H only for an input used
    elementwise), with the cell's declared sizes (H where not given)."""
    if given is None:
        given = [s for s in default_sizes() if s.I == s.H or not spec.input_hidden]
    return [for_cell(spec, s) for s in given]


def bfloat16_bytes(cell: str | Path, size: Size) -> int:
    """Bytes of pack_bf16_f32's weights: the header and vectors in float, the matrices in 16 bits
    (the plan's packed sizes with H and the declared sizes padded to 16 as inference pads them,
    each row's last panel padded to 32)."""
    from .kernel import build_kernel
    from .registry import load_cell

    subs = _substitutions(size)
    total = 16 * 4
    for part in build_kernel(load_cell(cell)).packed:
        numbers = int(part.size.subs(subs))
        if part.kind not in ("matrices", "fused"):
            total += 4 * numbers
            continue
        N = int(part.columns.subs(subs))  # columns: panels of 128, the last padded to 32
        total += 2 * numbers // N * (N - N % 128 + -(-(N % 128) // 32) * 32)
    return total


def _substitutions(size: Size) -> dict:
    """The plan's size symbols (I, H, declared sizes) and their paddings (Hp, ...) as numbers."""
    from .cell import size_symbol
    from .kernel import padded

    out: dict = {}
    for name, value in size.values().items():
        symbol = size_symbol(name)
        if padded(symbol) != symbol:  # I is not padded
            out[padded(symbol)] = -(-value // 16) * 16
        out[symbol] = value
    return out


def macs_per_row(cell: str | Path, size: Size) -> int:
    """Multiply-adds of one step of one row: every product of the plan, operand size times
    width (lstm: 4 H (I + H))."""
    from .kernel import build_kernel
    from .registry import load_cell

    plan = build_kernel(load_cell(cell))
    return int(sum(g.operand_size * g.width for g in plan.gemms).subs(_substitutions(size)))


def _row(cell, driver, size, dtype, B, T, out, mac_rate, read, weights="") -> Row:
    """One case's row from its samples (`out`: the driver's outputs of every round)."""
    from .registry import load_cell

    name = load_cell(cell).name
    macs = B * macs_per_row(cell, size)
    nbytes = int(out["packed_numbers"][0]) * (4 if dtype == "float32" else 8)
    if weights:
        nbytes = bfloat16_bytes(cell, size)
    level = weight_level(nbytes)
    stream = float(np.median(out["stream"]))
    sequence = float(np.median(out["sequence"]))
    return Row(
        cell=name,
        I=size.I,
        H=size.H,
        declared=",".join(f"{n}{v}" for n, v in size.declared),
        B=B,
        T=T,
        dtype=dtype,
        weights=weights,
        source=driver.source,
        stream_ns=stream,
        stream_min_ns=min(out["stream"]),
        sequence_ns=sequence,
        sequence_min_ns=min(out["sequence"]),
        steps_per_s=1e9 / stream,
        macs_per_step=macs,
        peak_fraction_stream=macs / stream / mac_rate,
        peak_fraction_sequence=macs / sequence / mac_rate,
        mac_bound_ns=macs / mac_rate,
        weight_bytes=nbytes,
        weight_level=level,
        bytes_bound_ns=nbytes / read[level],
        target_ns=target(name, size) if dtype == "float32" and B == 1 else None,
        checksum=out["checksum"][0],
    )


def parse_sizes(texts: Sequence[str]) -> list[Size]:
    return [Size.parse(t) for t in texts]
