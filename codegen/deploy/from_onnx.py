"""An ONNX model whose graph is a chain of LSTM / GRU nodes, optionally followed by a dense layer
(MatMul + Add, or Gemm), as an export Model; onnx's reference evaluator, in float64, is the
reference.

Nothing here matches one exporter's node list. A value is *data* when it depends on the values
of the graph's input (a Shape of it depends only on its shape); the data values must form one
chain through the recurrent nodes, the dense layer and shape plumbing (Squeeze, Unsqueeze,
Transpose, Reshape, Slice, Flatten, Identity). Everything else (weights, initial states,
shape computations) is evaluated on a probe input, never matched by pattern. The result is
then checked: the graph and the chain of cellgen layers must agree on a random input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import interop
from ..interop import InteropError
from .model import Dense, Layer, Model, checked, rounded

RECURRENT = ("LSTM", "GRU")
PLUMBING = ("Identity", "Squeeze", "Unsqueeze", "Transpose", "Reshape", "Slice", "Flatten")
SHAPE_ONLY = ("Shape", "Size")  # their outputs depend on the input's shape, not its values
PROBE_T = 5


def from_onnx(path: str | Path, dtype: str) -> Model:
    """The chain of an ONNX file's graph, its weights rounded to `dtype` (held in float64)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises several kinds for unreadable files
        raise InteropError(f"cannot read the ONNX model {path}: {err}") from None
    graph = model.graph
    x = _data_input(graph)
    chain, data = _data_nodes(graph, x.name)
    for node in chain:
        if node.op_type in RECURRENT:
            interop.check_onnx_node(node)  # an unsupported attribute is named before probing
    first = next((n for n in chain if n.op_type in RECURRENT), None)
    if first is None:
        raise InteropError(f"the ONNX graph of {path} has no LSTM or GRU node on its input")
    evaluator = _Evaluator(_as_float64(model, dtype), x, first)
    layers, dense, output = _walk(chain, data, x.name, evaluator)
    if output not in [o.name for o in graph.output]:
        raise InteropError(
            f"the chain of the graph ends in '{output}', which is not an output of the graph"
        )

    def reference(xs: np.ndarray) -> np.ndarray:
        return evaluator.run(output, xs).reshape(xs.shape[0], -1)

    ops = ", ".join(n.op_type for n in chain)
    source = f"ONNX {Path(path).name} ({ops})"
    framework = f"onnx {onnx.__version__} (its reference evaluator)"
    return checked(Model(tuple(layers), dense, source, framework, reference))


def _data_input(graph: Any) -> Any:
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise InteropError(f"expected one input (the sequence) in the ONNX graph; found {names}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 3:
        raise InteropError(
            f"input '{inputs[0].name}' has {len(dims)} dimensions; expected 3: (T, B, I), or "
            "(B, T, I) for batch_first"
        )
    return inputs[0]


def _data_nodes(graph: Any, x: str) -> tuple[list, set[str]]:
    """The nodes that read data values, in the graph's (topological) order, and those values."""
    data, chain = {x}, []
    for node in graph.node:
        if node.op_type in SHAPE_ONLY:
            continue
        if any(name in data for name in node.input if name):
            data.update(name for name in node.output if name)
            chain.append(node)
    return chain, data


def _walk(
    chain: list, data: set[str], x: str, evaluator: _Evaluator
) -> tuple[list[Layer], Dense | None, str]:
    """The layers and dense head along the chain, and the name of its last value."""
    layers: list[Layer] = []
    dense: Dense | None = None
    current = x
    pending_bias = False  # a MatMul was seen: an Add may give its bias
    for node in chain:
        what = f"{node.op_type} node '{node.name}'"
        data_inputs = [name for name in node.input if name in data]
        if data_inputs != [current]:
            raise InteropError(
                f"{what} reads {', '.join(data_inputs)}: export follows one chain of values "
                f"(here '{current}'); final states and branches are not supported"
            )
        if node.op_type in RECURRENT:
            if dense is not None:
                raise InteropError(f"{what} comes after the dense layer; it must be last")
            layers.append(_recurrent(node, current, evaluator))
        elif node.op_type in ("MatMul", "Gemm"):
            if dense is not None:
                raise InteropError(f"{what}: a second dense layer is not supported")
            dense = _dense(node, current, evaluator)
            pending_bias = node.op_type == "MatMul"
            current = node.output[0]
            continue
        elif node.op_type == "Add" and pending_bias and dense is not None:
            other = next(name for name in node.input if name != current)
            bias = np.broadcast_to(evaluator.value(other), (dense.weight.shape[0],))
            dense = Dense(dense.weight, bias + dense.bias)
        elif node.op_type not in PLUMBING:
            raise InteropError(
                f"{what} is not supported: export takes a chain of LSTM / GRU nodes, "
                "optionally followed by one dense layer (MatMul + Add, or Gemm)"
            )
        pending_bias = False
        current = node.output[0]
    return layers, dense, current


def _recurrent(node: Any, current: str, evaluator: _Evaluator) -> Layer:
    what = f"{node.op_type} node '{node.name}'"
    if node.input[0] != current:
        raise InteropError(f"{what}: the sequence must be its input X")
    inputs = list(node.input) + [""] * (8 - len(node.input))
    if inputs[4]:
        raise InteropError(f"{what} has sequence_lens: export runs whole sequences")
    for index, label in ((5, "initial_h"), (6, "initial_c")):
        if inputs[index] and np.any(evaluator.value(inputs[index])):
            raise InteropError(
                f"{what}: {label} is not zero; export starts from the zero state (reset)"
            )
    values = {name: evaluator.value(name) for name in inputs[1:4] + inputs[7:8] if name}
    cell, params = interop.from_onnx_node(node, values)
    return Layer(cell, {k: np.asarray(v, np.float64) for k, v in params.items()})


def _dense(node: Any, current: str, evaluator: _Evaluator) -> Dense:
    what = f"{node.op_type} node '{node.name}'"
    if node.input[0] != current:
        raise InteropError(f"{what}: the sequence must be its first input")
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weight = evaluator.value(node.input[1])
    if weight.ndim != 2:
        raise InteropError(f"{what}: its weight has shape {weight.shape}; expected 2-D")
    if node.op_type == "MatMul":
        return Dense(weight.T.copy(), np.zeros(weight.shape[1]))
    if attrs.get("transA", 0):
        raise InteropError(f"{what} has transA=1: the sequence must not be transposed")
    weight = weight if attrs.get("transB", 0) else weight.T
    weight = float(attrs.get("alpha", 1.0)) * weight
    bias = np.zeros(weight.shape[0])
    if len(node.input) > 2 and node.input[2]:
        bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(
            evaluator.value(node.input[2]), bias.shape
        )
    return Dense(weight.copy(), bias.copy())


class _Evaluator:
    """onnx's reference evaluator on the float64 copy of the model. The layout of the input,
    (T, B, I) or (B, T, I), is the one under which the first recurrent node receives (T, 1, I);
    the values that do not depend on the input's values come from that probe run."""

    def __init__(self, model: Any, x: Any, first: Any) -> None:
        from onnx.reference import ReferenceEvaluator

        self._x = x.name
        self._evaluator = ReferenceEvaluator(model)
        dims = [
            d.dim_value if d.HasField("dim_value") else None for d in x.type.tensor_type.shape.dim
        ]
        if dims[2] is None:
            raise InteropError(f"input '{x.name}' has no fixed size on its last axis (I)")
        for axis in (0, 1):
            shape = [1, 1, dims[2]]
            shape[axis] = dims[axis] or PROBE_T
            if any(d is not None and d != s for d, s in zip(dims, shape, strict=True)):
                continue
            try:
                values = self._evaluator.run(None, {self._x: np.zeros(shape)}, intermediate=True)
            except Exception:  # this layout breaks the graph's shape computations
                continue
            if np.shape(values.get(first.input[0])) == (shape[axis], 1, dims[2]):
                self._values, self._batch_axis = values, 1 - axis
                return
        raise InteropError(
            f"input '{x.name}' of shape {dims}: no layout (T, 1, I) or (1, T, I) reaches "
            f"{first.op_type} node '{first.name}' as (T, 1, I)"
        )

    def run(self, name: str, xs: np.ndarray) -> np.ndarray:
        """The value `name` for the input sequence xs (T, I), as float64."""
        feed = np.expand_dims(np.asarray(xs, np.float64), self._batch_axis)
        (value,) = self._evaluator.run([name], {self._x: feed})
        return np.asarray(value, np.float64)

    def value(self, name: str) -> np.ndarray:
        """A value that does not depend on the input's values."""
        if name not in self._values:
            raise InteropError(f"cannot evaluate '{name}' of the ONNX graph")
        return np.asarray(self._values[name], np.float64)


def _as_float64(model: Any, dtype: str) -> Any:
    """A copy of the model computing in float64, its float tensors rounded to `dtype` first:
    initializers, Constant and ConstantOfShape values, Cast targets, declared types."""
    import onnx
    from onnx import TensorProto, numpy_helper

    floats = (TensorProto.FLOAT, TensorProto.DOUBLE)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph

    def widened(tensor: Any) -> Any:
        if tensor.data_type not in floats:
            return tensor
        array = rounded(numpy_helper.to_array(tensor), dtype)
        return numpy_helper.from_array(array, tensor.name)

    for k, tensor in enumerate(list(graph.initializer)):
        graph.initializer[k].CopyFrom(widened(tensor))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(widened(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    return copy
