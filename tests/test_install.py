"""A regular (non-editable) install in a fresh virtual environment works from anywhere."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import numpy as np, codegen, pathlib
assert "site-packages" in codegen.__file__, codegen.__file__
for backend in codegen.backends.names():
    k = codegen.load("lstm", backend=backend, dtype="float64")
    shapes = k.param_shapes(3, 4)
    rng = np.random.default_rng(0)
    params = {n: rng.normal(size=s) * 0.3 for n, s in shapes.items()}
    xs = rng.normal(size=(2, 1, 3))
    state0 = {"h": np.zeros((1, 4)), "c": np.zeros((1, 4))}
    ys, final, cache = k.forward(xs, state0, params)
    dxs, d0, dp = k.backward(np.ones_like(ys), cache)
    assert ys.shape == (2, 1, 4) and dxs.shape == xs.shape and set(dp) == set(shapes)
# a user's cell is generated from the installed templates (activation helpers included)
lines = [
    "from codegen.activations import silu, sigmoid",
    "from codegen.cell import Cell",
    "cell = Cell('smooth', description='d', reference='r')",
    "x = cell.input('x')",
    "(h_prev,) = cell.states('h')",
    "W, U = cell.matrices('W U')",
    "h = cell.update('h', silu(W @ x + U @ h_prev) * sigmoid(h_prev))",
]
pathlib.Path("smooth.py").write_text(chr(10).join(lines) + chr(10))
for backend in codegen.backends.names():
    k = codegen.load("smooth.py", backend=backend, dtype="float64")
    params = {n: np.full(s, 0.1) for n, s in k.param_shapes(3, 4).items()}
    ys, final = k.infer(np.ones((2, 1, 3)), {"h": np.zeros((1, 4))}, params)
    assert ys.shape == (2, 1, 4) and np.isfinite(ys).all()
print("ok")
"""


def test_pip_install_gives_a_working_package(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    cache = tmp_path / "cache"
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "CELLGEN_CACHE_DIR": str(cache),
           "HOME": str(tmp_path)}  # fmt: skip
    run = subprocess.run(
        [str(python), "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
    listed = subprocess.run(
        [str(env_dir / "bin" / "cellgen"), "list"], capture_output=True, text=True,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert listed.returncode == 0 and "lstm" in listed.stdout and "gru" in listed.stdout
    latex = subprocess.run(
        [str(env_dir / "bin" / "cellgen"), "latex", "gru"], capture_output=True, text=True,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r"\odot" in latex.stdout
    assert sys.version_info >= (3, 10)
