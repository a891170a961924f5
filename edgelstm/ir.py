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

Recurrent semantics follow Keras: ``go_backwards`` processes the sequence reversed and returns
outputs in processing order; a masked step carries state and output forward (or outputs zeros
when ``zero_output_for_mask``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import numpy as np

from .errors import FormatError, ShapeError

ACTIVATIONS = (
    "linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "swish",
    "softplus", "hard_sigmoid", "hard_sigmoid_legacy",
)
"""Activation names of the IR. ``hard_sigmoid`` is Keras 3's clip(x/6 + 1/2, 0, 1);
``hard_sigmoid_legacy`` is Keras 2's clip(0.2x + 1/2, 0, 1). ``gelu`` is the exact (erf) form."""

RECURRENT_KINDS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MERGE_OPS = ("add", "multiply", "average", "concatenate")
POOL_OPS = ("max", "average")

_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")


@dataclasses.dataclass
class Layer:
    """One node of the graph: its kind, the layers it reads, attributes and named weights."""

    name: str
    kind: str
    inputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    shape: tuple | None = None  # output shape without the batch axis, set by `infer_shapes`

    def param_count(self) -> int:
        return int(sum(w.size for w in self.weights.values()))

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
                Layer(name=str(d["name"]), kind=str(d["kind"]), inputs=list(d["inputs"]),
                      attrs=dict(d["attrs"]),
                      weights={w: tensors[f"{d['name']}/{w}"] for w in d["weights"]})
                for d in doc["layers"]
            ]
            graph = cls(layers=layers, output=str(doc["output"]), metadata=dict(doc["metadata"]))
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"the model graph is malformed ({type(exc).__name__}: {exc})") from None
        used = {f"{l.name}/{w}" for l in graph.layers for w in l.weights}
        extra = sorted(set(tensors) - used)
        if extra:
            raise FormatError(f"the file holds tensors no layer uses: {', '.join(extra[:5])}")
        validate(graph, error=FormatError)
        return graph


# ---------------------------------------------------------------------------------------------
# Validation and shape inference

def _require(cond: bool, error: type, message: str) -> None:
    if not cond:
        raise error(message)


def _dim(value: Any) -> int | None:
    return None if value is None else int(value)


def conv_padding(length: int, size: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """(zeros padded before the sequence, output length) of a 1-D convolution or pooling window,
    with TensorFlow's rule for ``same`` (the odd extra zero goes after)."""
    span = dilation * (size - 1) + 1
    if padding == "same":
        out = -(-length // stride)
        return max((out - 1) * stride + span - length, 0) // 2, out
    left = span - 1 if padding == "causal" else 0
    return left, max((length + left - span) // stride + 1, 0)


def _conv_length(length: int | None, size: int, stride: int, dilation: int, padding: str) -> int | None:
    return None if length is None else conv_padding(length, size, stride, dilation, padding)[1]


def _weight(layer: Layer, name: str, shape: tuple, error: type) -> None:
    w = layer.weights.get(name)
    _require(w is not None, error, f"layer '{layer.name}' ({layer.kind}) lacks weight '{name}'")
    _require(w.dtype == np.float32, error,
             f"layer '{layer.name}': weight '{name}' has dtype {w.dtype}, expected float32")
    _require(tuple(w.shape) == tuple(shape), error,
             f"layer '{layer.name}': weight '{name}' has shape {tuple(w.shape)}, expected {tuple(shape)}")


def _infer(layer: Layer, shapes: list[tuple], error: type) -> tuple:
    """Output shape of one layer from its input shapes; checks weights and attributes."""
    kind, a = layer.kind, layer.attrs
    x = shapes[0] if shapes else None
    if kind == "input":
        return tuple(_dim(d) for d in a["shape"])
    if kind in RECURRENT_KINDS:
        _require(len(x) == 2, error, f"layer '{layer.name}' ({kind}) needs a sequence [time, features], got {x}")
        units, gates = int(a["units"]), GATES[kind]
        _weight(layer, "kernel", (x[1], gates * units), error)
        _weight(layer, "recurrent_kernel", (units, gates * units), error)
        _weight(layer, "bias", (gates * units,), error)
        if kind == "gru":
            _weight(layer, "recurrent_bias", (gates * units,), error)
        for key in ("activation", "recurrent_activation") if kind != "rnn" else ("activation",):
            _require(a[key] in ACTIVATIONS and a[key] != "softmax", error,
                     f"layer '{layer.name}': {key} '{a[key]}' is not one of {ACTIVATIONS[:-1]}")
        return (x[0], units) if a["return_sequences"] else (units,)
    if kind == "dense":
        _require(len(x) >= 1, error, f"layer '{layer.name}' (dense) needs an input with features")
        out = layer.weights["kernel"].shape[1] if "kernel" in layer.weights else -1
        _weight(layer, "kernel", (x[-1], out), error)
        _weight(layer, "bias", (out,), error)
        _require(a["activation"] in ACTIVATIONS, error, f"layer '{layer.name}': unknown activation '{a['activation']}'")
        return x[:-1] + (out,)
    if kind == "activation":
        _require(a["activation"] in ACTIVATIONS, error, f"layer '{layer.name}': unknown activation '{a['activation']}'")
        return x
    if kind == "embedding":
        _require(len(x) == 1, error, f"layer '{layer.name}' (embedding) needs token ids [time], got {x}")
        table = layer.weights.get("embeddings")
        _require(table is not None and table.ndim == 2, error, f"layer '{layer.name}' lacks a 2-D embedding table")
        _weight(layer, "embeddings", table.shape, error)
        return (x[0], table.shape[1])
    if kind == "masking":
        return x
    if kind == "reverse":
        _require(len(x) == 2, error, f"layer '{layer.name}' (reverse) needs a sequence, got {x}")
        return x
    if kind == "repeat":
        _require(len(x) == 1, error, f"layer '{layer.name}' (repeat) needs a vector input, got {x}")
        return (int(a["n"]), x[0])
    if kind == "flatten":
        _require(all(d is not None for d in x), error,
                 f"layer '{layer.name}' (flatten) needs a fixed sequence length; the input is {x}")
        return (int(np.prod(x)),)
    if kind == "conv1d":
        _require(len(x) == 2, error, f"layer '{layer.name}' (conv1d) needs a sequence, got {x}")
        k = layer.weights.get("kernel")
        _require(k is not None and k.ndim == 3, error, f"layer '{layer.name}' lacks a 3-D kernel")
        _weight(layer, "kernel", (k.shape[0], x[1], k.shape[2]), error)
        _weight(layer, "bias", (k.shape[2],), error)
        _require(a["padding"] in ("valid", "same", "causal"), error, f"layer '{layer.name}': padding '{a['padding']}'")
        _require(a["activation"] in ACTIVATIONS, error, f"layer '{layer.name}': unknown activation '{a['activation']}'")
        _require(int(a["strides"]) >= 1 and int(a["dilation"]) >= 1, error, f"layer '{layer.name}': bad strides/dilation")
        return (_conv_length(x[0], k.shape[0], int(a["strides"]), int(a["dilation"]), a["padding"]), k.shape[2])
    if kind == "pool1d":
        _require(len(x) == 2, error, f"layer '{layer.name}' (pool1d) needs a sequence, got {x}")
        _require(a["op"] in POOL_OPS and a["padding"] in ("valid", "same"), error, f"layer '{layer.name}': bad pooling")
        _require(int(a["pool_size"]) >= 1 and int(a["strides"]) >= 1, error, f"layer '{layer.name}': bad pool size/strides")
        return (_conv_length(x[0], int(a["pool_size"]), int(a["strides"]), 1, a["padding"]), x[1])
    if kind == "global_pool1d":
        _require(len(x) == 2 and a["op"] in POOL_OPS, error, f"layer '{layer.name}' (global_pool1d) needs a sequence")
        return (x[1],)
    if kind == "batch_norm":
        _weight(layer, "scale", (x[-1],), error)
        _weight(layer, "offset", (x[-1],), error)
        return x
    if kind == "layer_norm":
        _weight(layer, "gamma", (x[-1],), error)
        _weight(layer, "beta", (x[-1],), error)
        return x
    if kind == "merge":
        _require(a["op"] in MERGE_OPS, error, f"layer '{layer.name}': unknown merge op '{a['op']}'")
        _require(len(shapes) >= 2, error, f"layer '{layer.name}' (merge) needs two or more inputs")
        if a["op"] == "concatenate":
            _require(len({len(s) for s in shapes}) == 1 and all(s[:-1] == x[:-1] for s in shapes), error,
                     f"layer '{layer.name}': cannot concatenate shapes {shapes} on the last axis")
            return x[:-1] + (sum(s[-1] for s in shapes),)
        _require(all(s == x for s in shapes), error, f"layer '{layer.name}': merged shapes differ: {shapes}")
        return x
    raise error(f"layer '{layer.name}' has unknown kind '{kind}'")


KINDS = ("input", *RECURRENT_KINDS, "dense", "activation", "embedding", "masking",
         "reverse", "repeat", "flatten", "conv1d", "pool1d", "global_pool1d", "batch_norm",
         "layer_norm", "merge")


def validate(graph: Graph, error: type = ShapeError) -> None:
    """Check names, wiring, attributes and weight shapes; set every layer's output `shape`.

    `error` is the exception raised on a problem: `FormatError` when reading a file,
    `ShapeError` (the default) when an importer builds the graph.
    """
    _require(bool(graph.layers) and graph.layers[0].kind == "input", error, "the graph must start with its input layer")
    first = graph.layers[0]
    _require(first.attrs.get("dtype") in ("float32", "int32"), error, "the input dtype must be float32 or int32")
    _require(len(first.attrs.get("shape", ())) == (1 if first.attrs["dtype"] == "int32" else 2), error,
             "the input shape must be [time, features] (or [time] for token ids)")
    shapes: dict[str, tuple] = {}
    for index, layer in enumerate(graph.layers):
        _require(isinstance(layer.name, str) and bool(_NAME.match(layer.name)), error, f"bad layer name {layer.name!r}")
        _require(layer.name not in shapes, error, f"two layers are named '{layer.name}'")
        _require(layer.kind in KINDS, error, f"layer '{layer.name}' has unknown kind '{layer.kind}'")
        _require((index == 0) == (layer.kind == "input"), error, "only the first layer may be the input")
        _require(index == 0 or len(layer.inputs) >= 1, error, f"layer '{layer.name}' reads no input")
        for src in layer.inputs:
            _require(src in shapes, error, f"layer '{layer.name}' reads '{src}', which is not an earlier layer")
        try:
            layer.shape = _infer(layer, [shapes[s] for s in layer.inputs], error)
        except (KeyError, TypeError, ValueError) as exc:
            raise error(f"layer '{layer.name}' ({layer.kind}) has a missing or bad attribute: {exc}") from None
        shapes[layer.name] = layer.shape
    _require(graph.output in shapes, error, f"the output '{graph.output}' is not a layer")
