"""The intermediate representation: one truth between importers, passes, the artifact and the runtime.

A `Graph` is a list of `Layer` records in topological order. The first layer is always the
``input`` layer; every other layer names the layers it reads. Shapes exclude the batch axis and
use ``None`` for a sequence length that is not fixed.

Canonical weight layouts (the only place they are defined; importers convert into them):

========== =================== ==============================================================
kind       weight              layout
========== =================== ==============================================================
lstm       kernel              [I, 4H], gate blocks in order i, f, g (cell candidate), o
           recurrent_kernel    [H, 4H], same gate order
           bias                [4H]
           peephole            [3H] (optional), blocks i, f, o: i and f see c_{t-1}, o sees c_t
gru        kernel              [I, 3H], gate blocks in order z (update), r (reset), h
           recurrent_kernel    [H, 3H]
           bias                [3H], added to the input projection
           recurrent_bias      [3H]; with ``reset_after`` added to the recurrent projection
                               (h~ = act(x W_h + b_h + r * (h U_h + rb_h))), without it added
                               outside the reset gate (h~ = act(x W_h + b_h + (r * h) U_h + rb_h))
rnn        kernel, recurrent_kernel, bias: [I, H], [H, H], [H]
dense      kernel [I, O], bias [O]             (applied to the last axis)
conv1d     kernel [K, I, O], bias [O]
embedding  embeddings [V, D]
batch_norm scale [F], offset [F]               (y = x * scale + offset, folded at import)
layer_norm gamma [F], beta [F]
========== =================== ==============================================================

Quantized weights (`passes.quantize`): a weight named in `QUANTIZABLE` may be float16 (computed in
float32) or int8 with a float16 (or float32) companion ``<name>_scale``: one scale per output column ([N] for a
[.., N] matrix; [V, 1], one per row, for an embedding table) or one for the tensor ([1]); the
float value is ``values * scale``. Any other float weight may be float16. A layer with int8 matrices
may carry ``input_range`` (> 0): the largest magnitude, on calibration data, of the rows its input
matrix multiplies, which fixes their 8-bit scale; without it they are scaled per row at run time.
(Files written before 8-bit rows hold ``input_scale``, that range / 2047; reading converts it.)

LSTM attributes beyond Keras's (ONNX has them): ``output_activation`` applied to the cell state
for h (Keras: the same as ``activation``), ``clip`` > 0 bounding every gate pre-activation,
``input_forget`` coupling the forget gate to 1 - input gate.

Recurrent semantics follow Keras: ``go_backwards`` processes the sequence reversed and returns
outputs in processing order; a masked step carries state and output forward (or outputs zeros
when ``zero_output_for_mask``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import numpy as np

from .errors import FormatError, ShapeError

ACTIVATIONS = (
    "linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "swish",
    "softplus", "hard_sigmoid", "hard_sigmoid_legacy", "log_softmax",
)
"""Activation names of the IR. ``hard_sigmoid`` is Keras 3's clip(x/6 + 1/2, 0, 1);
``hard_sigmoid_legacy`` is Keras 2's clip(0.2x + 1/2, 0, 1). ``gelu`` is the exact (erf) form.
``softmax`` and ``log_softmax`` work over the last axis."""

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")  # importers join sub-layer names with "/"


@dataclasses.dataclass
class Layer:
    """One node of the graph: its kind, the layers it reads, attributes and named weights."""

    name: str
    kind: str
    inputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    shape: tuple | None = None  # output shape without the batch axis, set by `validate`

    def param_count(self) -> int:
        """Weights the model learned: int8 scales are not counted."""
        scales = scale_names(self)
        return int(sum(w.size for name, w in self.weights.items() if name not in scales))

    def nbytes(self) -> int:
        return int(sum(w.nbytes for w in self.weights.values()))


@dataclasses.dataclass
class Graph:
    """A model: layers in topological order, the first being ``input``, and the output's name."""

    layers: list[Layer]
    output: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def input(self) -> Layer:
        return self.layers[0]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_json(self) -> str:
        """The graph without tensor data: weights are listed by name only."""
        return json.dumps({
            "layers": [
                {"name": l.name, "kind": l.kind, "inputs": l.inputs, "attrs": l.attrs,
                 "weights": sorted(l.weights)}
                for l in self.layers
            ],
            "output": self.output,
            "metadata": self.metadata,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, tensors: dict[str, np.ndarray]) -> "Graph":
        """Rebuild a graph from `to_json` text and tensors named ``layer/weight``; validates it."""
        try:
            doc = json.loads(text)
            layers = [
                Layer(name=str(d["name"]), kind=str(d["kind"]), inputs=[str(i) for i in d["inputs"]],
                      attrs=_upgraded_attrs(d["attrs"]),
                      weights={str(w): tensors[f"{d['name']}/{w}"] for w in d["weights"]})
                for d in doc["layers"]
            ]
            graph = cls(layers=layers, output=str(doc["output"]), metadata=dict(doc["metadata"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise FormatError(f"the model graph is malformed ({type(exc).__name__}: {exc})") from None
        used = {f"{l.name}/{w}" for l in graph.layers for w in l.weights}
        extra = sorted(set(tensors) - used)
        if extra:
            raise FormatError(f"the file holds tensors no layer uses: {', '.join(extra[:5])}")
        validate(graph, error=FormatError)
        return graph


_LEGACY_ROW_QMAX = 2047  # the rows' 12-bit range when files held input_scale


def _upgraded_attrs(attrs: dict) -> dict:
    """A layer's attributes as this version names them: a 12-bit ``input_scale`` becomes ``input_range``."""
    attrs = dict(attrs)
    if "input_scale" in attrs and "input_range" not in attrs:
        scale = attrs.pop("input_scale")
        attrs["input_range"] = scale * _LEGACY_ROW_QMAX if isinstance(scale, (int, float)) else scale
    return attrs


RECURRENT_KINDS = ("lstm", "gru", "rnn")
QUANTIZABLE = {"lstm": ("kernel", "recurrent_kernel"), "gru": ("kernel", "recurrent_kernel"),
               "rnn": ("kernel", "recurrent_kernel"), "dense": ("kernel",), "conv1d": ("kernel",),
               "embedding": ("embeddings",)}
SCALE_SUFFIX = "_scale"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MERGE_OPS = ("add", "multiply", "average", "concatenate")
POOL_OPS = ("max", "average")
MAX_REPEAT = 1 << 20


def scale_shapes(kind: str, shape: tuple) -> tuple[tuple, tuple]:
    """(per-channel, per-tensor) shapes of the scale of an int8 weight of `shape` in a `kind` layer."""
    return ((shape[0], 1) if kind == "embedding" else (shape[-1],)), (1,)


def mask_rule(layer: Layer) -> str:
    """How `layer`'s output mask follows from its inputs' masks, as in Keras.

    ``produce``: the layer makes a new mask (``embedding`` with ``mask_zero``, ``masking``);
    ``pass``: it hands on its input's mask; ``drop``: its output has no mask; ``merge``: the
    inputs' masks are combined by the layer's ``mask_combine`` attribute, ``all`` (Keras 2: AND of
    the masks present) or ``any`` (Keras 3: OR when every input has a mask, else none).
    A ``reverse`` layer passes its mask unreversed: it realigns a ``go_backwards`` layer's output,
    whose mask Keras leaves in the original order.
    """
    kind = layer.kind
    if kind in ("masking", "length_mask") or (kind == "embedding" and layer.attrs["mask_zero"]):
        return "produce"
    if kind in RECURRENT_KINDS:
        return "pass" if layer.attrs["return_sequences"] else "drop"
    if kind in ("dense", "activation", "batch_norm", "layer_norm", "reverse"):
        return "pass"
    return "merge" if kind == "merge" else "drop"


def conv_padding(length: int, size: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """(zeros padded before the sequence, output length) of a 1-D convolution or pooling window,
    with TensorFlow's rule for ``same`` (the odd extra zero goes after)."""
    span = dilation * (size - 1) + 1
    if padding == "same":
        out = -(-length // stride)
        return max((out - 1) * stride + span - length, 0) // 2, out
    left = span - 1 if padding == "causal" else 0
    return left, max((length + left - span) // stride + 1, 0)


# ---------------------------------------------------------------------------------------------
# The schema: every attribute of every kind, with its type, and every weight's name

def _integer(low: int, high: int = 1 << 31):
    return lambda v: type(v) is int and low <= v <= high


def _choice(*options):
    return lambda v: isinstance(v, str) and v in options


def _flag(v) -> bool:
    return type(v) is bool


def _finite(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


_ACTIVATION = _choice(*ACTIVATIONS)
_GATE_ACTIVATION = _choice(*(a for a in ACTIVATIONS if "softmax" not in a))
_RECURRENT = {"units": _integer(1), "return_sequences": _flag, "go_backwards": _flag, "stateful": _flag,
              "zero_output_for_mask": _flag, "activation": _GATE_ACTIVATION}
_WINDOW = {"strides": _integer(1, 1 << 20)}

SCHEMA: dict[str, tuple[dict, tuple]] = {
    # kind: (attribute checks, weight names)
    "input": ({"shape": lambda v: isinstance(v, list) and all(d is None or _integer(1)(d) for d in v),
               "dtype": _choice("float32", "int32")}, ()),
    "lstm": ({**_RECURRENT, "recurrent_activation": _GATE_ACTIVATION, "output_activation": _GATE_ACTIVATION,
              "clip": lambda v: _finite(v) and v >= 0, "input_forget": _flag},
             ("kernel", "recurrent_kernel", "bias")),
    "gru": ({**_RECURRENT, "recurrent_activation": _GATE_ACTIVATION, "reset_after": _flag},
            ("kernel", "recurrent_kernel", "bias", "recurrent_bias")),
    "rnn": (_RECURRENT, ("kernel", "recurrent_kernel", "bias")),
    "dense": ({"activation": _ACTIVATION}, ("kernel", "bias")),
    "activation": ({"activation": _ACTIVATION}, ()),
    "embedding": ({"mask_zero": _flag}, ("embeddings",)),
    "masking": ({"mask_value": _finite}, ()),
    "reverse": ({}, ()),
    "repeat": ({"n": _integer(1, MAX_REPEAT)}, ()),
    "take_step": ({"index": _integer(-(1 << 31))}, ()),
    "length_mask": ({"lengths": lambda v: isinstance(v, list) and all(_integer(0)(n) for n in v)}, ()),
    "flatten": ({}, ()),
    "conv1d": ({**_WINDOW, "dilation": _integer(1, 1 << 20), "padding": _choice("valid", "same", "causal"),
                "activation": _ACTIVATION}, ("kernel", "bias")),
    "pool1d": ({**_WINDOW, "op": _choice(*POOL_OPS), "pool_size": _integer(1, 1 << 20),
                "padding": _choice("valid", "same")}, ()),
    "global_pool1d": ({"op": _choice(*POOL_OPS)}, ()),
    "batch_norm": ({}, ("scale", "offset")),
    "layer_norm": ({"epsilon": lambda v: _finite(v) and v >= 0}, ("gamma", "beta")),
    "merge": ({"op": _choice(*MERGE_OPS), "mask_combine": _choice("all", "any")}, ()),
}
"""Per kind: a check for each attribute (all required) and the weights the layer must hold.
Layers may carry extra attributes for information (an input's fixed ``batch``); they are not read.
Recurrent layers may also hold `INITIAL_STATES`."""

INITIAL_STATES = {"lstm": ("initial_h", "initial_c"), "gru": ("initial_h",), "rnn": ("initial_h",)}
OPTIONAL_WEIGHTS = {"lstm": ("initial_h", "initial_c", "peephole"), "gru": ("initial_h",), "rnn": ("initial_h",)}
"""Optional start states of a recurrent layer: [units] for every sequence, or [batch, units] for a
model of fixed batch (ONNX initial_h / initial_c). Without them a sequence starts from zeros."""


# ---------------------------------------------------------------------------------------------
# Validation and shape inference

def _require(cond: bool, error: type, message: str) -> None:
    if not cond:
        raise error(message)


def _weight(layer: Layer, name: str, shape: tuple, error: type) -> None:
    w = layer.weights[name]
    where = f"layer '{layer.name}': weight '{name}'"
    _require(tuple(w.shape) == tuple(shape), error, f"{where} has shape {tuple(w.shape)}, expected {tuple(shape)}")
    if w.dtype in FLOAT_DTYPES:
        return
    _require(w.dtype == np.int8 and name in QUANTIZABLE.get(layer.kind, ()), error,
             f"{where} has dtype {w.dtype}, expected float32 or float16"
             + (" or int8" if name in QUANTIZABLE.get(layer.kind, ()) else ""))
    scale = layer.weights.get(name + SCALE_SUFFIX)
    _require(scale is not None, error, f"{where} is int8 but the layer holds no '{name}{SCALE_SUFFIX}'")
    _require(scale.dtype in FLOAT_DTYPES and tuple(scale.shape) in scale_shapes(layer.kind, tuple(shape)), error,
             f"layer '{layer.name}': '{name}{SCALE_SUFFIX}' has dtype {scale.dtype} and shape {tuple(scale.shape)}, "
             f"expected float16 or float32 {' or '.join(map(str, scale_shapes(layer.kind, tuple(shape))))}")
    _require(bool(np.all(np.isfinite(scale) & (scale > 0))), error,
             f"layer '{layer.name}': '{name}{SCALE_SUFFIX}' holds scales that are not finite and positive")


def scale_names(layer: Layer) -> set:
    """The ``<name>_scale`` weights that belong to an int8 weight of `layer` (checked by `_weight`)."""
    return {name + SCALE_SUFFIX for name in QUANTIZABLE.get(layer.kind, ())
            if name in layer.weights and layer.weights[name].dtype == np.int8}


def _window_length(layer: Layer, length: int | None, size: int, dilation: int) -> int | None:
    if length is None:
        return None
    return conv_padding(length, size, layer.attrs["strides"], dilation, layer.attrs["padding"])[1]


def infer_shape(layer: Layer, shapes: list[tuple], error: type = ShapeError) -> tuple:
    """Output shape of `layer` (attributes already checked) from its input shapes; checks weights."""
    kind, a, w = layer.kind, layer.attrs, layer.weights
    x = shapes[0] if shapes else ()
    where = f"layer '{layer.name}' ({kind})"

    def needs(rank: int, what: str) -> None:
        _require(len(x) == rank, error, f"{where} needs {what}, got shape {x}")

    if kind == "input":
        return tuple(a["shape"])
    if kind in RECURRENT_KINDS:
        needs(2, "a sequence [time, features]")
        units, gates = a["units"], GATES[kind]
        _weight(layer, "kernel", (x[1], gates * units), error)
        _weight(layer, "recurrent_kernel", (units, gates * units), error)
        _weight(layer, "bias", (gates * units,), error)
        if kind == "gru":
            _weight(layer, "recurrent_bias", (gates * units,), error)
        if "peephole" in w:
            _weight(layer, "peephole", (3 * units,), error)
        for name in INITIAL_STATES[kind]:
            if name in w:
                _require(w[name].ndim in (1, 2) and w[name].shape[-1] == units, error,
                         f"{where}: {name} has shape {w[name].shape}, expected [{units}] or [batch, {units}]")
                _weight(layer, name, w[name].shape, error)
        return (x[0], units) if a["return_sequences"] else (units,)
    if kind in ("dense", "conv1d"):
        if kind == "conv1d" or len(x) != 1:
            needs(2, "an input [time, features] or [features]" if kind == "dense" else "a sequence")
        kernel = w["kernel"]
        _require(kernel.ndim == (2 if kind == "dense" else 3) and kernel.shape[-1] >= 1, error,
                 f"{where} has a kernel of shape {kernel.shape}")
        _weight(layer, "kernel", (x[-1], kernel.shape[-1]) if kind == "dense" else
                (kernel.shape[0], x[1], kernel.shape[2]), error)
        _weight(layer, "bias", (kernel.shape[-1],), error)
        if kind == "dense":
            return x[:-1] + (kernel.shape[-1],)
        _require(kernel.shape[0] >= 1, error, f"{where} has an empty kernel")
        return (_window_length(layer, x[0], kernel.shape[0], a["dilation"]), kernel.shape[2])
    if kind == "embedding":
        needs(1, "token ids [time]")
        table = w["embeddings"]
        _require(table.ndim == 2 and min(table.shape) >= 1, error, f"{where} has a table of shape {table.shape}")
        _weight(layer, "embeddings", table.shape, error)
        return (x[0], table.shape[1])
    if kind in ("activation", "masking", "batch_norm", "layer_norm", "reverse", "length_mask"):
        if kind in ("masking", "reverse", "length_mask"):
            needs(2, "a sequence")
        _require(len(x) >= 1, error, f"{where} needs an input with features")
        for name in SCHEMA[kind][1]:
            _weight(layer, name, (x[-1],), error)
        return x
    if kind == "repeat":
        needs(1, "a vector input")
        return (a["n"], x[0])
    if kind == "take_step":
        needs(2, "a sequence")
        _require(x[0] is None or -x[0] <= a["index"] < x[0], error, f"{where}: step {a['index']} is outside {x[0]} steps")
        return (x[1],)
    if kind == "flatten":
        _require(len(x) >= 1 and all(d is not None for d in x), error,
                 f"{where} needs a fixed sequence length; the input is {x}")
        return (math.prod(x),)
    if kind == "pool1d":
        needs(2, "a sequence")
        return (_window_length(layer, x[0], a["pool_size"], 1), x[1])
    if kind == "global_pool1d":
        needs(2, "a sequence")
        return (x[1],)
    # merge
    _require(len(shapes) >= 2, error, f"{where} needs two or more inputs")
    if a["op"] == "concatenate":
        _require(all(len(s) == len(x) >= 1 and s[:-1] == x[:-1] for s in shapes), error,
                 f"{where} cannot concatenate shapes {shapes} on the last axis")
        return x[:-1] + (sum(s[-1] for s in shapes),)
    _require(all(s == x for s in shapes), error, f"{where}: merged shapes differ: {shapes}")
    return x


def validate(graph: Graph, error: type = ShapeError) -> None:
    """Check names, wiring, attributes and weights; set every layer's output `shape`.

    `error` is the exception raised on a problem: `FormatError` when reading a file,
    `ShapeError` (the default) for a graph built in memory.
    """
    _require(bool(graph.layers) and graph.layers[0].kind == "input", error, "the graph must start with its input layer")
    shapes: dict[str, tuple] = {}
    for index, layer in enumerate(graph.layers):
        _require(isinstance(layer.name, str) and bool(_NAME.match(layer.name)), error, f"bad layer name {layer.name!r}")
        _require(layer.name not in shapes, error, f"two layers are named '{layer.name}'")
        _require(layer.kind in SCHEMA, error, f"layer '{layer.name}' has unknown kind '{layer.kind}'")
        _require((index == 0) == (layer.kind == "input"), error, "only the first layer may be the input")
        _require(index == 0 or len(layer.inputs) >= 1, error, f"layer '{layer.name}' reads no input")
        _require(layer.kind == "merge" or len(layer.inputs) <= 1, error, f"layer '{layer.name}' reads several inputs")
        checks, weights = SCHEMA[layer.kind]
        for key, ok in checks.items():
            _require(key in layer.attrs and ok(layer.attrs[key]), error,
                     f"layer '{layer.name}' ({layer.kind}) has a missing or bad attribute "
                     f"'{key}': {layer.attrs.get(key)!r}")
        optional = set(OPTIONAL_WEIGHTS.get(layer.kind, ())) | scale_names(layer)
        _require(sorted(w for w in layer.weights if w not in optional) == sorted(weights), error,
                 f"layer '{layer.name}' ({layer.kind}) holds weights {sorted(layer.weights)}, expected {sorted(weights)}")
        for src in layer.inputs:
            _require(src in shapes, error, f"layer '{layer.name}' reads '{src}', which is not an earlier layer")
        if "input_range" in layer.attrs:
            _require(_finite(layer.attrs["input_range"]) and layer.attrs["input_range"] > 0 and bool(scale_names(layer)),
                     error, f"layer '{layer.name}' has input_range {layer.attrs['input_range']!r}: it must be positive "
                            "and belongs only to a layer with int8 weights")
        layer.shape = infer_shape(layer, [shapes[s] for s in layer.inputs], error)
        shapes[layer.name] = layer.shape
    first = graph.layers[0]
    _require(len(first.shape) == (1 if first.attrs["dtype"] == "int32" else 2), error,
             "the input shape must be [time, features] (or [time] for token ids)")
    _require(graph.output in shapes, error, f"the output '{graph.output}' is not a layer")
