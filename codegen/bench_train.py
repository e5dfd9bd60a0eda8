"""`cellgen bench --torch-train`: one training step through codegen.torch.RNN, against the same
cell written as a Python loop of torch ops (what researchers write today) and torch.nn.LSTM/GRU.

A training step is forward and backward of the summed outputs, float32, batch-first nowhere:
x (T, B, H). Timings interleave the implementations round by round (bench.interleaved), and each
row gives the median milliseconds and the ratios to the loop and to torch.nn.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from .bench import (
    TORCH_LAYERS,
    BenchError,
    Shape,
    interleaved,
    progress_line,
    summary,
    torch_version,
)

DEFAULT_CELLS = ("lstm", "gru_reset_after")
DEFAULT_SHAPES = ("T100,B1,I32,H32", "T100,B16,I64,H64", "T64,B16,I128,H128", "T32,B32,I256,H256")


def loop_cell(cell: str | Path) -> Callable:
    """The cell as a researcher writes it in PyTorch: a Python loop over steps of torch ops,
    one per term of the equation file, differentiated by autograd.

    Returns step(x_t, state, params) -> new state, for tensors of shape (B, ·).
    """
    import sympy
    import torch

    from .registry import load_cell

    spec = load_cell(cell)
    functions = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "softsign": torch.nn.functional.softsign,
        "softplus": torch.nn.functional.softplus,
        "silu": torch.nn.functional.silu,
        "hard_sigmoid": lambda v: torch.clamp(v / 5 + 0.5, 0, 1),
    }
    products = {m.name: m for m in spec.matmuls}
    equations = []
    for eq in spec.equations:
        symbols = sorted(eq.expr.free_symbols, key=lambda s: s.name)
        fn = sympy.lambdify(symbols, eq.expr, modules=[functions])
        equations.append((eq, [s.name for s in symbols], fn))

    def step(x, state, params):
        env = {spec.input: x, **{f"{s}_prev": v for s, v in state.items()}, **params}
        new = {}
        for eq, names, fn in equations:
            for name in names:
                if name in products and name not in env:
                    m = products[name]
                    env[name] = env[m.operand] @ params[m.matrix].T
            env[eq.name] = fn(*[env[n] for n in names])
            if eq.state:
                new[eq.state] = env[eq.name]
        return new

    step.states = spec.states
    step.output = spec.output
    return step


def loop_forward(step: Callable, x, state0: dict, params: dict):
    """ys (T, B, H) and the final state, one step at a time."""
    import torch

    state, ys = state0, []
    for t in range(x.shape[0]):
        state = step(x[t], state, params)
        ys.append(state[step.output])
    return torch.stack(ys), state


@dataclass(frozen=True)
class TrainRow:
    cell: str
    shape: str
    impl: str  # "cellgen-c", "cellgen-numpy", "loop" or "torch.nn"
    ms: float
    spread: float  # the interquartile range of the repetitions over their median
    vs_loop: float | None
    vs_torch: float | None


def run(
    cells: Sequence[str | Path] = DEFAULT_CELLS,
    shapes: Sequence[Shape] | None = None,
    backends: Sequence[str] = ("c",),
    *,
    rounds: int = 5,
    min_time: float = 0.05,
    settle: float = 0.02,
    progress: TextIO | None = None,
) -> tuple[list[TrainRow], dict[str, Any]]:
    """Rows of median milliseconds per training step, and the run's conditions."""
    if torch_version() is None:
        raise BenchError("--torch-train needs torch: pip install 'cellgen[torch]'")
    shapes = list(shapes) if shapes is not None else [Shape.parse(s) for s in DEFAULT_SHAPES]
    rows: list[TrainRow] = []
    cases = [(c, s) for c in cells for s in shapes]
    with progress_line(progress) as show:
        for n, (cell, shape) in enumerate(cases, 1):
            show(f"[{n}/{len(cases)}] train {cell} {shape} ...")
            rows += _rows(cell, shape, _tasks(cell, shape, backends), rounds, min_time, settle)
    meta = {"rounds": rounds, "torch": torch_version(), "machine": platform.machine()}
    return rows, meta


def _rows(cell, shape: Shape, tasks: dict, rounds: int, min_time: float, settle: float):
    """The timed rows of one problem: each implementation against the loop and torch.nn."""
    times = interleaved(tasks, rounds, min_time, settle)
    summaries = {name: summary(t) for name, (t, _) in times.items()}
    medians = {name: s[0] for name, s in summaries.items()}
    native = medians.get("torch.nn")
    return [
        TrainRow(
            cell=str(cell),
            shape=str(shape),
            impl=name,
            ms=medians[name] * 1e3,
            spread=summaries[name][2],
            vs_loop=medians[name] / medians["loop"] if name != "loop" else None,
            vs_torch=medians[name] / native if native and name != "torch.nn" else None,
        )
        for name in times
    ]


def _tasks(cell: str | Path, shape: Shape, backends: Sequence[str]) -> dict[str, Callable]:
    """The training steps to time on one problem, by implementation."""
    import torch

    from .registry import load_cell
    from .torch import RNN

    spec = load_cell(cell)
    if spec.sizes or spec.input_hidden or spec.output not in spec.states:
        raise BenchError(
            f"bench --torch-train does not take {spec.name} yet (its torch loop knows I and H "
            f"only, and a state as output); time it with `cellgen bench {spec.name}`"
        )
    T, B, I, H = shape.T, shape.B, shape.I, shape.H
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    tasks: dict[str, Callable[[], None]] = {}
    modules = {b: RNN(cell, I, H, backend=b) for b in backends}
    for b, module in modules.items():
        tasks[f"cellgen-{b}"] = _step(lambda m=module: m(x)[0])
    first = next(iter(modules.values()))
    step = loop_cell(cell)
    params = {name.split(".", 1)[1]: p for name, p in first.cellgen_params().items()}
    zeros = {s: torch.zeros(B, H) for s in step.states}
    tasks["loop"] = _step(lambda: loop_forward(step, x, zeros, params)[0])
    layer = TORCH_LAYERS.get(str(cell))  # a built-in cell that torch computes too
    if layer is not None:
        native = getattr(torch.nn, layer)(I, H)
        tasks["torch.nn"] = _step(lambda: native(x)[0])
    return tasks


def _step(forward: Callable[[], Any]) -> Callable[[], None]:
    """One training step: forward, sum, backward."""

    def run_step() -> None:
        forward().sum().backward()

    return run_step


def table(rows: list[TrainRow]) -> str:
    lines = [
        "| cell | T,B,I,H | implementation | ms per step | spread | / loop | / torch.nn |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = [f"{v:.3g}" if v is not None else "" for v in (r.vs_loop, r.vs_torch)]
        lines.append(
            f"| {r.cell} | {r.shape} | {r.impl} | {r.ms:.3g} | {r.spread:.0%} | "
            f"{ratio[0]} | {ratio[1]} |"
        )
    return "\n".join(lines)


def as_json(rows: list[TrainRow], meta: dict[str, Any]) -> str:
    return json.dumps({"rows": [asdict(r) for r in rows], "meta": meta}, indent=1)
