"""The `cellgen` command line: list, generate, latex, verify, bench.

User errors (an unknown cell, a broken equation file, a missing compiler) print one line to
stderr and exit 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import backends as backend_registry
from .errors import CellgenError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cells(args: argparse.Namespace) -> list[str]:
    """The cells a command acts on: named ones and --equations files, else every built-in."""
    from .registry import builtin_cells, resolve

    cells = list(getattr(args, "cells", []) or []) + list(getattr(args, "equations", []) or [])
    for cell in cells:
        resolve(cell)  # an unknown name fails here, before any work
    return cells or builtin_cells()


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import builtin_cells, load_cell

    cells = [load_cell(c) for c in builtin_cells()]
    width = max(len(c.name) for c in cells)
    for cell in cells:
        print(f"{cell.name:<{width}}  {cell.description}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from .paths import builtin_generated_dir, checkout_root
    from .render import changed_files, diff, generate_files, write_files

    if args.out:
        out = Path(args.out)
    elif checkout_root() is not None:
        out = builtin_generated_dir()
    else:
        raise CellgenError(
            "cellgen is installed, not run from a checkout: say where to write with --out DIR"
        )
    files = generate_files(_cells(args))  # everything in memory first: errors write nothing
    if args.check:
        changed = changed_files(files, out)
        for rel in changed:
            print(f"would change: {out / rel}")
            if args.diff:
                print(diff(files, out, rel), end="")
        if changed:
            print(f"{len(changed)} generated file(s) out of date; run `cellgen generate`")
            return EXIT_FAIL
        print(f"{len(files)} generated file(s) up to date in {out}")
        return EXIT_OK
    written = write_files(files, out)
    for rel in written:
        print(f"wrote {out / rel}")
    print(f"{len(written)} file(s) written, {len(files) - len(written)} unchanged, in {out}")
    return EXIT_OK


def cmd_latex(args: argparse.Namespace) -> int:
    from .latex import backward_latex, document, forward_latex
    from .registry import load_cell

    if (args.cell is None) == (args.equations is None):
        raise CellgenError("latex: give one CELL or --equations PATH")
    cell = load_cell(args.equations or args.cell)
    print(f"% {cell.name}: {cell.description} ({cell.source})")
    if args.backward:
        print("% adjoints of one step: delta q = dL/dq; the in-adjoint of a state is")
        print("% dL/dy_t (for h) plus the adjoint arriving from step t+1; += sums over t.")
        print(document(backward_latex(cell)), end="")
    else:
        print(document(forward_latex(cell)), end="")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import report, verify

    backends = backend_registry.names() if args.backend == "all" else [args.backend]
    rows = []
    for cell in _cells(args):
        for backend in backends:
            rows += verify(cell, backend, seed=args.seed, method=args.method, dtype=args.dtype)
    print(report.as_json(rows) if args.json else report.table(rows, args.seed, args.method))
    return EXIT_OK if all(r.verdict == "PASS" for r in rows) else EXIT_FAIL


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULT_CELLS, DTYPES, parse_shapes, run

    report = run(
        cells=args.cells or DEFAULT_CELLS,
        shapes=parse_shapes(args.shapes) if args.shapes else None,
        dtypes=DTYPES if args.dtype == "all" else [args.dtype],
        backends=None if args.backend == "all" else [args.backend],
        rounds=args.rounds,
        with_torch=not args.no_torch,
        progress=sys.stderr,
        lengths=args.lengths,
    )
    print(report.json() if args.json else report.table())
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    from .verify.report import LEGEND

    p = argparse.ArgumentParser(
        prog="cellgen",
        description="Recurrent-cell kernels (NumPy and C, forward and backpropagation through "
        "time) generated from SymPy equations, with LaTeX and gradient verification.",
        epilog="A CELL is a built-in name (see `cellgen list`) or the path of an equation file.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("list", help="list the built-in cells")
    s.set_defaults(run=cmd_list)

    s = sub.add_parser("generate", help="regenerate kernels from equations (default: all cells)")
    s.add_argument("cells", nargs="*", metavar="CELL")
    s.add_argument("--equations", action="append", metavar="PATH", help="an equation file")
    s.add_argument("--out", metavar="DIR", help="write here instead of the checkout's generated/")
    s.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing out-of-date files"
    )
    s.add_argument("--diff", action="store_true", help="with --check, show unified diffs")
    s.set_defaults(run=cmd_generate)

    s = sub.add_parser("latex", help="print a cell's equations as LaTeX")
    s.add_argument("cell", metavar="CELL", nargs="?")
    s.add_argument("--equations", metavar="PATH", help="an equation file, instead of CELL")
    s.add_argument("--backward", action="store_true", help="print the derived adjoints")
    s.set_defaults(run=cmd_latex)

    s = sub.add_parser(
        "verify",
        help="check every gradient against derivatives of the forward (default: all cells)",
        description="Check every gradient tensor of the backward kernels against a derivative "
        "of the forward: one row per tensor with its worst error, the method's noise and a "
        "verdict PASS, FAIL or INCONCLUSIVE; a FAIL names the worst entry. Exit 0 only if "
        "every row passes.",
        epilog=LEGEND,
    )
    s.add_argument("cells", nargs="*", metavar="CELL")
    s.add_argument("--equations", action="append", metavar="PATH", help="an equation file")
    s.add_argument("--backend", choices=[*backend_registry.names(), "all"], default="all")
    s.add_argument(
        "--method",
        choices=["complex", "richardson", "central", "dot", "taylor"],
        default=None,
        help="complex step (default for NumPy), Richardson-extrapolated differences (default "
        "for C, and the fallback where complex arithmetic is impossible), plain central "
        "differences, the dot-product test, or the Taylor remainder test",
    )
    s.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="float32 kernels are checked against the float64 reference",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the test points and projections")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(run=cmd_verify)

    s = sub.add_parser(
        "bench",
        help="time the generated kernels against torch.nn.LSTM / GRU (default: lstm, "
        "gru_reset_after)",
        description="Time the generated NumPy and C kernels, forward and forward+backward, and "
        "torch.nn.LSTM / torch.nn.GRU on the same problems when torch is installed, interleaved "
        "in one run; report medians, GFLOP/s of the matrix products, the fraction of a "
        "large-GEMM peak measured in the same run, and the ratio ours / torch.",
    )
    s.add_argument("cells", nargs="*", metavar="CELL")
    s.add_argument(
        "--shapes",
        nargs="+",
        metavar="T,B,I,H",
        help="problem sizes such as T32,B32,I256,H256 (default: the four of the README)",
    )
    s.add_argument("--dtype", choices=["float32", "float64", "all"], default="all")
    s.add_argument("--backend", choices=[*backend_registry.names(), "all"], default="all")
    s.add_argument("--rounds", type=int, default=7, help="samples per timing (median)")
    s.add_argument("--no-torch", action="store_true", help="time our kernels only")
    s.add_argument(
        "--lengths",
        action="store_true",
        help="also time our forward+backward with lengths: all T (L=T) and spread over 1..T "
        "(L=1..T)",
    )
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(run=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except CellgenError as err:
        if args.debug:
            raise
        print(f"cellgen: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
