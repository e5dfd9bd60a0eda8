"""A backend defined here, inside the test suite, works end to end without any change to cellgen:
registered, generated, loaded, verified, and offered by the CLI's --backend.

The backend is the NumPy printer and loader under another name, "numpy_copy", with a copy of
the NumPy templates in a folder of its own, writing numpy_copy/<cell>.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import codegen
from codegen import backends
from codegen.backends import BackendConfig
from codegen.backends.numpy import printer
from codegen.cli import main
from codegen.load import import_generated
from codegen.paths import builtin_equations_dir
from codegen.verify import verify

from conftest import BACKENDS, make_problem


def files(kernel, render) -> dict[str, str]:
    return {
        f"numpy_copy/{kernel.cell.name}.py": render("kernel.py.jinja", **printer.context(kernel))
    }


def load(generated: Path, spec, dtype: str | None):
    return import_generated(generated / "numpy_copy" / f"{spec.name}.py")


@contextlib.contextmanager
def registered(folder: Path, name: str = "numpy_copy", complex_step: bool = True):
    shutil.copytree(backends.get("numpy").templates, folder / "templates", dirs_exist_ok=True)
    config = BackendConfig(
        name=name,
        folder=folder,
        files=files,
        load=load,
        description="the NumPy printer under another name",
        complex_step=complex_step,
    )
    backends.register(config)
    try:
        yield config
    finally:
        backends.unregister(name)


@pytest.fixture
def numpy_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_CACHE_DIR", str(tmp_path / "cache"))
    with registered(tmp_path / "backend") as config:
        yield config


@pytest.fixture
def gru_file(tmp_path) -> Path:
    path = tmp_path / "cells" / "gru.py"
    path.parent.mkdir()
    shutil.copy(builtin_equations_dir() / "gru.py", path)
    return path


def test_the_registry_lists_gets_and_refuses(numpy_copy):
    assert backends.names() == (*BACKENDS, "numpy_copy")
    assert backends.get("numpy_copy") is numpy_copy
    assert numpy_copy.templates == numpy_copy.folder / "templates"
    with pytest.raises(ValueError, match="already registered"):
        backends.register(numpy_copy)
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; choose one of .*numpy_copy"):
        backends.get("cuda")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        codegen.load("gru", "cuda")


def test_registration_does_not_outlive_its_context(tmp_path):
    before = backends.names()
    with registered(tmp_path):
        assert "numpy_copy" in backends.names()
    assert backends.names() == before and "numpy_copy" not in before


def test_generate_writes_its_files_from_its_own_templates(numpy_copy, gru_file, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "--equations", str(gru_file), "--out", str(out)]) == 0
    ours = (out / "numpy_copy" / "gru.py").read_text()
    theirs = (out / "numpy" / "gru.py").read_text()
    assert (out / "c" / "gru.c").is_file()
    # the same printer and templates: the same module, but for the template it names
    assert "numpy_copy/templates/kernel.py.jinja" in ours
    assert ours.replace("numpy_copy/templates", "numpy/templates") == theirs
    # its own folder's templates are the ones rendered
    template = numpy_copy.templates / "kernel.py.jinja"
    template.write_text(
        template.read_text().replace("import numpy as np", "import numpy as np  # X")
    )
    assert main(["generate", "--equations", str(gru_file), "--out", str(tmp_path / "o2")]) == 0
    assert "import numpy as np  # X" in (tmp_path / "o2" / "numpy_copy" / "gru.py").read_text()
    assert "# X" not in (tmp_path / "o2" / "numpy" / "gru.py").read_text()


@pytest.mark.parametrize("cell", ["gru", "file"])
def test_it_loads_and_computes_what_numpy_computes(numpy_copy, gru_file, cell, tmp_path):
    """A built-in cell (not shipped for this backend: generated into the cache) and a file."""
    where = "gru" if cell == "gru" else gru_file
    k = codegen.load(where, "numpy_copy")
    ref = codegen.load(where, "numpy")
    assert (k.backend, k.name, k.states, k.params) == ("numpy_copy", "gru", ref.states, ref.params)
    assert list((tmp_path / "cache" / "kernels").glob("gru-*/numpy_copy/gru.py"))
    xs, state0, params, dys, dfinal = make_problem(k)
    ys, final, cache = k.forward(xs, state0, params)
    ys_ref, final_ref, cache_ref = ref.forward(xs, state0, params)
    np.testing.assert_array_equal(ys, ys_ref)
    np.testing.assert_array_equal(final["h"], final_ref["h"])
    got, want = k.backward(dys, cache, dfinal), ref.backward(dys, cache_ref, dfinal)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1]["h"], want[1]["h"])
    for g, w in zip(got[2].values(), want[2].values(), strict=True):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="cache"):  # a cache belongs to its own backend
        k.backward(dys, cache_ref)


def test_verify_picks_its_method_from_the_capabilities(numpy_copy, tmp_path):
    rows = verify("gru", "numpy_copy")
    assert all(r.verdict == "PASS" and r.backend == "numpy_copy" for r in rows), rows
    assert {r.method for r in rows} == {"complex"}  # complex_step=True
    with registered(tmp_path / "real", name="numpy_real", complex_step=False):
        k = codegen.load("gru", "numpy_real")
        assert "complex128" not in k.input_dtypes
        xs, state0, params, _, _ = make_problem(k)
        with pytest.raises(ValueError, match="dtype complex128 is not supported"):
            k.forward(xs.astype(complex), state0, params)
        rows = verify("gru", "numpy_real")
    assert all(r.verdict == "PASS" for r in rows), rows
    assert {r.method for r in rows} == {"richardson"}  # the fallback without complex numbers


def test_the_cli_offers_and_runs_it(numpy_copy, capsys):
    assert main(["verify", "mgu", "--backend", "numpy_copy", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mgu = codegen.load("mgu")
    assert [r["tensor"] for r in rows] == ["xs", "state0[h]", *mgu.params]
    assert {r["backend"] for r in rows} == {"numpy_copy"}
    assert all(r["verdict"] == "PASS" for r in rows)
    argv = ["bench", "mgu", "--shapes", "T2,B1,I3,H4", "--dtype", "float64", "--rounds", "1"]
    assert main([*argv, "--backend", "numpy_copy", "--no-torch", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["impl"] for r in data["rows"]} == {"numpy_copy"}
    with pytest.raises(SystemExit):
        main(["verify", "mgu", "--backend", "numpy_kopy"])
    assert "numpy_copy" in capsys.readouterr().err  # argparse lists the choices
