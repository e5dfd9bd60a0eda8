"""codegen.export round trips: torch and ONNX models to a C module, built with make (gcc under
AddressSanitizer and UndefinedBehaviorSanitizer, and clang, warnings as errors) and with cmake,
as C++17, then run: the generated test against the framework's outputs, and the compiled module
through ctypes against torch (or onnxruntime) on inputs the export never saw.

Each model is exported once per dtype (module-scoped fixtures); each build compiles the cell's
kernel file once.
"""

from __future__ import annotations

import copy
import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import codegen
from codegen import interop
from codegen.cli import main
from codegen.deploy import ExportError
from codegen.deploy.literals import c_literal
from codegen.interop import InteropError
from codegen.paths import checkout_root

STRICT = "-O2 -ffp-contract=off -Wall -Wextra -Wpedantic -Wdouble-promotion -Werror"
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1",
}
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # relative to the largest output
DTYPES = ("float32", "float64")


@dataclass
class Exported:
    """One exported model: its folder, and torch's (or onnxruntime's) function of it."""

    kind: str
    dtype: str
    folder: Path
    name: str
    model: object  # what was passed to export
    framework: object  # xs (T, I) float64 -> ys (T, O) float64, in the export's precision
    input_size: int
    output_size: int


def _torch_function(modules: list, dtype: str):
    """The modules' function on a batch-1 sequence, computed by torch in `dtype`."""
    mods = [copy.deepcopy(m).to(getattr(torch, dtype)).eval() for m in modules]

    def run(xs: np.ndarray) -> np.ndarray:
        h = torch.from_numpy(xs.astype(dtype))
        with torch.no_grad():
            for m in mods:
                if isinstance(m, torch.nn.RNNBase):
                    axis = 0 if m.batch_first else 1
                    h = m(h.unsqueeze(axis))[0].squeeze(axis)
                elif isinstance(m, (torch.nn.LSTMCell, torch.nn.GRUCell)):
                    state, out = None, []
                    for t in range(h.shape[0]):
                        state = m(h[t : t + 1], state)
                        out.append(state[0] if isinstance(state, tuple) else state)
                    h = torch.cat(out)
                else:
                    h = m(h)
        return h.numpy().astype(np.float64)

    return run


class _Stack(torch.nn.Module):
    def __init__(self, rnn, head):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _modules(kind: str) -> list:
    torch.manual_seed(7)
    if kind == "lstm2_linear":
        return [torch.nn.LSTM(3, 8, num_layers=2), torch.nn.Linear(8, 2)]
    if kind == "gru":
        return [torch.nn.GRU(4, 6, batch_first=True, bias=False)]
    if kind == "lstm_cell":
        return [torch.nn.LSTMCell(3, 5)]
    if kind == "gru_cell_linear":
        return [torch.nn.GRUCell(3, 5), torch.nn.Linear(5, 3, bias=False)]
    if kind == "lstmp2_linear":  # projected: each layer gives P = 4, its cell state is H = 8
        lstm = torch.nn.LSTM(3, 8, num_layers=2, proj_size=4, batch_first=True)
        return [lstm, torch.nn.Linear(4, 2)]
    if kind == "onnx_lstm_linear":
        return [torch.nn.LSTM(3, 6, num_layers=2, batch_first=True), torch.nn.Linear(6, 2)]
    raise AssertionError(kind)


def _onnx_file(modules: list, path: Path) -> Path:
    """torch.onnx.export (TorchScript exporter) of LSTM + Linear, batch-first, dynamic axes."""
    stack = _Stack(*modules).eval()
    x = torch.randn(1, 5, modules[0].input_size)
    torch.onnx.export(
        stack, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}},
    )  # fmt: skip
    return path


def _onnxruntime_function(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda xs: session.run(None, {"x": xs[None].astype(np.float32)})[0][0].astype(float)


KINDS = ("lstm2_linear", "lstmp2_linear", "gru", "lstm_cell", "gru_cell_linear", "onnx_lstm_linear")


@pytest.fixture(scope="module", params=[(k, d) for k in KINDS for d in DTYPES], ids=str)
def exported(request, tmp_path_factory) -> Exported:
    kind, dtype = request.param
    folder = tmp_path_factory.mktemp(f"{kind}_{dtype}")
    modules = _modules(kind)
    model: object = modules if len(modules) > 1 else modules[0]
    framework = _torch_function(modules, dtype)
    if kind.startswith("onnx"):
        model = _onnx_file(modules, folder.parent / f"{kind}_{dtype}.onnx")
        if dtype == "float32":
            framework = _onnxruntime_function(model)
    name = f"{kind}_net"
    codegen.export(model, folder / "out", name=name, dtype=dtype)
    first = modules[0]
    last = modules[-1]
    size = getattr(last, "proj_size", 0) or getattr(last, "hidden_size", 0)
    output = last.out_features if isinstance(last, torch.nn.Linear) else size
    return Exported(kind, dtype, folder / "out", name, model, framework, first.input_size, output)


def _make(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(folder), *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


def _copy(e: Exported, where: str) -> Path:
    target = e.folder.parent / where
    if not target.exists():
        shutil.copytree(e.folder, target)
    return target


def test_the_folder_holds_the_promised_files(exported):
    names = sorted(p.name for p in exported.folder.iterdir())
    n = exported.name
    expected = {f"{n}.h", f"{n}.c", f"{n}_test.c", "Makefile", "CMakeLists.txt", "README.md"}
    assert expected <= set(names)
    kernels = {p for p in names if p not in expected}
    assert kernels and all(p.endswith((".c", ".h")) for p in kernels)
    text = "".join((exported.folder / f).read_text() for f in names)
    assert "malloc" not in text and "#include <stdlib.h>" not in text
    assert str(Path(codegen.__file__).parent) not in text  # nothing refers back to cellgen


def test_make_test_gcc_under_asan_and_ubsan(exported):
    folder = _copy(exported, "gcc_sanitized")
    result = _make(
        folder, "test", "CC=gcc", f"CFLAGS={STRICT} -O1 {SANITIZE} -g", f"LDFLAGS={SANITIZE}",
        env=SANITIZER_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and "max abs error" in result.stdout
    assert "runtime error" not in result.stderr


def test_make_test_clang_strict(exported):
    folder = _copy(exported, "clang")
    result = _make(folder, "test", "CC=clang", f"CFLAGS={STRICT}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


@pytest.fixture(scope="module")
def library(exported) -> ctypes.CDLL:
    """The module as a shared library, with sizeof(NAME_state) exported for the caller."""
    folder = _copy(exported, "shared")
    n = exported.name
    (folder / "state_size.c").write_text(
        f'#include "{n}.h"\nsize_t state_size(void);\nsize_t state_size(void) '
        f"{{ return sizeof({n}_state); }}\n"
    )
    sources = [f for f in sorted(os.listdir(folder)) if f.endswith(".c") and f != f"{n}_test.c"]
    cmd = ["gcc", "-std=c99", *STRICT.split(), "-shared", "-fPIC", "-o", "lib.so", *sources, "-lm"]
    subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
    lib = ctypes.CDLL(str(folder / "lib.so"))
    lib.state_size.restype = ctypes.c_size_t
    for fn in ("reset", "step", "run"):
        getattr(lib, f"{n}_{fn}").restype = None
    return lib


def _run(e: Exported, lib, state: np.ndarray, xs: np.ndarray) -> np.ndarray:
    ys = np.full((xs.shape[0], e.output_size), np.nan, e.dtype)
    xs = np.ascontiguousarray(xs, e.dtype)
    getattr(lib, f"{e.name}_run")(
        state.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(xs.shape[0]),
        xs.ctypes.data_as(ctypes.c_void_p), ys.ctypes.data_as(ctypes.c_void_p),
    )  # fmt: skip
    return ys


def test_compiled_module_matches_the_framework_on_fresh_inputs(exported, library):
    e = exported
    rng = np.random.default_rng(2024)
    xs = (3.0 * rng.normal(size=(40, e.input_size))).astype(e.dtype).astype(np.float64)
    state = np.full(library.state_size(), 0xFF, np.uint8)  # garbage until reset
    getattr(library, f"{e.name}_reset")(state.ctypes.data_as(ctypes.c_void_p))
    ys = _run(e, library, state, xs)
    want = e.framework(xs)
    scale = np.max(np.abs(want))
    assert ys.shape == want.shape
    assert np.max(np.abs(ys - want)) <= TOLERANCE[e.dtype] * scale
    # the state carries over between calls: 17 steps then 23 give the same bits as 40
    getattr(library, f"{e.name}_reset")(state.ctypes.data_as(ctypes.c_void_p))
    parts = np.concatenate([_run(e, library, state, xs[:17]), _run(e, library, state, xs[17:])])
    assert parts.tobytes() == ys.tobytes()
    # ys may be NULL: the state still advances
    getattr(library, f"{e.name}_reset")(state.ctypes.data_as(ctypes.c_void_p))
    getattr(library, f"{e.name}_run")(
        state.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(17),
        np.ascontiguousarray(xs[:17], e.dtype).ctypes.data_as(ctypes.c_void_p), None,
    )  # fmt: skip
    assert _run(e, library, state, xs[17:]).tobytes() == ys[17:].tobytes()


def test_export_again_gives_identical_bytes(exported, tmp_path):
    codegen.export(exported.model, tmp_path, name=exported.name, dtype=exported.dtype)
    for path in exported.folder.iterdir():
        if path.is_file():
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in exported.folder.iterdir()
    )


@pytest.mark.parametrize(
    "kind", ["lstm2_linear", "lstmp2_linear", "gru", "lstm_cell", "onnx_lstm_linear"]
)
def test_cmake_ctest_and_cplusplus(kind, tmp_path_factory):
    modules = _modules(kind)
    folder = tmp_path_factory.mktemp(f"cmake_{kind}")
    model = _onnx_file(modules, folder / "m.onnx") if kind.startswith("onnx") else modules
    codegen.export(model, folder / "src", name="net")
    build = folder / "build"
    env = {**os.environ, "CFLAGS": "-Wall -Wextra -Wpedantic -Wdouble-promotion -Werror"}
    for cmd in (
        ["cmake", "-S", str(folder / "src"), "-B", str(build)],
        ["cmake", "--build", str(build)],
        ["ctest", "--test-dir", str(build), "--output-on-failure"],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "100% tests passed" in result.stdout
    # NAME.c as C++17 (g++), linked with the C kernels and the C test
    src = folder / "src"
    cells = [p.name for p in src.glob("*.c") if not p.name.startswith("net")]
    steps = [
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-x", "c++", "-c",
         "net.c", "-o", "net_cpp.o"],
        ["gcc", "-std=c99", *STRICT.split(), "-c", *cells, "net_test.c"],
        ["g++", "-o", "test_cpp", "net_cpp.o", "net_test.o", *[c[:-2] + ".o" for c in cells]],
        ["./test_cpp"],
    ]  # fmt: skip
    for cmd in steps:
        result = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, " ".join(cmd) + "\n" + result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_generated_test_fails_on_a_wrong_weight(tmp_path):
    """The generated test has teeth: one weight changed in NAME.c makes it fail."""
    modules = _modules("lstm_cell")
    codegen.export(modules[0], tmp_path, name="net")
    source = (tmp_path / "net.c").read_text()
    start = source.index("net_layer0[")
    first = source.index("\n", start) + 1
    literal = source[first:].split(",")[0].strip()
    wrong = c_literal(float(literal.rstrip("F")) + 0.01, "float32")
    (tmp_path / "net.c").write_text(source[:first] + source[first:].replace(literal, wrong, 1))
    result = _make(tmp_path, "test", f"CFLAGS={STRICT}")
    assert result.returncode != 0 and "FAIL" in result.stdout


def test_stack_use_is_small(tmp_path):
    """The deepest call path from NAME_run (through NAME_step, the kernel's infer and every
    function it calls, from gcc's call graph with each frame's size): under 2 KB with gcc -O3,
    the Makefile's default (as the folder's README says). C library calls (memset) count 0."""
    codegen.export(_modules("lstm2_linear"), tmp_path, name="net")
    subprocess.run(
        ["gcc", "-std=c99", "-O3", "-fcallgraph-info=su", "-c", "net.c", "lstm.c"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for ci in ("net.ci", "lstm.ci"):
        text = (tmp_path / ci).read_text()
        for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]+)"', text):
            size = re.search(r"(\d+) bytes \(([a-z,]+)\)", label)
            if size:
                assert "dynamic" not in size[2] or "bounded" in size[2], label
                frames[title] = int(size[1])
        for source, target in re.findall(r'sourcename: "([^"]+)" targetname: "([^"]+)"', text):
            calls.setdefault(source, set()).add(target)

    def depth(f: str) -> int:
        return frames.get(f, 0) + max((depth(g) for g in calls.get(f, ())), default=0)

    assert frames["cellgen_lstm_infer_f32"] > 0 and "cellgen_lstm_infer_f32" in calls["net_step"]
    assert depth("net_run") < 2048, (depth("net_run"), frames)


@pytest.mark.parametrize(
    "value",
    [
        0.1,
        -0.0,
        1e-45,
        1.17549435e-38,
        3.4028235e38,
        16777217.0,
        1 / 3,
        5e-324,
        1.7976931348623157e308,
    ],
)
def test_literals_read_back_exactly(value, tmp_path):
    rng = np.random.default_rng(0)
    f32 = np.concatenate([[value], rng.standard_normal(50) * 10.0 ** rng.integers(-40, 38, 50)])
    f32 = f32.astype(np.float32)
    f32 = f32[np.isfinite(f32)]
    f64 = np.concatenate([[value], rng.standard_normal(50) * 10.0 ** rng.integers(-300, 300, 50)])
    program = (
        "#include <stdio.h>\n#include <string.h>\n"
        f"static const float a[] = {{{', '.join(c_literal(v, 'float32') for v in f32)}}};\n"
        f"static const double b[] = {{{', '.join(c_literal(v, 'float64') for v in f64)}}};\n"
        "int main(void) { fwrite(a, sizeof a, 1, stdout); fwrite(b, sizeof b, 1, stdout); "
        "return 0; }\n"
    )
    (tmp_path / "p.c").write_text(program)
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Werror", "p.c", "-o", "p"], cwd=tmp_path, check=True
    )
    out = subprocess.run([str(tmp_path / "p")], capture_output=True, check=True).stdout
    assert out == f32.tobytes() + f64.astype(np.float64).tobytes()


def _onnx_graph(
    op: str, path: Path, after: str | None = None, initial_h: float = 0.0, **attrs
) -> Path:
    """A hand-built ONNX graph: one LSTM or GRU node with a constant initial_h, then Squeeze,
    then optionally another op (a Gemm of 2 outputs, or one without parameters)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    I, H, G = 3, 4, 4 if op == "LSTM" else 3
    inits = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, G * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, G * H, H)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (1, 2 * G * H)).astype(np.float32), "B"),
    ]
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    inits.append(numpy_helper.from_array(np.full((1, 1, H), initial_h, np.float32), "h0"))
    rnn_inputs = ["x", "W", "R", "B", "", "h0"]
    nodes = [helper.make_node(op, rnn_inputs, ["Y"], hidden_size=H, **attrs)]
    nodes.append(helper.make_node("Squeeze", ["Y", "axis"], ["Ys"]))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis"))
    out = "Ys"
    if after == "Gemm":
        w, b = rng.uniform(-1, 1, (2, H)), rng.uniform(-1, 1, (2,))
        inits.append(numpy_helper.from_array(w.astype(np.float32), "Wd"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), "bd"))
        nodes.append(helper.make_node("Flatten", ["Ys"], ["F"]))  # (T, 1, H) -> (T, H)
        nodes.append(helper.make_node("Gemm", ["F", "Wd", "bd"], ["Z"], transB=1))
        out = "Z"
    elif after:
        nodes.append(helper.make_node(after, ["Ys"], ["Z"]))
        out = "Z"
    if directions == 2:
        inits[0:2] = [
            numpy_helper.from_array(np.concatenate([numpy_helper.to_array(t)] * 2), t.name)
            for t in inits[0:2]
        ]
        inits[2] = numpy_helper.from_array(
            np.concatenate([numpy_helper.to_array(inits[2])] * 2), "B"
        )
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 1, I])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def test_onnx_gru_linear_before_reset_0_is_read_not_assumed(tmp_path):
    path = _onnx_graph("GRU", tmp_path / "gru.onnx", after="Gemm", linear_before_reset=0)
    codegen.export(path, tmp_path / "out", name="net", dtype="float64")
    assert (tmp_path / "out" / "gru.c").is_file()  # the reset-before cell, not torch's
    assert "#define net_OUTPUT_SIZE 2" in (tmp_path / "out" / "net.h").read_text()  # the Gemm
    result = _make(tmp_path / "out", "test", f"CFLAGS={STRICT}")
    assert result.returncode == 0 and "PASS" in result.stdout, result.stdout + result.stderr


def _bad_models(tmp_path: Path) -> list:
    return [
        (torch.nn.LSTM(3, 4, bidirectional=True), "bidirectional"),
        (
            torch.nn.LSTM(3, 4, proj_size=2, bidirectional=True),
            r"^torch\.nn\.LSTM with proj_size=2 is bidirectional: cellgen runs one direction; "
            r"export a unidirectional model; export takes recurrent layers and one final "
            r"torch\.nn\.Linear$",
        ),
        ([torch.nn.LSTM(3, 4), torch.nn.Conv1d(4, 4, 1)], "Conv1d"),
        ([torch.nn.Linear(3, 3), torch.nn.LSTM(3, 4)], "Linear"),
        ([torch.nn.LSTM(3, 4), torch.nn.GRU(5, 4)], "do not form a chain"),
        ([torch.nn.LSTM(3, 8, proj_size=4), torch.nn.GRU(8, 4)], "layer 0 gives 4: the layers"),
        ([torch.nn.LSTM(3, 8, proj_size=4), torch.nn.Linear(8, 2)], "last recurrent layer gives 4"),
        (torch.nn.Linear(3, 2), "no recurrent layer"),
        (_onnx_graph("LSTM", tmp_path / "bi.onnx", direction="bidirectional"), "bidirectional"),
        (_onnx_graph("GRU", tmp_path / "rev.onnx", direction="reverse"), "reverse"),
        (_onnx_graph("LSTM", tmp_path / "clip.onnx", clip=3.0), "clip"),
        (
            _onnx_graph("GRU", tmp_path / "act.onnx", activations=["Relu", "Tanh"]),
            "activations",
        ),
        (_onnx_graph("LSTM", tmp_path / "relu.onnx", after="Relu"), "Relu"),
        (_onnx_graph("GRU", tmp_path / "h0.onnx", initial_h=0.5), "initial_h is not zero"),
    ]


def test_projected_layers_convert_to_lstmp_as_from_torch_lstm_does():
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(3, 8, num_layers=2, proj_size=4)
    layers = interop.from_torch_layers(lstm)
    whole = interop.from_torch_lstm(lstm)  # l0.W_f, ..., l1.W_p
    assert [c.cell for c in layers] == ["lstmp", "lstmp"]
    for k, converted in enumerate(layers):
        assert sorted(converted.params) == sorted(interop.LSTMP_PARAMS)
        for name, value in converted.params.items():
            np.testing.assert_array_equal(value, whole[f"l{k}.{name}"])
    assert layers[1].params["W_f"].shape == (8, 4)  # layer 1 reads layer 0's P outputs
    assert layers[0].params["W_p"].shape == (4, 8)


def test_unsupported_models_raise_and_write_nothing(tmp_path):
    for model, words in _bad_models(tmp_path):
        out = tmp_path / "out"
        with pytest.raises(InteropError, match=words):
            codegen.export(model, out)
        assert not out.exists()


def test_bad_names_and_dtypes(tmp_path):
    lstm = torch.nn.LSTM(3, 4)
    for name in ("9lives", "with space", "_x", "test", "lstm"):
        with pytest.raises(ExportError, match="name"):
            codegen.export(lstm, tmp_path / "out", name=name)
    with pytest.raises(ExportError, match="dtype"):
        codegen.export(lstm, tmp_path / "out", dtype="float16")
    assert not (tmp_path / "out").exists()


def test_cli_export(tmp_path, capsys):
    path = _onnx_graph("LSTM", tmp_path / "m.onnx")
    assert main(["export", str(path), "--out", str(tmp_path / "out"), "--name", "m"]) == 0
    assert (tmp_path / "out" / "m.c").is_file()
    assert "make -C" in capsys.readouterr().out
    bad = _onnx_graph("LSTM", tmp_path / "bad.onnx", after="Relu")
    assert main(["export", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Relu" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_the_readme_example_exports_builds_and_runs(tmp_path, monkeypatch):
    """README "Deploying a trained model": the Python, `make test`, main.c and its build line,
    exactly as written; main's outputs against torch."""
    readme = (checkout_root() / "README.md").read_text()
    section = readme.split("## Deploying a trained model\n", 1)[1].split("\n## ", 1)[0]
    python = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)
    main_c = re.findall(r"```c\n(.*?)```", section, re.S)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(python, scope)
    for command in (shell[0], shell[1]):
        line = command.split("  #")[0].strip()
        if "main.c" in line:
            (tmp_path / "main.c").write_text(main_c)
        result = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, line + "\n" + result.stdout + result.stderr
    printed = np.array([float(v) for v in result.stdout.split()])
    x = torch.tensor([[[0.5, -1.0, 0.25]] * 5])
    with torch.no_grad():
        want = scope["head"](scope["lstm"](x)[0])[0, :, 0].numpy()
    assert printed.shape == (5,)
    assert np.max(np.abs(printed - want)) <= 2e-6  # printed to 6 decimals
