"""Weights of PyTorch and ONNX recurrent layers as cellgen parameters, and back to PyTorch.

The frameworks stack their gates into one matrix each and differ in order and conventions:

    torch.nn.LSTM   weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,); gates i, f, g, o
    torch.nn.GRU    weight_ih (3H, I), weight_hh (3H, H), bias_ih, bias_hh (3H,); gates r, z, n
    ONNX LSTM       W (1, 4H, I), R (1, 4H, H), B (1, 8H) = [Wb, Rb], P (1, 3H) = [p_i, p_o, p_f];
                    gates i, o, f, c
    ONNX GRU        W (1, 3H, I), R (1, 3H, H), B (1, 6H) = [Wb, Rb]; gates z, r, h

Two biases that are only ever added become one parameter (b = b_ih + b_hh); GRU's b_hn stays
separate because the reset gate multiplies it. ONNX's GRU keeps the old state with weight z,
h' = (1 - z) ⊙ h̃ + z ⊙ h, like gru_reset_after; the `gru` cell keeps it with weight 1 - z.
Since 1 - σ(a) = σ(-a), the gru update gate is ONNX's with its weights and biases negated: an
exact mapping, not an approximation.

torch and onnx are optional: they are imported inside the functions that need them, never by
`import codegen`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import CellgenError

if TYPE_CHECKING:
    import onnx
    import torch

Params = dict[str, np.ndarray]

TORCH_LSTM_GATES = ("i", "f", "c", "o")  # torch calls the candidate g
TORCH_GRU_GATES = ("r", "z", "n")
ONNX_LSTM_GATES = ("i", "o", "f", "c")
ONNX_LSTM_PEEPHOLES = ("i", "o", "f")
ONNX_GRU_GATES = ("z", "r", "h")

# each cell's parameters in its declaration order (equations/<cell>.py)
LSTM_PARAMS = tuple(f"{m}_{g}" for m in "WUb" for g in "fico")
LSTMP_PARAMS = (*LSTM_PARAMS, "W_p")  # torch.nn.LSTM(proj_size=P): W_p is weight_hr
LSTM_PEEPHOLE_PARAMS = (*LSTM_PARAMS, "p_i", "p_f", "p_o")
LSTM_CIFG_PARAMS = tuple(f"{m}_{g}" for m in "WUb" for g in "ico")
GRU_PARAMS = tuple(f"{m}_{g}" for m in "WUb" for g in "zrh")
GRU_RESET_AFTER_PARAMS = ("W_r", "W_z", "W_n", "U_r", "U_z", "U_n", "b_r", "b_z", "b_in", "b_hn")


class InteropError(CellgenError, ValueError):
    """Weights that do not describe a single-layer, one-direction layer cellgen can run."""


class _CellAndParams(NamedTuple):
    cell: str
    params: Params


class Converted(_CellAndParams):
    """The cellgen cell that computes a framework layer's function, and its parameters
    (`cell, params = converted`); `direction` is the layer's: "forward", "reverse" (run the
    kernels with reverse=True) or "bidirectional" (params named for codegen.RNN)."""

    def __new__(cls, cell: str, params: Params, direction: str = "forward") -> Converted:
        self = super().__new__(cls, cell, params)
        self.direction = direction
        return self

    def __repr__(self) -> str:
        return f"Converted(cell={self.cell!r}, direction={self.direction!r}, params=...)"


# PyTorch -----------------------------------------------------------------------------------


def from_torch_lstm(module: torch.nn.Module) -> Params:
    """Parameters of `lstm` from a torch.nn.LSTM or LSTMCell: for one layer and one direction
    the cell's (W_f, ...); for more layers or two directions codegen.RNN's (l0.W_f,
    l0_reverse.W_f, l1.W_f, ...). With proj_size = P those of `lstmp`: the same twelve (U_* of
    shape (H, P)) and W_p = weight_hr (P, H); run them with P as lstmp's size.

    The arrays are copies in the module's dtype; b_g = bias_ih_g + bias_hh_g.
    """
    return _from_torch(module, "LSTM", 4, _lstm_from_torch)


def _lstm_from_torch(w_ih, w_hh, b_ih, b_hh, w_hr=None) -> Params:
    p = _split_gates(w_ih, w_hh, b_ih + b_hh, TORCH_LSTM_GATES)
    if w_hr is None:
        return _ordered(p, LSTM_PARAMS)
    p["W_p"] = w_hr.copy()
    return _ordered(p, LSTMP_PARAMS)


def to_torch_lstm(
    params: Mapping[str, np.ndarray], module: torch.nn.Module | None = None
) -> torch.nn.Module:
    """Write `lstm` parameters into a torch.nn.LSTM or LSTMCell (a new float64 LSTM if None),
    or `lstmp` parameters (with W_p) into a torch.nn.LSTM with proj_size (a new one with
    proj_size = W_p's rows if None).

    bias_ih takes b and bias_hh is zeroed: torch uses only their sum. Returns the module.
    """
    return _to_torch(params, module, "LSTM", 4, _lstm_to_torch)


def _lstm_to_torch(params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    projected = "W_p" in params
    if projected:
        p = _check_params(params, LSTMP_PARAMS, "lstmp")
    else:
        p = _check_params(params, LSTM_PARAMS, "lstm")
    b = _stack(p, "b", TORCH_LSTM_GATES)
    w_ih, w_hh = _stack(p, "W", TORCH_LSTM_GATES), _stack(p, "U", TORCH_LSTM_GATES)
    return (w_ih, w_hh, b, np.zeros_like(b)) + ((p["W_p"],) if projected else ())


def from_torch_gru(module: torch.nn.Module) -> Params:
    """Parameters of `gru_reset_after` from a torch.nn.GRU or GRUCell, named as from_torch_lstm
    names them (codegen.RNN's names for more layers or two directions).

    b_r and b_z are the sums of torch's two biases; b_in = bias_ih_n and b_hn = bias_hh_n.
    """
    return _from_torch(module, "GRU", 3, _gru_from_torch)


def _gru_from_torch(w_ih, w_hh, b_ih, b_hh) -> Params:
    H = w_hh.shape[1]
    p = _split_gates(w_ih, w_hh, b_ih + b_hh, TORCH_GRU_GATES)
    del p["b_n"]
    p["b_in"], p["b_hn"] = b_ih[2 * H :].copy(), b_hh[2 * H :].copy()
    return _ordered(p, GRU_RESET_AFTER_PARAMS)


def to_torch_gru(
    params: Mapping[str, np.ndarray], module: torch.nn.Module | None = None
) -> torch.nn.Module:
    """Write `gru_reset_after` parameters into a torch.nn.GRU or GRUCell (new float64 GRU if None).

    bias_ih = [b_r, b_z, b_in] and bias_hh = [0, 0, b_hn]. Returns the module.
    """
    return _to_torch(params, module, "GRU", 3, _gru_to_torch)


def _gru_to_torch(params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    p = _check_params(params, GRU_RESET_AFTER_PARAMS, "gru_reset_after")
    w_ih, w_hh = _stack(p, "W", TORCH_GRU_GATES), _stack(p, "U", TORCH_GRU_GATES)
    zero = np.zeros_like(p["b_hn"])
    b_ih = np.concatenate([p["b_r"], p["b_z"], p["b_in"]])
    b_hh = np.concatenate([zero, zero, p["b_hn"]])
    return w_ih, w_hh, b_ih, b_hh


def _torch_units(module: Any, kind: str) -> list[tuple[str, str]]:
    """(RNN prefix, torch suffix) of each layer and direction of a module, in torch's order:
    [("", "_l0")] for one layer and direction, [("", "")] for a cell."""
    layer, cell = _torch_classes(kind)
    if isinstance(module, layer):
        if module.num_layers == 1 and not module.bidirectional:
            return [("", "_l0")]
        directions = ("", "_reverse") if module.bidirectional else ("",)
        return [(f"l{k}{d}", f"_l{k}{d}") for k in range(module.num_layers) for d in directions]
    if isinstance(module, cell):
        return [("", "")]
    raise InteropError(
        f"expected a torch.nn.{kind} or torch.nn.{kind}Cell, got {type(module).__name__}"
    )


def _from_torch(module: Any, kind: str, gates: int, convert) -> Params:
    out: Params = {}
    for prefix, suffix in _torch_units(module, kind):
        params = convert(*_torch_weights(module, kind, gates, suffix))
        out.update({f"{prefix}.{k}" if prefix else k: v for k, v in params.items()})
    return out


def _to_torch(params: Mapping[str, Any], module: Any, kind: str, gates: int, convert) -> Any:
    """Write a cell's parameters, or codegen.RNN's (l0.W_f, ...), into a module of `kind`
    (a new float64 one, with as many layers and directions as the names say, if None)."""
    import torch

    prefixes = sorted({k.split(".")[0] for k in params if "." in k})
    stacked = {prefix: convert({k.split(".", 1)[1]: v for k, v in params.items()
                                if k.split(".")[0] == prefix}) for prefix in prefixes}  # fmt: skip
    arrays = stacked or {"": convert(params)}
    if module is None:
        layers = 1 + max((int(p[1:].split("_")[0]) for p in prefixes), default=0)
        two = any(p.endswith("_reverse") for p in prefixes)
        first = next(iter(arrays.values()))
        H, I = first[0].shape[0] // gates, _input_size(arrays)
        projection = {"proj_size": first[4].shape[0]} if len(first) > 4 else {}
        module = getattr(torch.nn, kind)(
            I, H, num_layers=layers, bidirectional=two, dtype=torch.float64, **projection
        )
    units = _torch_units(module, kind)
    wanted = sorted(prefix for prefix, _ in units)
    if sorted(arrays) != wanted:
        raise InteropError(
            f"params: the names give layers {sorted(arrays) or ['(one)']}, the module has "
            f"{wanted}: num_layers and bidirectional must match"
        )
    for prefix, suffix in units:
        _write_torch(module, kind, gates, suffix, *arrays[prefix])
    return module


def _input_size(arrays: Mapping[str, tuple[np.ndarray, ...]]) -> int:
    """The input size of the first layer: weight_ih's columns in layer 0."""
    first = arrays.get("l0", arrays.get(""))
    if first is None:
        raise InteropError("params: no layer 0 (l0.*) among the names")
    return first[0].shape[1]


def _torch_weights(module: Any, kind: str, gates: int, suffix: str) -> tuple[np.ndarray, ...]:
    """weight_ih, weight_hh, bias_ih, bias_hh of one layer and direction, as NumPy."""
    tensors = [getattr(module, f"weight_{k}{suffix}") for k in ("ih", "hh")]
    w_ih, w_hh = (t.detach().cpu().numpy().copy() for t in tensors)
    if module.bias:
        b_ih, b_hh = (
            getattr(module, f"bias_{k}{suffix}").detach().cpu().numpy().copy() for k in ("ih", "hh")
        )
    else:
        b_ih = b_hh = np.zeros(w_ih.shape[0], w_ih.dtype)
    if getattr(module, "proj_size", 0):  # weight_hr (P, H) projects h; weight_hh is (4H, P)
        w_hr = getattr(module, f"weight_hr{suffix}").detach().cpu().numpy().copy()
        return w_ih, w_hh, b_ih, b_hh, w_hr
    assert w_ih.shape[0] == gates * w_hh.shape[1]
    return w_ih, w_hh, b_ih, b_hh


def _write_torch(module: Any, kind: str, gates: int, suffix: str, *arrays: np.ndarray) -> None:
    """Copy weight_ih, weight_hh, bias_ih, bias_hh into one layer and direction of a module."""
    import torch

    w_ih, w_hh, b_ih, b_hh, *w_hr = arrays
    current = _torch_weights(module, kind, gates, suffix)
    if len(w_hr) != len(current) - 4:
        have = f"proj_size={getattr(module, 'proj_size', 0)}"
        raise InteropError(
            f"the torch.nn.{kind} has {have} but the parameters are "
            f"{'lstmp' if w_hr else 'lstm'}'s: pass W_p exactly when the module projects"
        )
    names = ("weight_ih", "weight_hh", "weight_hr")[: 2 + len(w_hr)]
    pairs = zip(names, (w_ih, w_hh, *w_hr), (*current[:2], *current[4:]), strict=True)
    for name, new, old in pairs:
        if new.shape != old.shape:
            raise InteropError(
                f"{name}: the parameters give shape {new.shape}, the module has {old.shape} "
                "(input_size and hidden_size must match, and proj_size for lstmp)"
            )
    targets = [("weight_ih", w_ih), ("weight_hh", w_hh), *(("weight_hr", w) for w in w_hr)]
    if module.bias:
        targets += [("bias_ih", b_ih), ("bias_hh", b_hh)]
    elif np.any(b_ih) or np.any(b_hh):
        raise InteropError(
            f"the torch.nn.{kind} has bias=False but the parameters' biases are not 0"
        )
    with torch.no_grad():
        for name, value in targets:
            tensor = getattr(module, name + suffix)
            tensor.copy_(torch.as_tensor(value, dtype=tensor.dtype, device=tensor.device))


def _torch_classes(kind: str) -> tuple[type, type]:
    import torch

    return getattr(torch.nn, kind), getattr(torch.nn, f"{kind}Cell")


def from_torch_layers(module: torch.nn.Module) -> list[Converted]:
    """The cell and parameters of every layer of a torch.nn.LSTM / GRU (any num_layers, one
    direction), or of an LSTMCell / GRUCell (one layer), bottom layer first.

    Layer k reads weight_ih_l{k} etc.; each converts as from_torch_lstm / from_torch_gru does:
    `lstm` (`lstmp` with proj_size = P: its output and h are P-sized, the next layer's input)
    or `gru_reset_after`. Dropout between layers is a training-time operation and
    plays no part here (the function of the module in eval mode).
    """
    import torch

    if isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell)):
        kind, gates = "LSTM", 4
    elif isinstance(module, (torch.nn.GRU, torch.nn.GRUCell)):
        kind, gates = "GRU", 3
    else:
        raise InteropError(
            f"expected a torch.nn.LSTM, GRU, LSTMCell or GRUCell, got {type(module).__name__}"
        )
    if isinstance(module, torch.nn.RNNBase):
        if module.bidirectional:
            projected = (
                f" with proj_size={module.proj_size}" if getattr(module, "proj_size", 0) else ""
            )
            raise InteropError(
                f"torch.nn.{kind}{projected} is bidirectional: cellgen runs one direction; "
                "export a unidirectional model"
            )
        suffixes = [f"_l{k}" for k in range(module.num_layers)]
    else:
        suffixes = [""]
    return [_torch_layer(module, kind, gates, suffix) for suffix in suffixes]


def _torch_layer(module: Any, kind: str, gates: int, suffix: str) -> Converted:
    """One layer's weights (those named with `suffix`) as a cellgen cell and parameters."""
    w_ih, w_hh, b_ih, b_hh, *w_hr = _torch_weights(module, kind, gates, suffix)
    if kind == "LSTM":
        return Converted(
            "lstmp" if w_hr else "lstm", _lstm_from_torch(w_ih, w_hh, b_ih, b_hh, *w_hr)
        )
    p = _split_gates(w_ih, w_hh, b_ih + b_hh, TORCH_GRU_GATES)
    H = w_hh.shape[1]
    del p["b_n"]
    p["b_in"], p["b_hn"] = b_ih[2 * H :].copy(), b_hh[2 * H :].copy()
    return Converted("gru_reset_after", _ordered(p, GRU_RESET_AFTER_PARAMS))


# ONNX --------------------------------------------------------------------------------------


def from_onnx_lstm(
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None = None,
    P: np.ndarray | None = None,
    *,
    input_forget: bool = False,
    direction: str = "forward",
) -> Converted:
    """The cell and parameters of an ONNX LSTM (default activations).

    Without P: `lstm`; with P: `lstm_peephole`; with input_forget: `lstm_cifg` (whose forget gate
    is 1 - i, so the f rows of W, R and B are unused; P must then be absent or zero).
    W (1, 4H, I), R (1, 4H, H), B (1, 8H), P (1, 3H); the leading num_directions axis may be
    left out. b_g = Wb_g + Rb_g. direction "forward" or "reverse" (run the kernels with
    reverse=True; ONNX's sequence_lens are their lengths); "bidirectional": W (2, 4H, I), ...,
    and the parameters of a one-layer bidirectional codegen.RNN (l0.W_f, l0_reverse.W_f, ...).
    """
    return _by_direction(direction, (W, R, B, P), lambda *a: _onnx_lstm(*a, input_forget))


def _onnx_lstm(W, R, B, P, input_forget: bool) -> Converted:
    W, R, H = _onnx_weights(W, R, 4, "LSTM")
    Wb, Rb = _onnx_bias(B, 4, H, W.dtype)
    p = _split_gates(W, R, Wb + Rb, ONNX_LSTM_GATES)
    if input_forget:
        if P is not None and np.any(_onnx_vector(P, 3 * H, "P")):
            raise InteropError(
                "P: the lstm_cifg cell has no peephole weights; an LSTM with input_forget=1 "
                "and nonzero P is not supported"
            )
        return Converted("lstm_cifg", _ordered(p, LSTM_CIFG_PARAMS))
    if P is None:
        return Converted("lstm", _ordered(p, LSTM_PARAMS))
    peep = np.split(_onnx_vector(P, 3 * H, "P"), 3)
    for gate, vector in zip(ONNX_LSTM_PEEPHOLES, peep, strict=True):
        p[f"p_{gate}"] = vector.copy()
    return Converted("lstm_peephole", _ordered(p, LSTM_PEEPHOLE_PARAMS))


def from_onnx_gru(
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None = None,
    *,
    linear_before_reset: int = 0,
    direction: str = "forward",
) -> Converted:
    """The cell and parameters of an ONNX GRU (default activations).

    linear_before_reset=0 (ONNX's default): `gru`, whose update gate is ONNX's z with weights and
    biases negated (1 - σ(a) = σ(-a)); linear_before_reset=1: `gru_reset_after`, gate for gate.
    W (1, 3H, I), R (1, 3H, H), B (1, 6H); the leading num_directions axis may be left out.
    `direction` as in from_onnx_lstm.
    """
    return _by_direction(direction, (W, R, B), lambda *a: _onnx_gru(*a, linear_before_reset))


def _by_direction(direction: Any, arrays: tuple, convert) -> Converted:
    """One direction's conversion, or both as a bidirectional codegen.RNN's parameters (ONNX
    stacks the directions on the first axis: forward, then reverse)."""
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction in ("forward", "reverse"):
        return Converted(*convert(*arrays), direction)
    if direction != "bidirectional":
        raise InteropError(
            f"direction '{direction}': expected 'forward', 'reverse' or 'bidirectional'"
        )
    params: Params = {}
    cell = ""
    for k, prefix in enumerate(("l0", "l0_reverse")):
        one = []
        for name, a in zip("WRBP", arrays, strict=False):
            a = None if a is None else np.asarray(a)
            if a is not None and (a.ndim < 2 or a.shape[0] != 2):
                raise InteropError(
                    f"{name}: a bidirectional layer has num_directions=2 as the first axis, "
                    f"got shape {a.shape}"
                )
            one.append(None if a is None else a[k : k + 1])
        cell, p = convert(*one)
        params.update({f"{prefix}.{n}": v for n, v in p.items()})
    return Converted(cell, params, "bidirectional")


def _onnx_gru(W, R, B, linear_before_reset: int) -> Converted:
    W, R, H = _onnx_weights(W, R, 3, "GRU")
    Wb, Rb = _onnx_bias(B, 3, H, W.dtype)
    if linear_before_reset:
        p = _split_gates(W, R, Wb + Rb, ONNX_GRU_GATES)
        rename = {"W_h": "W_n", "U_h": "U_n"}
        p = {rename.get(k, k): v for k, v in p.items() if k != "b_h"}
        p["b_in"], p["b_hn"] = Wb[2 * H :].copy(), Rb[2 * H :].copy()
        return Converted("gru_reset_after", _ordered(p, GRU_RESET_AFTER_PARAMS))
    p = _split_gates(W, R, Wb + Rb, ONNX_GRU_GATES)
    for m in "WUb":
        p[f"{m}_z"] = -p[f"{m}_z"]  # gru's z is ONNX's 1 - z
    return Converted("gru", _ordered(p, GRU_PARAMS))


def from_onnx_model(model: onnx.ModelProto | str | Path, node: str | None = None) -> Converted:
    """The cell and parameters of an LSTM or GRU node of an ONNX model, weights from initializers.

    `node` names the node; by default the model must hold exactly one LSTM or GRU. Its direction
    is the result's `direction` (see from_onnx_lstm); its sequence_lens, an input given when the
    model runs, are the kernels' (or codegen.RNN's) lengths. Attributes cellgen cannot honour
    (non-default activations, clip) raise InteropError.
    """
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    rnns = [n for n in graph.node if n.op_type in ("LSTM", "GRU") and n.domain in ("", "ai.onnx")]
    chosen = [n for n in rnns if node is None or n.name == node]
    if len(chosen) != 1:
        found = ", ".join(f"{n.op_type} '{n.name}'" for n in rnns) or "none"
        wanted = f"the node '{node}'" if node else "exactly one LSTM or GRU node"
        raise InteropError(f"expected {wanted} in the model; found {found}")
    (n,) = chosen
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    _check_onnx_attributes(n.op_type, attrs)
    inits = {t.name: t for t in graph.initializer}

    def tensor(index: int, label: str) -> np.ndarray | None:
        if index >= len(n.input) or not n.input[index]:
            return None
        name = n.input[index]
        if name not in inits:
            raise InteropError(
                f"{n.op_type} input {label} ('{name}') is not an initializer of the graph; "
                f"pass the arrays to from_onnx_{n.op_type.lower()} instead"
            )
        return numpy_helper.to_array(inits[name])

    W, R, B = tensor(1, "W"), tensor(2, "R"), tensor(3, "B")
    if W is None or R is None:
        raise InteropError(f"{n.op_type} node '{n.name}' has no W or R input")
    if "hidden_size" in attrs and attrs["hidden_size"] != R.shape[-1]:
        raise InteropError(
            f"hidden_size={attrs['hidden_size']} does not match R of shape {R.shape}"
        )
    direction = attrs.get("direction", "forward")
    if n.op_type == "GRU":
        lbr = attrs.get("linear_before_reset", 0)
        return from_onnx_gru(W, R, B, linear_before_reset=lbr, direction=direction)
    forget = bool(attrs.get("input_forget", 0))
    return from_onnx_lstm(W, R, B, tensor(7, "P"), input_forget=forget, direction=direction)


def check_onnx_node(node: onnx.NodeProto) -> dict[str, Any]:
    """The attributes of an ONNX LSTM or GRU node, after checking that cellgen can run it
    (direction "forward", the default activations, no clip); else InteropError."""
    import onnx

    if node.op_type not in ("LSTM", "GRU"):
        raise InteropError(f"node '{node.name}' is {node.op_type}, not an LSTM or GRU")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    _check_onnx_attributes(node.op_type, attrs)
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction != "forward":
        raise InteropError(
            f"{node.op_type} node '{node.name}' has direction={direction}: a node converts to "
            "one cell only in the forward direction"
        )
    return attrs


def from_onnx_node(node: onnx.NodeProto, values: Mapping[str, np.ndarray]) -> Converted:
    """The cell and parameters of one ONNX LSTM or GRU node, its inputs' arrays from `values`
    (input name -> array: initializers, or constants a caller has evaluated).

    Checks the attributes as from_onnx_model does (direction, activations, clip, hidden_size);
    the node's X, sequence_lens and initial states are the caller's business.
    """
    attrs = check_onnx_node(node)

    def tensor(index: int) -> np.ndarray | None:
        name = node.input[index] if index < len(node.input) else ""
        return np.asarray(values[name]) if name else None

    W, R, B = tensor(1), tensor(2), tensor(3)
    if W is None or R is None:
        raise InteropError(f"{node.op_type} node '{node.name}' has no W or R input")
    if "hidden_size" in attrs and attrs["hidden_size"] != R.shape[-1]:
        raise InteropError(
            f"{node.op_type} node '{node.name}': hidden_size={attrs['hidden_size']} does not "
            f"match R of shape {R.shape}"
        )
    if node.op_type == "GRU":
        return from_onnx_gru(W, R, B, linear_before_reset=attrs.get("linear_before_reset", 0))
    P = tensor(7) if len(node.input) > 7 else None
    return from_onnx_lstm(W, R, B, P, input_forget=bool(attrs.get("input_forget", 0)))


_ONNX_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


def _check_onnx_attributes(op: str, attrs: Mapping[str, Any]) -> None:
    activations = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    defaults = [a.lower() for a in _ONNX_ACTIVATIONS[op]]
    if activations and [a.lower() for a in activations] not in (defaults, defaults * 2):
        raise InteropError(
            f"{op} activations {activations}: only the defaults {_ONNX_ACTIVATIONS[op]} are "
            "supported"
        )
    if "clip" in attrs:
        raise InteropError(f"{op} clip={attrs['clip']}: clipped gates are not supported")


def _onnx_weights(W: Any, R: Any, gates: int, op: str) -> tuple[np.ndarray, np.ndarray, int]:
    """W (gates*H, I) and R (gates*H, H) without the num_directions axis, checked."""
    W, R = np.asarray(W), np.asarray(R)
    for name, arr in (("W", W), ("R", R)):
        if arr.ndim == 3:
            if arr.shape[0] != 1:
                raise InteropError(
                    f"{name} has num_directions={arr.shape[0]}: pass direction='bidirectional' "
                    f"for both directions, or {name}[0:1] for the forward one"
                )
        elif arr.ndim != 2:
            raise InteropError(
                f"{name}: expected shape (1, {gates}*H, ...) for the ONNX {op}, got {arr.shape}"
            )
    W, R = W.reshape(W.shape[-2:]), R.reshape(R.shape[-2:])
    H = R.shape[1]
    if R.shape != (gates * H, H):
        raise InteropError(f"R: expected shape (1, {gates}*H, H) for the ONNX {op}, got {R.shape}")
    if W.shape[0] != gates * H:
        raise InteropError(
            f"W: expected shape (1, {gates}*H, I) = (1, {gates * H}, I) with H={H} from R, "
            f"got {W.shape}"
        )
    return W, R, H


def _onnx_bias(B: Any, gates: int, H: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Wb and Rb, each (gates*H,); zeros when B is absent, as ONNX specifies."""
    if B is None:
        zero = np.zeros(gates * H, dtype)
        return zero, zero
    Wb, Rb = np.split(_onnx_vector(B, 2 * gates * H, "B"), 2)
    return Wb, Rb


def _onnx_vector(arr: Any, size: int, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape not in ((1, size), (size,)):
        raise InteropError(f"{name}: expected shape (1, {size}), got {arr.shape}")
    return arr.reshape(size)


# shared ------------------------------------------------------------------------------------


def _split_gates(
    w_x: np.ndarray, w_h: np.ndarray, b: np.ndarray, gates: Sequence[str]
) -> dict[str, np.ndarray]:
    """Stacked (G*H, ...) weights and a (G*H,) bias -> W_g, U_g, b_g for each gate g."""
    H = w_x.shape[0] // len(gates)
    out: dict[str, np.ndarray] = {}
    for k, g in enumerate(gates):
        rows = slice(k * H, (k + 1) * H)
        out[f"W_{g}"] = w_x[rows].copy()
        out[f"U_{g}"] = w_h[rows].copy()
        out[f"b_{g}"] = b[rows].copy()
    return out


def _stack(p: Mapping[str, np.ndarray], prefix: str, gates: Sequence[str]) -> np.ndarray:
    """<prefix>_g for each gate g, stacked in the order of `gates`: (G*H, ...)."""
    return np.concatenate([p[f"{prefix}_{g}"] for g in gates])


def _ordered(p: Mapping[str, np.ndarray], names: Sequence[str]) -> Params:
    """The parameters in the cell's declaration order."""
    return {name: p[name] for name in names}


def _check_params(params: Mapping[str, Any], names: Sequence[str], cell: str) -> Params:
    missing = [n for n in names if n not in params]
    unknown = sorted(set(params) - set(names))
    if missing or unknown:
        problem = f"missing '{missing[0]}'" if missing else f"unknown '{unknown[0]}'"
        raise InteropError(f"params: {problem}; {cell} has {', '.join(names)}")
    p = {n: np.asarray(params[n]) for n in names}
    H, I = p[names[0]].shape
    P = p["W_p"].shape[0] if "W_p" in p and p["W_p"].ndim == 2 else H  # lstmp's projection
    for n, v in p.items():
        expected = (H, I) if n.startswith("W_") else (H, P) if n.startswith("U_") else (H,)
        expected = (P, H) if n == "W_p" else expected
        if v.shape != expected:
            raise InteropError(f"params['{n}']: expected shape {expected}, got {v.shape}")
    return p
