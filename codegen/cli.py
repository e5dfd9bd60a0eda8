"""The `cellgen` command line: list, generate, latex, sheet, verify, bench, export.

User errors (an unknown cell, a broken equation file, a missing compiler) print one line to
stderr and exit 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import backends as backend_registry
from .errors import CacheError, CellgenError, CompileError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


def _cells(args: argparse.Namespace) -> list[str]:
    """The cells a command acts on: named ones and --equations files, else every built-in."""
    from .registry import builtin_cells, resolve

    cells = list(getattr(args, "cells", []) or []) + list(getattr(args, "equations", []) or [])
    for cell in cells:
        resolve(cell)  # an unknown name fails here, before any work
    return cells or builtin_cells()


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import builtin_cells, description

    cells = builtin_cells()  # read, never run: listing executes no equation file
    width = max(map(len, cells))
    for cell in cells:
        print(f"{cell:<{width}}  {description(cell)}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from .paths import builtin_generated_dir, checkout_root
    from .registry import is_builtin, load_cell
    from .render import STAGE, changed_files, diff, generate_files, stray_files, write_files

    cells = _cells(args)
    if args.out:
        out = Path(args.out)
    elif checkout_root() is None:
        raise CellgenError(
            "cellgen is installed, not run from a checkout: say where to write with --out DIR"
        )
    else:
        own = next((c for c in cells if not is_builtin(c)), None)
        if own is not None:
            load_cell(own)  # a broken file says so first
            raise CellgenError(
                f"generate: {own} is not a cell of equations/, and generated/ holds only "
                "those; write its kernels into a directory of your own with --out DIR"
            )
        out = builtin_generated_dir()
    files = generate_files(cells)  # everything in memory first: errors write nothing
    whole_set = not (args.cells or args.equations)  # only then is every other file a stray
    strays = stray_files(files, out) if whole_set else []
    if args.check:
        changed = changed_files(files, out)
        for rel in changed:
            print(f"would change: {out / rel}")
            if args.diff:
                print(diff(files, out, rel), end="")
        _report_strays(strays, out, STAGE)
        if changed or strays:
            print(
                f"{len(changed)} generated file(s) out of date, {len(strays)} stray; "
                "run `cellgen generate`" + (" and delete the strays" if strays else "")
            )
            return EXIT_FAIL
        print(f"{len(files)} generated file(s) up to date in {out}")
        return EXIT_OK
    written = write_files(files, out)  # also completes a set an interrupted run left
    for rel in written:
        print(f"wrote {out / rel}")
    print(f"{len(written)} file(s) written, {len(files) - len(written)} unchanged, in {out}")
    _report_strays(stray_files(files, out) if whole_set else [], out, STAGE)
    return EXIT_OK


def _report_strays(strays: list[str], out: Path, stage: str) -> None:
    for rel in strays:
        why = (
            "left by an interrupted generate; `cellgen generate` completes it"
            if rel.startswith(stage + "/")
            else "no equation produces it; delete it"
        )
        print(f"stray: {out / rel} ({why})")


def cmd_latex(args: argparse.Namespace) -> int:
    from .latex import PACKAGES, backward_blocks, forward_blocks, paste, standalone
    from .registry import load_cell

    if (args.cell is None) == (args.equations is None):
        raise CellgenError("latex: give one CELL or --equations PATH")
    cell = load_cell(args.equations or args.cell)
    part = "backward" if args.backward else "forward"
    blocks = backward_blocks(cell) if args.backward else forward_blocks(cell)
    if args.standalone:
        heading = f"The {part} pass of {cell.name}"
        print(standalone(f"{cell.name}: {cell.description}", [(heading, blocks)]), end="")
        return EXIT_OK
    print(f"% {cell.name}, {part} pass: {cell.description} ({cell.source})")
    print(f"% paste into a document's body; needs \\usepackage{{{','.join(PACKAGES)}}}")
    print(paste(blocks), end="")
    return EXIT_OK


def cmd_sheet(args: argparse.Namespace) -> int:
    from .registry import load_cell
    from .sheet import write

    if (args.cell is None) == (args.equations is None):
        raise CellgenError("sheet: give one CELL or --equations PATH")
    cell = load_cell(args.equations or args.cell)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise CellgenError(f"sheet: no directory {out.parent} to write {out.name} into")
    for path in write(cell, out):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import report, verify

    backends = backend_registry.names() if args.backend == "all" else [args.backend]
    rows, failure = [], None
    for cell in _cells(args):
        for backend in list(backends):
            try:
                rows += verify(cell, backend, seed=args.seed, method=args.method, dtype=args.dtype)
            except (CompileError, CacheError) as err:
                if len(backends) == 1:
                    raise
                # no compiler or no cache: still show the other backends' rows, then say why
                failure, backends = err, [b for b in backends if b != backend]
    print(report.as_json(rows) if args.json else report.table(rows, args.seed, args.method))
    if failure is not None:
        raise failure
    return EXIT_OK if rows and all(r.verdict == "PASS" for r in rows) else EXIT_FAIL


def cmd_bench_infer(args: argparse.Namespace) -> int:
    from .bench_infer import DEFAULT_CELLS, DTYPES, parse_sizes, run

    report = run(
        cells=args.cells or DEFAULT_CELLS,
        sizes=parse_sizes(args.sizes) if args.sizes else None,
        dtypes=DTYPES if args.dtype == "all" else [args.dtype or "float32"],
        B=args.batch,
        T=args.steps,
        rounds=args.rounds,
        progress=sys.stderr,
        bfloat16=args.weights == "bfloat16",
    )
    print(report.json() if args.json else report.table())
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DEFAULT_CELLS, DTYPES, parse_shapes, run

    if args.infer:
        return cmd_bench_infer(args)

    if args.torch_train:
        from . import bench_train

        rows, meta = bench_train.run(
            cells=args.cells or bench_train.DEFAULT_CELLS,
            shapes=parse_shapes(args.shapes) if args.shapes else None,
            backends=backend_registry.names() if args.backend == "all" else [args.backend],
            rounds=args.rounds,
            progress=sys.stderr,
        )
        print(bench_train.as_json(rows, meta) if args.json else bench_train.table(rows))
        return EXIT_OK

    report = run(
        cells=args.cells or DEFAULT_CELLS,
        shapes=parse_shapes(args.shapes) if args.shapes else None,
        dtypes=DTYPES if args.dtype in ("all", None) else [args.dtype],
        backends=None if args.backend == "all" else [args.backend],
        rounds=args.rounds,
        with_torch=not args.no_torch,
        progress=sys.stderr,
        lengths=args.lengths,
    )
    print(report.json() if args.json else report.table())
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export

    paths = export(args.model, args.out, name=args.name, dtype=args.dtype)
    for path in paths:
        print(f"wrote {path}")
    print(f"{len(paths)} file(s) in {args.out}; build and test with `make -C {args.out} test`")
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

    s = sub.add_parser(
        "latex",
        help="print a cell's equations as LaTeX",
        description="Print a cell's forward equations (or, with --backward, its backward pass) "
        "as LaTeX to paste into the body of a document that loads the packages amsmath and "
        "amssymb: align* displays, which break across pages, and sentences between them. "
        "--standalone prints a whole document instead, for pdflatex as is.",
    )
    s.add_argument("cell", metavar="CELL", nargs="?")
    s.add_argument("--equations", metavar="PATH", help="an equation file, instead of CELL")
    s.add_argument(
        "--backward", action="store_true", help="the backward pass: backpropagation through time"
    )
    s.add_argument(
        "--standalone", action="store_true", help="a whole document (pdflatex compiles it as is)"
    )
    s.set_defaults(run=cmd_latex)

    s = sub.add_parser(
        "sheet",
        help="write a cell's derivation sheet (.html, .md, .tex or .pdf)",
        description="Write one page about a cell: description, parameters and shapes, a "
        "diagram, the forward equations, what the forward keeps, and the backward. The suffix "
        "of FILE picks the format: .html (one self-contained file, MathML and SVG), .md (math "
        "in $$ blocks as GitHub and Jupyter render them; the diagram goes beside it as .svg), "
        ".tex (a LaTeX document) or .pdf (needs pdflatex).",
    )
    s.add_argument("cell", metavar="CELL", nargs="?")
    s.add_argument("--equations", metavar="PATH", help="an equation file, instead of CELL")
    s.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")
    s.set_defaults(run=cmd_sheet)

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
    s.add_argument(
        "--dtype",
        choices=["float32", "float64", "all"],
        default=None,
        help="default: all; float32 with --infer",
    )
    s.add_argument("--backend", choices=[*backend_registry.names(), "all"], default="all")
    s.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="samples per timing (median); with --infer, taken in rounds over all cases, "
        "each round running every case once",
    )
    s.add_argument(
        "--infer",
        action="store_true",
        help="time C inference in C instead: per-sample streaming and whole sequences",
    )
    s.add_argument(
        "--sizes",
        nargs="+",
        metavar="I,H",
        help="with --infer: sizes such as I1,H64, then any declared sizes such as P32 "
        "(default: I=1 and I=H for H=8..128; a declared size not given is H)",
    )
    s.add_argument("--batch", type=int, default=1, help="with --infer: batch B (default 1)")
    s.add_argument(
        "--weights",
        choices=["float32", "bfloat16"],
        default="float32",
        help="with --infer: bfloat16 also times float32 with bfloat16 weight matrices",
    )
    s.add_argument("--steps", type=int, default=48000, help="with --infer: steps T (default 48000)")
    s.add_argument("--no-torch", action="store_true", help="time our kernels only")
    s.add_argument(
        "--torch-train",
        action="store_true",
        help="time one float32 training step through codegen.torch.RNN against the cell as a "
        "Python loop of torch ops and torch.nn.LSTM/GRU (shapes default to T100,B1,I32,H32 "
        "T100,B16,I64,H64 T64,B16,I128,H128 T32,B32,I256,H256)",
    )
    s.add_argument(
        "--lengths",
        action="store_true",
        help="also time our forward+backward with lengths: all T (L=T) and spread over 1..T "
        "(L=1..T)",
    )
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(run=cmd_bench)

    s = sub.add_parser(
        "export",
        help="an ONNX model (a chain of LSTM / GRU nodes, optionally a dense layer) as a C module",
        description="Write a standalone C99 module of a trained model: the weights as static "
        "const arrays, NAME_reset / NAME_step / NAME_run on a caller-owned state, a test "
        "against the framework's outputs, a Makefile and a CMakeLists.txt. torch modules "
        "(LSTM, projected LSTM with proj_size, GRU, their cells, an optional final Linear) are "
        "exported from Python: codegen.export(module, DIR).",
    )
    s.add_argument("model", metavar="MODEL.onnx")
    s.add_argument("--out", metavar="DIR", required=True, help="the folder to write")
    s.add_argument("--name", default="model", help="prefix of the C names and files")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.set_defaults(run=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        status = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        # the reader went away (`cellgen verify | head`): stop quietly, as `yes | head` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
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
