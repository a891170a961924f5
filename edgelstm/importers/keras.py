"""Keras importer: Keras 3 ``.keras`` archives and legacy HDF5 ``.h5`` files (Keras 2 or 3).

Reads the model's JSON config and its weights with h5py, never by running Keras code: a Lambda
or custom layer is refused, not executed. Each supported Keras layer class has a converter that
emits IR layers with weights in the canonical layout (see `edgelstm.ir`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import raised_in
from ..errors import EdgeLSTMError, FormatError, UnsupportedError
from ..ir import GATES, Graph, Layer, infer_shape, mask_rule, validate

MAX_CONFIG_BYTES = 64 << 20
MAX_WEIGHTS_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 100  # a large zip member inflating more than this is treated as a zip bomb
BOMB_CHECK_BYTES = 256 << 20  # (small members may compress well: mostly-zero weights do)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UnsupportedError("reading Keras files needs h5py: pip install 'edgelstm[keras]'") from None
    return h5py


# ---------------------------------------------------------------------------------------------
# Reading the files: a config dict and, per top-level layer, its weights in Keras's order

def _array(dataset, stored_bytes: int) -> np.ndarray:
    """A dataset's values, refused before allocation when it would inflate far past the bytes the
    HDF5 file holds (a fill-value or compression bomb)."""
    size = getattr(dataset, "size", None)
    dtype = getattr(dataset, "dtype", None)
    if size is None or dtype is None:
        raise FormatError(f"weight '{getattr(dataset, 'name', dataset)}' is not an array")
    wanted = int(size) * dtype.itemsize
    if wanted > BOMB_CHECK_BYTES and wanted > MAX_COMPRESSION_RATIO * stored_bytes:
        raise FormatError(f"weight '{dataset.name}' would inflate to {wanted} bytes from a {stored_bytes}-byte "
                          "file (a fill-value or compression bomb); refused")
    return np.asarray(dataset)


class _Keras3Weights:
    """Weights of a Keras 3 ``model.weights.h5``: ``layers/<name>/.../vars/<i>``."""

    _CHILD_ORDER = ("cell", "forward_layer", "backward_layer", "layer")

    def __init__(self, h5, stored_bytes: int):
        self.h5, self.stored_bytes = h5, stored_bytes

    def _collect(self, group) -> list[np.ndarray]:
        arrays = []
        if "vars" in group:
            arrays += [_array(group["vars"][k], self.stored_bytes) for k in sorted(group["vars"], key=int)]
        children = [k for k in self._CHILD_ORDER if k in group] + sorted(
            k for k in group if k not in self._CHILD_ORDER and k != "vars")
        for child in children:
            arrays += self._collect(group[child])
        return arrays

    def __call__(self, layer: "_KerasLayer") -> list[np.ndarray]:
        group = self.h5.get("layers/" + layer.store_key)
        return [] if group is None else self._collect(group)


class _LegacyWeights:
    """Weights of a legacy HDF5 file: group per layer, ordered by its ``weight_names`` attribute."""

    def __init__(self, root, stored_bytes: int):
        self.root, self.stored_bytes = root, stored_bytes

    def __call__(self, layer: "_KerasLayer") -> list[np.ndarray]:
        if layer.name not in self.root:
            return []
        group = self.root[layer.name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
        return [_array(group[n], self.stored_bytes) for n in names]


def _read_keras_archive(path: Path):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{path} is not a readable .keras archive ({exc})") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        for needed in ("config.json", "model.weights.h5"):
            if needed not in members:
                raise FormatError(f"{path} is not a Keras 3 model archive: it lacks {needed}")
        for info in members.values():
            limit = MAX_WEIGHTS_BYTES if info.filename == "model.weights.h5" else MAX_CONFIG_BYTES
            if info.file_size > limit or (info.file_size > BOMB_CHECK_BYTES
                                          and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size):
                raise FormatError(f"{path}: member {info.filename} would inflate to {info.file_size} bytes "
                                  "(too large or a zip bomb); refused")
        try:
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in members else {}
            weights = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, RecursionError) as exc:
            raise FormatError(f"{path} is a corrupt .keras archive ({exc})") from None
    try:
        h5 = _h5py().File(io.BytesIO(weights), "r")
    except OSError as exc:
        raise FormatError(f"{path}: its model.weights.h5 is not readable HDF5 ({exc})") from None
    version = str(metadata.get("keras_version", "3")) if isinstance(metadata, dict) else "3"
    return config, _Keras3Weights(h5, len(weights)), _dialect(version), h5


def _read_legacy_h5(path: Path):
    try:
        h5 = _h5py().File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file ({exc})") from None
    raw = h5.attrs.get("model_config")
    if raw is None:
        raise FormatError(f"{path} holds weights only (no model_config); save the whole model with model.save()")
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError):
        raise FormatError(f"{path}: its model_config is not JSON") from None
    version = h5.attrs.get("keras_version", b"2")
    version = version.decode() if isinstance(version, bytes) else str(version)
    root = h5["model_weights"] if "model_weights" in h5 else h5
    return config, _LegacyWeights(root, path.stat().st_size), _dialect(version), h5


def _dialect(keras_version: str) -> str:
    """``keras2`` or ``keras3``: the two differ in hard_sigmoid and in how merges combine masks."""
    return "keras2" if keras_version.startswith(("1.", "2.")) else "keras3"


# ---------------------------------------------------------------------------------------------
# The model's layers and wiring

@dataclasses.dataclass
class _KerasLayer:
    position: int
    class_name: str
    config: dict
    inbound: list[str]
    store_key: str = ""  # Keras 3 stores weights under the snake-cased class name, numbered in order
    masks: list = dataclasses.field(default_factory=list)  # Keras 3 functional: per input, the node
    # its explicit ``mask=`` argument comes from (None where none)
    constants: tuple = ()  # non-tensor call arguments, such as the 0 of ``NotEqual(ids, 0)``

    @property
    def name(self) -> str:
        return self.config.get("name", f"layer_{self.position}")

    def where(self) -> str:
        return f"layer {self.position} '{self.name}' ({self.class_name})"


def _history_names(node: Any) -> list[str]:
    """Keras layer names a functional node reads, in either config dialect."""
    if isinstance(node, dict) and node.get("class_name") == "__keras_tensor__":
        return [node["config"]["keras_history"][0]]
    if isinstance(node, dict):
        return [n for arg in node.get("args", []) for n in _history_names(arg)]
    if isinstance(node, list) and node and isinstance(node[0], str):
        return [node[0]]  # Keras 2: [name, node_index, tensor_index, kwargs]
    if isinstance(node, list):
        return [n for item in node for n in _history_names(item)]
    return []


def _live_names(layers: list[_KerasLayer], output: str) -> set[str]:
    """Names of the layers the output depends on through data inputs (mask ops are not among them)."""
    by_name = {layer.name: layer for layer in layers}
    live, todo = set(), [output]
    while todo:
        name = todo.pop()
        if name not in live and name in by_name:
            live.add(name)
            todo += by_name[name].inbound
    return live


class _Masks:
    """Keras 3 functional configs record the masks that layers hand on as explicit ops
    (``NotEqual``, ``Any``, ``LogicalOr``...) passed as ``mask=``; the runtime derives masks itself
    by `ir.mask_rule`. This checks that each explicit mask is exactly the derived one, so a custom
    mask is refused rather than ignored. A mask is modelled as the set of producer layers (Embedding
    with mask_zero, Masking) whose masks it ORs, or None for no mask (all steps valid)."""

    def __init__(self, layers: list[_KerasLayer], alias: dict[str, str]):
        self.by_name = {layer.name: layer for layer in layers}
        self.alias = alias
        self.derived: dict[str, frozenset | None] = {}  # IR layer -> its output mask
        self.producers: dict[tuple, str] = {}  # (IR input, mask value, kind) -> producing IR layer

    def add(self, layer: Layer) -> None:
        rule = mask_rule(layer)
        ins = [self.derived.get(name) for name in layer.inputs]
        if rule == "produce":
            value = layer.attrs.get("mask_value", 0.0)
            self.producers[(layer.inputs[0], float(value), layer.kind)] = layer.name
            self.derived[layer.name] = frozenset([layer.name])
        elif rule == "pass":
            self.derived[layer.name] = ins[0]
        elif rule == "merge" and all(m is not None for m in ins):
            self.derived[layer.name] = frozenset().union(*ins)
        else:  # "drop", or a merge with an unmasked input (what Keras 3 does; Keras 2 writes no mask ops)
            self.derived[layer.name] = None

    def _resolve(self, name: str | None, where: str):
        op = self.by_name.get(name) if name else None
        cls = op.class_name if op else None
        if cls in ("ZerosLike", "OnesLike"):  # Keras 3 Concatenate pads masks with these
            return frozenset() if cls == "ZerosLike" else None
        if cls == "NotEqual" and len(op.constants) == 1 and len(op.inbound) == 1:
            source, value = self.alias.get(op.inbound[0]), float(op.constants[0])
            if (source, value, "embedding") in self.producers and value == 0.0:
                return frozenset([self.producers[(source, value, "embedding")]])
            return ("not_equal", source, value)  # a Masking mask once Any() reduces its features
        parts = [self._resolve(n, where) for n in (op.inbound if op else [])]
        if cls == "Any" and len(parts) == 1 and isinstance(parts[0], tuple):
            key = parts[0][1:] + ("masking",)
            if key in self.producers:
                return frozenset([self.producers[key]])
        elif cls in ("Any", "ExpandDims", "LogicalOr", "Concatenate") and parts:
            if any(p is None for p in parts):
                return None
            if all(isinstance(p, frozenset) for p in parts):
                return frozenset().union(*parts)
        raise UnsupportedError(f"{where} is called with an explicit mask that edgelstm cannot derive (from "
                               f"'{name}'); only the masks Embedding(mask_zero=True) and Masking produce are "
                               "supported")

    def check(self, layer: _KerasLayer, sources: list[str]) -> None:
        for source, mask in zip(sources, layer.masks):
            if mask is not None and self._resolve(mask, layer.where()) != self.derived.get(source):
                raise UnsupportedError(f"{layer.where()} is called with an explicit mask that differs from the "
                                       "one its input carries; custom masks are not supported")


def _endpoint_names(spec: Any, what: str) -> list[str]:
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        spec = [spec]
    names = [s[0] for s in spec or []]
    if len(names) != 1:
        raise UnsupportedError(f"the model has {len(names)} {what}s; edgelstm converts models with exactly one")
    return names


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _number_store_keys(specs: list[dict], layers: list[_KerasLayer]) -> None:
    """Keras 3's weight-file key of each layer: its class in snake case, then _1, _2... for repeats.
    Ops recorded in functional configs (``NotEqual`` and the like) are not layers and hold no key."""
    used: dict[str, int] = {}
    for spec, layer in zip(specs, layers):
        if ".ops" in str(spec.get("module", "")):
            continue
        key = _snake_case(layer.class_name)
        layer.store_key = key if key not in used else f"{key}_{used[key]}"
        used[key] = used.get(key, 0) + 1


def _model_layers(model_config: dict) -> tuple[list[_KerasLayer], str]:
    """The layers in order with the names they read, and the output layer's name."""
    class_name = model_config.get("class_name")
    config = model_config.get("config", {})
    if class_name == "Sequential":
        specs = config["layers"] if isinstance(config, dict) else config
        layers, previous = [], []
        for position, spec in enumerate(specs):
            layer = _KerasLayer(position, spec["class_name"], spec.get("config", {}), previous)
            if position == 0 and layer.class_name != "InputLayer":
                shape = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
                if shape is None:
                    raise UnsupportedError("the Sequential model has no input shape; build it with keras.Input(...)")
                layers.append(_KerasLayer(-1, "InputLayer", {"name": "input", "batch_shape": shape,
                                                             "dtype": layer.config.get("dtype")}, []))
                layer.inbound = ["input"]
            layers.append(layer)
            previous = [layer.name]
        _number_store_keys(specs, layers[-len(specs):])
        return layers, layers[-1].name
    if class_name in ("Functional", "Model"):
        layers = []
        for position, spec in enumerate(config["layers"]):
            nodes = spec.get("inbound_nodes", [])
            if len(nodes) > 1:
                raise UnsupportedError(f"layer {position} '{spec.get('name')}' is called more than once; "
                                       "shared layers are not supported")
            node = nodes[0] if nodes else []
            layer = _KerasLayer(position, spec["class_name"], spec.get("config", {}), _history_names(node))
            if isinstance(node, dict):
                mask = node.get("kwargs", {}).get("mask")
                layer.masks = [(_history_names(m) or [None])[0] for m in (mask if isinstance(mask, list) else [mask])]
                layer.constants = tuple(a for a in node.get("args", []) if isinstance(a, (int, float)))
            layers.append(layer)
        _number_store_keys(config["layers"], layers)
        _endpoint_names(config.get("input_layers"), "input")
        (output,) = _endpoint_names(config.get("output_layers"), "output")
        return layers, output
    raise UnsupportedError(f"model class '{class_name}' is not supported; supported: Sequential, Functional")


# ---------------------------------------------------------------------------------------------
# Converters: one per Keras class; each returns IR layers (the last is this layer's output)

class _Context:
    """What converters need beyond their layer: the file's dialect, its weights, and the output
    shapes (without the batch axis) of the IR layers converted so far."""

    def __init__(self, dialect: str, weights: Callable[["_KerasLayer"], list[np.ndarray]]):
        self.dialect = dialect
        self.weights = weights
        self.shapes: dict[str, tuple] = {}
        self.mask_combine = "all" if dialect == "keras2" else "any"

    def is_last_axis(self, axis: Any, source: str) -> bool:
        """Whether a Keras axis (counting the batch axis) names the last axis of `source`."""
        axes = axis if isinstance(axis, list) and len(axis) == 1 else [axis]
        return axes[0] in (-1, len(self.shapes[source]))

    def activation(self, value: Any, where: str, gate: bool = False) -> str:
        """The IR name of a Keras activation in this file's dialect."""
        if value is None:
            return "linear"
        if not isinstance(value, str) or value not in _KERAS_ACTIVATIONS or (gate and value == "softmax"):
            raise UnsupportedError(f"{where}: activation {value!r} is not supported; supported: "
                                   f"{', '.join(sorted(_KERAS_ACTIVATIONS))}")
        if value == "hard_sigmoid" and self.dialect == "keras2":
            return "hard_sigmoid_legacy"  # Keras 2: clip(0.2x + 0.5); Keras 3: clip(x/6 + 0.5)
        return "swish" if value == "silu" else value


_KERAS_ACTIVATIONS = {"linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "swish", "silu",
                      "softplus", "hard_sigmoid"}


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _take(weights: list[np.ndarray], count: int, where: str) -> list[np.ndarray]:
    if len(weights) != count:
        raise FormatError(f"{where}: expected {count} weight arrays in the file, found {len(weights)}")
    return [_f32(w) for w in weights]


def _refuse_options(cfg: dict, where: str, **allowed) -> None:
    for key, ok in allowed.items():
        if key in cfg and cfg[key] not in ok:
            raise UnsupportedError(f"{where}: option {key}={cfg[key]!r} is not supported (supported: {ok})")


def _recurrent(kind: str, cfg: dict, weights: list[np.ndarray], name: str, source: str, ctx: _Context,
               where: str, zero_output_for_mask: bool | None = None) -> Layer:
    _refuse_options(cfg, where, return_state=(False,), time_major=(False,))
    units = int(cfg["units"])
    use_bias = cfg.get("use_bias", True)
    w = _take(weights, 3 if use_bias else 2, where)
    gates = GATES[kind]
    bias = w[2] if use_bias else np.zeros(gates * units, np.float32)
    attrs = {
        "units": units,
        "return_sequences": bool(cfg.get("return_sequences", False)),
        "go_backwards": bool(cfg.get("go_backwards", False)),
        "stateful": bool(cfg.get("stateful", False)),
        "zero_output_for_mask": bool(cfg.get("zero_output_for_mask", False)
                                     if zero_output_for_mask is None else zero_output_for_mask),
        "activation": ctx.activation(cfg.get("activation", "tanh"), where, gate=True),
    }
    tensors = {"kernel": w[0], "recurrent_kernel": w[1]}
    if kind != "rnn":
        attrs["recurrent_activation"] = ctx.activation(cfg.get("recurrent_activation", "sigmoid"), where, gate=True)
    if kind == "lstm":
        attrs.update(output_activation=attrs["activation"], clip=0.0, input_forget=False)
    if kind == "gru":
        attrs["reset_after"] = bool(cfg.get("reset_after", bias.ndim == 2))  # Keras < 2.1 wrote no key
        if attrs["reset_after"] != (bias.ndim == 2) and use_bias:
            raise FormatError(f"{where}: reset_after={attrs['reset_after']} does not fit a bias of shape {bias.shape}")
        if bias.ndim == 2:  # reset_after: [input bias, recurrent bias]
            tensors["bias"], tensors["recurrent_bias"] = _f32(bias[0]), _f32(bias[1])
        else:
            tensors["bias"], tensors["recurrent_bias"] = bias, np.zeros_like(bias)
    else:
        tensors["bias"] = bias
    return Layer(name, kind, [source], attrs, tensors)


_RECURRENT_CLASSES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}


def _convert_recurrent(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    kind = _RECURRENT_CLASSES[layer.class_name]
    return [_recurrent(kind, layer.config, ctx.weights(layer), layer.name, inputs[0], ctx, layer.where())]


_MERGE_MODES = {"concat": "concatenate", "sum": "add", "mul": "multiply", "ave": "average"}


def _convert_bidirectional(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    cfg, where = layer.config, layer.where()
    forward = cfg["layer"]
    backward = cfg.get("backward_layer") or {
        "class_name": forward["class_name"],
        "config": dict(forward["config"], go_backwards=not forward["config"].get("go_backwards", False))}
    if forward["class_name"] not in _RECURRENT_CLASSES or backward["class_name"] != forward["class_name"]:
        raise UnsupportedError(f"{where}: Bidirectional wraps {forward['class_name']}; supported: "
                               f"{', '.join(_RECURRENT_CLASSES)} (the same class both ways)")
    mode = cfg.get("merge_mode", "concat")
    if mode not in _MERGE_MODES:
        raise UnsupportedError(f"{where}: merge_mode {mode!r} is not supported; supported: {', '.join(_MERGE_MODES)}")
    kind = _RECURRENT_CLASSES[forward["class_name"]]
    weights = ctx.weights(layer)
    half = len(weights) // 2
    return_sequences = bool(forward["config"].get("return_sequences", False))
    fwd = _recurrent(kind, forward["config"], weights[:half], f"{layer.name}/forward", inputs[0], ctx,
                     where, zero_output_for_mask=return_sequences)
    bwd = _recurrent(kind, backward["config"], weights[half:], f"{layer.name}/backward", inputs[0], ctx,
                     where, zero_output_for_mask=return_sequences)
    out = [fwd, bwd]
    merged = [fwd.name, bwd.name]
    if return_sequences:
        # Keras returns a go_backwards layer's outputs in processing order; realign them in time.
        out.append(Layer(f"{layer.name}/realign", "reverse", [bwd.name]))
        merged[1] = out[-1].name
    out.append(Layer(layer.name, "merge", merged, {"op": _MERGE_MODES[mode], "mask_combine": ctx.mask_combine}))
    return out


def _dense(cfg: dict, weights: list[np.ndarray], name: str, source: str, ctx: _Context, where: str) -> Layer:
    if cfg.get("lora_rank") or cfg.get("quantization_config"):
        raise UnsupportedError(f"{where}: LoRA or quantized Dense layers are not supported")
    use_bias = cfg.get("use_bias", True)
    w = _take(weights, 2 if use_bias else 1, where)
    bias = w[1] if use_bias else np.zeros(w[0].shape[1], np.float32)
    return Layer(name, "dense", [source], {"activation": ctx.activation(cfg.get("activation"), where)},
                 {"kernel": w[0], "bias": bias})


def _convert_dense(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    return [_dense(layer.config, ctx.weights(layer), layer.name, inputs[0], ctx, layer.where())]


def _convert_time_distributed(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    inner = layer.config["layer"]
    if inner["class_name"] != "Dense":
        raise UnsupportedError(f"{layer.where()}: TimeDistributed({inner['class_name']}) is not supported; "
                               "supported: TimeDistributed(Dense)")
    return [_dense(inner["config"], ctx.weights(layer), layer.name, inputs[0], ctx, layer.where())]


def _convert_embedding(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    (table,) = _take(ctx.weights(layer), 1, layer.where())
    return [Layer(layer.name, "embedding", inputs, {"mask_zero": bool(layer.config.get("mask_zero", False))},
                  {"embeddings": table})]


def _convert_conv1d(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    cfg, where = layer.config, layer.where()
    _refuse_options(cfg, where, data_format=("channels_last",), groups=(1,))
    use_bias = cfg.get("use_bias", True)
    w = _take(ctx.weights(layer), 2 if use_bias else 1, where)
    bias = w[1] if use_bias else np.zeros(w[0].shape[2], np.float32)
    attrs = {"strides": _single(cfg.get("strides", 1)), "dilation": _single(cfg.get("dilation_rate", 1)),
             "padding": cfg.get("padding", "valid"), "activation": ctx.activation(cfg.get("activation"), where)}
    _refuse_options(attrs, where, padding=("valid", "same", "causal"))
    return [Layer(layer.name, "conv1d", inputs, attrs, {"kernel": w[0], "bias": bias})]


def _single(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _convert_pooling(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    cfg = layer.config
    _refuse_options(cfg, layer.where(), data_format=("channels_last",), padding=("valid", "same"))
    size = _single(cfg.get("pool_size", 2))
    strides = cfg.get("strides")
    return [Layer(layer.name, "pool1d", inputs, {
        "op": "max" if layer.class_name.startswith("Max") else "average", "pool_size": size,
        "strides": size if strides is None else _single(strides), "padding": cfg.get("padding", "valid")})]


def _convert_global_pooling(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    _refuse_options(layer.config, layer.where(), data_format=("channels_last",), keepdims=(False,))
    return [Layer(layer.name, "global_pool1d", inputs,
                  {"op": "max" if "Max" in layer.class_name else "average"})]


def _last_axis_only(layer: _KerasLayer, source: str, ctx: _Context) -> None:
    axis = layer.config.get("axis", -1)
    if not ctx.is_last_axis(axis, source):
        raise UnsupportedError(f"{layer.where()}: axis {axis} is not supported; supported: the last axis")


def _convert_batch_norm(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    cfg, where = layer.config, layer.where()
    _last_axis_only(layer, inputs[0], ctx)
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    w = _take(ctx.weights(layer), 2 + scale + center, where)
    gamma = w.pop(0) if scale else np.ones_like(w[-1])
    beta = w.pop(0) if center else np.zeros_like(w[-1])
    mean, var = w
    factor = (gamma / np.sqrt(var + np.float32(cfg.get("epsilon", 1e-3)))).astype(np.float32)
    return [Layer(layer.name, "batch_norm", inputs, {},
                  {"scale": factor, "offset": (beta - mean * factor).astype(np.float32)})]


def _convert_layer_norm(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    cfg, where = layer.config, layer.where()
    _last_axis_only(layer, inputs[0], ctx)
    _refuse_options(cfg, where, rms_scaling=(False,))
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    w = _take(ctx.weights(layer), scale + center, where)
    width = w[0].shape[0] if w else None
    if width is None:
        raise UnsupportedError(f"{where}: LayerNormalization with neither scale nor center is not supported")
    gamma = w.pop(0) if scale else np.ones(width, np.float32)
    beta = w.pop(0) if center else np.zeros(width, np.float32)
    return [Layer(layer.name, "layer_norm", inputs, {"epsilon": float(cfg.get("epsilon", 1e-3))},
                  {"gamma": gamma, "beta": beta})]


def _convert_merge(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    op = {"Add": "add", "Multiply": "multiply", "Average": "average", "Concatenate": "concatenate"}[layer.class_name]
    if op == "concatenate":
        _last_axis_only(layer, inputs[0], ctx)
    return [Layer(layer.name, "merge", inputs, {"op": op, "mask_combine": ctx.mask_combine})]


def _simple(kind: str, **attrs: Callable[[dict], Any]):
    def convert(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
        return [Layer(layer.name, kind, inputs, {key: get(layer.config) for key, get in attrs.items()})]
    return convert


def _convert_flatten(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    _refuse_options(layer.config, layer.where(), data_format=("channels_last", None))
    return [Layer(layer.name, "flatten", inputs)]


def _convert_activation(layer: _KerasLayer, inputs: list[str], ctx: _Context) -> list[Layer]:
    return [Layer(layer.name, "activation", inputs,
                  {"activation": ctx.activation(layer.config.get("activation"), layer.where())})]


_CONVERTERS: dict[str, Callable] = {
    "LSTM": _convert_recurrent, "GRU": _convert_recurrent, "SimpleRNN": _convert_recurrent,
    "Bidirectional": _convert_bidirectional,
    "Dense": _convert_dense, "TimeDistributed": _convert_time_distributed,
    "Activation": _convert_activation,
    "Embedding": _convert_embedding,
    "Masking": _simple("masking", mask_value=lambda c: float(c.get("mask_value", 0.0))),
    "RepeatVector": _simple("repeat", n=lambda c: int(c["n"])),
    "Flatten": _convert_flatten,
    "Conv1D": _convert_conv1d,
    "MaxPooling1D": _convert_pooling, "AveragePooling1D": _convert_pooling,
    "GlobalAveragePooling1D": _convert_global_pooling, "GlobalMaxPooling1D": _convert_global_pooling,
    "BatchNormalization": _convert_batch_norm, "LayerNormalization": _convert_layer_norm,
    "Add": _convert_merge, "Concatenate": _convert_merge, "Multiply": _convert_merge, "Average": _convert_merge,
}
_IDENTITY = ("Dropout", "SpatialDropout1D", "GaussianNoise")  # identity at inference
SUPPORTED_LAYERS = tuple(sorted([*_CONVERTERS, *_IDENTITY, "InputLayer"]))


def _input_layer(layer: _KerasLayer, consumers: list[str]) -> Layer:
    shape = list(layer.config.get("batch_shape") or layer.config.get("batch_input_shape") or [])
    if len(shape) == 2 and consumers and all(c == "Embedding" for c in consumers):
        dtype = "int32"
    elif len(shape) == 3:
        dtype = "float32"
    else:
        raise UnsupportedError(f"the model input has shape {shape}; supported: sequences (batch, time, features), "
                               "or token ids (batch, time) read by an Embedding")
    attrs = {"shape": shape[1:], "dtype": dtype}
    if shape[0] is not None:
        attrs["batch"] = int(shape[0])
    return Layer(layer.name, "input", [], attrs)


def import_keras(path: str | Path) -> Graph:
    """Convert a Keras model file to the IR, refusing anything unsupported by name."""
    path = Path(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    try:
        config, weights, dialect, h5 = _read_keras_archive(path) if is_zip else _read_legacy_h5(path)
        with h5:
            try:
                layers, output = _model_layers(config)
            except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
                raise FormatError(f"{path}: the model config is malformed ({type(exc).__name__}: {exc})") from None
            return _convert_layers(path, layers, output, _Context(dialect, weights))
    except EdgeLSTMError:
        raise
    except Exception as exc:  # noqa: BLE001  (HDF5 raises OSError, RuntimeError, KeyError... on a corrupt file)
        if not raised_in(exc, "h5py"):
            raise
        raise FormatError(f"{path} is corrupt: HDF5 could not read it ({type(exc).__name__}: {exc})") from None



def _convert_layers(path: Path, layers: list[_KerasLayer], output: str, ctx: _Context) -> Graph:
    alias: dict[str, str] = {}  # Keras layer name -> IR layer that holds its output
    masks = _Masks(layers, alias)  # mask ops are not live: they feed layers only as mask= arguments
    live = _live_names(layers, output)
    layers = [layer for layer in layers if layer.name in live]
    inputs = [layer for layer in layers if layer.class_name == "InputLayer"]
    if len(inputs) != 1 or layers[0] is not inputs[0]:
        raise UnsupportedError(f"the model has {len(inputs)} inputs; edgelstm converts models with exactly one")
    ir_layers: list[Layer] = []
    for layer in layers:
        try:
            if layer.class_name == "InputLayer":
                converted = [_input_layer(layer, [l.class_name for l in layers if layer.name in l.inbound])]
            else:
                sources = [alias[name] for name in layer.inbound]
                if not sources:
                    raise UnsupportedError(f"{layer.where()} reads no input")
                masks.check(layer, sources)
                if layer.class_name in _IDENTITY:
                    alias[layer.name] = sources[0]
                    continue
                convert = _CONVERTERS.get(layer.class_name)
                if convert is None:
                    hint = (" (a Lambda would run code from the file; rebuild the model without it)"
                            if "Lambda" in layer.class_name else "")
                    raise UnsupportedError(f"{layer.where()} is not supported{hint}; supported layers: "
                                           f"{', '.join(SUPPORTED_LAYERS)}")
                converted = convert(layer, sources, ctx)
            for ir_layer in converted:
                if ir_layer.name in ctx.shapes:
                    raise UnsupportedError(f"{layer.where()}: the name '{ir_layer.name}' is taken by another layer")
                ctx.shapes[ir_layer.name] = infer_shape(ir_layer, [ctx.shapes[n] for n in ir_layer.inputs],
                                                        FormatError)
                masks.add(ir_layer)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise FormatError(f"{path}: {layer.where()} has a malformed config or weights "
                              f"({type(exc).__name__}: {exc})") from None
        ir_layers += converted
        alias[layer.name] = converted[-1].name
    graph = Graph(ir_layers, alias[output], metadata={"source": path.name, "source_format": ctx.dialect})
    if any(l.attrs.get("stateful") for l in ir_layers):
        graph.metadata["stateful"] = True
    validate(graph, error=FormatError)
    return graph
