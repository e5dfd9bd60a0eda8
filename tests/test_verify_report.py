"""cellgen verify's table (issue 15 item 12): aligned whatever the names, a summary per cell, a
legend (also in --help), FAIL values at equal precision, headers true to the method, and a word
when the complex step had to become Richardson."""

from __future__ import annotations

import re

from codegen.cli import parser
from codegen.verify import Row, report


def row(cell="mgu", backend="numpy", tensor="W_f", method="complex", verdict="PASS", **extra):
    values = dict(
        cell=cell,
        backend=backend,
        tensor=tensor,
        shape=(3, 4),
        method=method,
        max_abs=1e-16,
        max_rel=2e-16,
        tolerance=1e-13,
        verdict=verdict,
        worst=(),
        analytic=0.0,
        reference=0.0,
        noise=1e-17,
        projections=3,
        projection_rel=3e-16,
    )
    return Row(**{**values, **extra})


def body(text: str, cells: tuple[str, ...]) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(cells)]


def test_columns_stay_aligned_when_a_name_is_longer_than_its_column():
    rows = [
        row(cell="gru_reset_after", tensor="state0[h]"),
        row(cell="mgu", backend="c", method="richardson", tensor="a_very_long_tensor_name"),
    ]
    text = report.table(rows, seed=0)
    header = next(line for line in text.splitlines() if line.startswith("cell"))
    lines = body(text, ("gru_reset_after", "mgu "))
    assert len(lines) == 2
    for word in ("backend", "tensor", "dtype", "method", "verdict"):
        column = header.index(word)
        assert all(line[column - 1] == " " and line[column] != " " for line in lines), word
    assert {line.index("PASS") for line in lines} == {header.index("verdict")}


def test_each_cell_gets_a_summary_line_and_the_total_comes_last():
    rows = [row(cell="gru"), row(cell="gru", tensor="U_h", verdict="FAIL"), row(cell="mgu")]
    lines = report.table(rows, seed=0).splitlines()
    assert "-- gru: 1 passed, 1 failed, 0 inconclusive" in lines
    assert "-- mgu: 1 passed, 0 failed, 0 inconclusive" in lines
    assert lines.index("-- gru: 1 passed, 1 failed, 0 inconclusive") < lines.index(
        next(line for line in lines if line.startswith("mgu "))
    )
    assert lines[-1] == "2 passed, 1 failed, 0 inconclusive"


def test_the_legend_explains_the_columns_in_the_output_and_in_help():
    text = report.table([row()], seed=0)
    assert "noise" in report.LEGEND and "proj rel" in report.LEGEND and "tol" in report.LEGEND
    assert report.LEGEND in text
    verify_help = next(
        a for a in parser()._subparsers._actions if a.choices and "verify" in a.choices
    ).choices["verify"]
    flat = " ".join(verify_help.format_help().split())
    assert " ".join(report.LEGEND.split()) in flat


def test_a_fail_prints_both_values_at_the_same_precision():
    r = row(verdict="FAIL", worst=(1, 2), analytic=0.5, reference=0.123456789012345,
            location="W_f[1, 2]: gate f, row 1, column 2")  # fmt: skip
    line = body(report.table([r], seed=0), ("mgu ",))[0]
    analytic, reference = re.search(r"analytic (\S+) vs reference (\S+)", line).groups()
    assert float(analytic) == 0.5 and abs(float(reference) - 0.123456789012345) < 1e-10
    assert len(analytic) == len(reference)


def test_dot_and_taylor_headers_name_the_size_they_ran_at():
    size = "T=5 B=3 I=7 H=9"
    dot = report.table([row(method="dot", shape=(9, 7))], seed=0)
    first = dot.splitlines()[0]
    assert "dot-product" in first and size in first and "entry by entry" not in first
    taylor = row(method="taylor", max_abs=3e-9, max_rel=0.0, noise=0.0, projection_rel=None,
                 tolerance=0.2, rate=2.01, shape=(9, 7))  # fmt: skip
    text = report.table([taylor], seed=0)
    assert "Taylor" in text.splitlines()[0] and size in text.splitlines()[0]
    line = body(text, ("mgu ",))[0]
    assert "rate 2.01" in line and "3.0e-09" not in line and "0.0e+00" not in line


def test_complex_turned_richardson_is_said():
    rows = [row(), row(backend="c", method="richardson", tolerance=1e-10)]
    text = report.table(rows, seed=0, method="complex")
    notes = [line for line in text.splitlines() if "instead of complex" in line]
    assert len(notes) == 1 and "c:" in notes[0] and "numpy" not in notes[0]
    assert not [
        line
        for line in report.table(rows, seed=0).splitlines()  # the default: nothing was asked
        if "instead of" in line
    ]
