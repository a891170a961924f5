"""ONNX importer: the recurrent models PyTorch (both exporters) and tf2onnx write, opset 13+.

The graph is walked once in order, each ONNX value becoming one of:

- a constant (`np.ndarray`): initializers, ``Constant`` nodes, and everything computed from them;
- `_Dims`: a shape with symbolic batch (``B``) and time (``T``) entries, from ``Shape`` of a
  runtime tensor, so the exporters' shape plumbing (Gather, Slice, Concat, Mul, Unsqueeze on
  shapes) folds away;
- `_Zeros`: a zero tensor of a symbolic shape (the exporters' initial states);
- `_Run`: a runtime tensor, the output of an IR layer, seen through a view: the labels of its
  ONNX axes (``B`` batch, ``T`` time, ``F`` features, ``1`` an inserted unit axis, ``D`` the
  direction axis of a recurrent op's output, one IR layer per direction).

Ops on constants run in numpy; ops on runtime tensors either change the view (Transpose, Squeeze,
Unsqueeze, Reshape that merges directions...) or become IR layers. The IR is the same the Keras
importer produces; a last pass turns ``recurrent(return_sequences) -> take_step(-1)`` into a
recurrent layer that returns its last output, as Keras models have it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import raised_in
from ..errors import EdgeLSTMError, FormatError, UnsupportedError
from ..ir import GATES, RECURRENT_KINDS, Graph, Layer, infer_shape, validate

MIN_OPSET = 13


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UnsupportedError("reading ONNX files needs the onnx package: pip install 'edgelstm[onnx]'") from None
    return onnx


# ---------------------------------------------------------------------------------------------
# Values

@dataclasses.dataclass(frozen=True)
class _Dims:
    """A 1-D int64 shape vector whose entries are ints or the symbols "B" and "T"."""

    dims: tuple


@dataclasses.dataclass(frozen=True)
class _Zeros:
    shape: tuple


@dataclasses.dataclass(frozen=True)
class _Run:
    names: tuple[str, ...]  # the IR layer (one per direction when "D" is among the axes)
    axes: tuple[str, ...]


_FOLDABLE = (np.ndarray, _Dims)


def _as_dims(value) -> tuple | None:
    if isinstance(value, _Dims):
        return value.dims
    if isinstance(value, np.ndarray) and value.ndim <= 1 and value.dtype.kind in "iu":
        return tuple(int(v) for v in value.reshape(-1))
    return None


def _dims_value(dims: tuple):
    return np.array(dims, np.int64) if all(isinstance(d, int) for d in dims) else _Dims(tuple(dims))


# ---------------------------------------------------------------------------------------------
# Loading, with external data kept inside the model's folder

def _load(path: Path):
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError and friends
        raise FormatError(f"{path} is not a readable ONNX model (corrupt or truncated: {exc})") from None
    folder = path.resolve().parent
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise FormatError(f"{path}: tensor '{tensor.name}' keeps its external data at '{location}', "
                              "outside the model's folder; refused")
        if not target.is_file():
            raise FormatError(f"{path}: the external data file '{location}' of tensor '{tensor.name}' is missing; "
                              "keep it beside the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise FormatError(f"{path}: tensor '{tensor.name}' has a malformed external data offset or length") \
                from None
        size = target.stat().st_size
        if length < 0:
            length = size - offset
        if offset < 0 or offset + length > size:
            raise FormatError(f"{path}: external data of tensor '{tensor.name}' lies beyond the end of '{location}'")
        with open(target, "rb") as f:
            f.seek(offset)
            tensor.raw_data = f.read(length)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_OPSET:
        raise UnsupportedError(f"{path} uses opset {opsets.get('ai.onnx')}; edgelstm reads opset {MIN_OPSET} "
                               "and newer (re-export with a newer opset_version)")
    return model


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t


# ---------------------------------------------------------------------------------------------
# The converter

class _LayoutError(UnsupportedError):
    """A runtime tensor reached an op in a layout the op cannot take."""


class _Converter:
    def __init__(self, model, path: Path, time_major: bool):
        self.onnx = _onnx()
        self.path = path
        self.time_major = time_major  # how the graph input is read: [time, batch, ...] or [batch, time, ...]
        self.fixed_batch: int | None = None
        self.graph = model.graph
        self.values: dict[str, Any] = {}
        self.layers: list[Layer] = []
        self.dense_value = ("", "")  # (IR dense layer, the ONNX value it produced): what may fold into it
        self.shapes: dict[str, tuple] = {}
        self.uses: dict[str, int] = {}
        for name in [n for node in self.graph.node for n in node.input] + [o.name for o in self.graph.output]:
            self.uses[name] = self.uses.get(name, 0) + 1
        for node in self.graph.node:  # a corrupt file can hold bytes where names belong
            if not all(isinstance(v, str) for v in (node.op_type, node.domain, node.name, *node.input, *node.output)):
                raise FormatError(f"{path}: a node's op type or names are not text (a corrupt file)")
            if not node.output:
                raise FormatError(f"{path}: node '{node.name}' ({node.op_type}) has no outputs (a corrupt file)")
        for tensor in self.graph.initializer:
            try:
                self.values[tensor.name] = self.onnx.numpy_helper.to_array(tensor).copy()
            except (TypeError, ValueError, KeyError) as exc:
                raise FormatError(f"{path}: initializer '{tensor.name}' cannot be read ({exc!r})") from None

    # -- helpers --------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"node '{node.name or node.output[0]}' ({node.op_type})"

    def attr(self, node, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                value = self.onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def const(self, node, index: int, what: str) -> np.ndarray:
        value = self.values.get(node.input[index]) if index < len(node.input) and node.input[index] else None
        if not isinstance(value, np.ndarray):
            raise UnsupportedError(f"{self.where(node)}: its {what} must be a constant")
        return value

    def add(self, layer: Layer) -> str:
        if layer.name in self.shapes:
            layer.name = f"{layer.name}_{len(self.layers)}"
        self.shapes[layer.name] = infer_shape(layer, [self.shapes[n] for n in layer.inputs], FormatError)
        self.layers.append(layer)
        return layer.name

    def run_axes(self, name: str) -> tuple[str, ...]:
        """The axes of an IR layer's output in the IR's layout."""
        if len(self.shapes[name]) == 2:
            return ("B", "T", "F")
        return ("B", "T") if self.layers[0].name == name else ("B", "F")

    def canonical(self, node, value: _Run, what: str = "input") -> str:
        """The IR layer of a runtime tensor seen in the IR's own layout (batch first)."""
        if len(value.names) != 1 or value.axes != self.run_axes(value.names[0]):
            raise _LayoutError(f"{self.where(node)}: its {what} has layout {value.axes}; edgelstm needs "
                                   f"{self.run_axes(value.names[0]) if len(value.names) == 1 else 'one direction'}"
                                   " here")
        return value.names[0]

    def single(self, node, value: _Run, what: str = "input") -> str:
        """The IR layer of a runtime tensor in any view that keeps one direction and the feature axis
        last (row-wise layers and merges commute with the order of the other axes)."""
        if len(value.names) != 1 or value.axes[-1:] != self.run_axes(value.names[0])[-1:]:
            raise _LayoutError(f"{self.where(node)}: its {what} has layout {value.axes}, which edgelstm "
                                   "cannot feed to this op")
        return value.names[0]

    def dims_of(self, value: _Run) -> tuple:
        out = []
        for axis in value.axes:
            if "*" in axis:  # axes merged by a Reshape (tf2onnx's Tensordot: [T, B, F] -> [T*B, F])
                parts = self.dims_of(_Run(value.names, tuple(axis.split("*"))))
                out.append(_join(parts))
            elif axis in ("B", "T"):
                size = self.shapes[value.names[0]][0] if axis == "T" else self.fixed_batch
                out.append(axis if size is None else size)
            elif axis == "F":
                out.append(self.shapes[value.names[0]][-1])
            else:
                out.append(len(value.names) if axis == "D" else 1)
        return tuple(out)

    # -- driving --------------------------------------------------------------------------
    def handler(self, op_type: str) -> Callable | None:
        """The method converting an op: ``op_<type>``, or an activation / recurrent op by table."""
        if op_type in _ACTIVATION_OPS:
            return lambda node: self._activation(node, _ACTIVATION_OPS[op_type])
        if op_type in _RECURRENT_OPS:
            return lambda node: self._recurrent(node, _RECURRENT_OPS[op_type])
        return getattr(self, "op_" + op_type, None)

    def convert(self) -> Graph:
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1 or len(self.graph.output) != 1:
            raise UnsupportedError(f"{self.path} has {len(inputs)} inputs and {len(self.graph.output)} outputs; "
                                   "edgelstm converts models with exactly one of each")
        # Refuse unsupported ops before anything else can fail, control flow first: it explains the rest.
        refused = [n for n in self.graph.node if n.domain not in ("", "ai.onnx") or self.handler(n.op_type) is None]
        for node in sorted(refused, key=lambda n: n.op_type not in ("Loop", "Scan", "If"))[:1]:
            hint = (" (tf2onnx writes a Keras GRU as a Loop: convert the Keras model itself with edgelstm, "
                    "or export with PyTorch)" if node.op_type in ("Loop", "Scan") else "")
            raise UnsupportedError(f"{self.where(node)}: the op {node.op_type} is not supported{hint}; "
                                   f"supported ops: {', '.join(SUPPORTED_OPS)}")
        self._input(inputs[0])
        for node in self.graph.node:
            handler = self.handler(node.op_type)
            if node.op_type in _ZERO_PRESERVING and node.input and isinstance(self.values.get(node.input[0]), _Zeros):
                self.values[node.output[0]] = self.values[node.input[0]]  # slices of zero initial states
                continue
            try:
                results = handler(node)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise FormatError(f"{self.path}: {self.where(node)} is malformed or unsupported "
                                  f"({type(exc).__name__}: {exc})") from None
            for name, value in zip(node.output, results if isinstance(results, list) else [results]):
                if name:
                    self.values[name] = value
            if node.op_type in _VIEW_OPS and node.input[0] == self.dense_value[1] \
                    and self.uses.get(node.input[0]) == 1:
                self.dense_value = (self.dense_value[0], node.output[0])  # still only that dense's output
        out = self.values.get(self.graph.output[0].name)
        if not isinstance(out, _Run):
            raise UnsupportedError(f"{self.path}: the model output does not depend on its input")
        output = out.names[0]
        if len(out.names) > 1:  # an output with a direction axis: directions side by side in features
            output = self.add(Layer(self.graph.output[0].name, "merge", list(out.names),
                                    {"op": "concatenate", "mask_combine": "any"}))
        wanted = [l for l in self.run_axes(output) if l != "F" or self.shapes[output][-1] != 1 or "F" in out.axes]
        if sorted(l for l in out.axes if l not in ("1", "D")) != sorted(wanted):  # a width-1 F may be squeezed
            raise _LayoutError(f"{self.path}: the output has layout {out.axes}, which edgelstm cannot produce")
        metadata = {"source": self.path.name, "source_format": "onnx"}
        layout = {"input": list(self.values[self.layers[0].name].axes), "output": list(out.axes),
                  "directions": len(out.names)}
        if layout["input"] != list(self.run_axes(self.layers[0].name)) or layout["output"] != list(
                self.run_axes(output)):
            metadata["source_layout"] = layout  # how the ONNX model's tensors map onto ours (see crosscheck)
        graph = Graph(self.layers, output, metadata=metadata)
        _last_step_pass(graph)
        validate(graph, error=FormatError)
        return graph

    def _input(self, value_info) -> None:
        tensor = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        ints = tensor.elem_type in (self.onnx.TensorProto.INT64, self.onnx.TensorProto.INT32)
        if len(dims) != (2 if ints else 3) or (not ints and dims[2] is None):
            raise UnsupportedError(f"the model input '{value_info.name}' has shape {dims}; supported: "
                                   "float sequences [batch, time, features] or int token ids [batch, time]")
        time = dims[0] if self.time_major else dims[1]
        self.fixed_batch = dims[1] if self.time_major else dims[0]  # an export traced at a fixed batch
        shape = [time] if ints else [time, dims[2]]
        name = value_info.name
        self.add(Layer(name, "input", [], {"shape": shape, "dtype": "int32" if ints else "float32"}))
        axes = ("T", "B") if self.time_major else ("B", "T")
        self.values[name] = _Run((name,), axes if ints else axes + ("F",))

    # -- constant and shape plumbing ------------------------------------------------------
    def op_Constant(self, node):
        for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
            value = self.attr(node, key)
            if value is not None:
                return self.onnx.numpy_helper.to_array(value) if key == "value" else np.array(value)
        raise UnsupportedError(f"{self.where(node)}: only tensor and number constants are supported")

    def op_Shape(self, node):
        value = self.values[node.input[0]]
        if isinstance(value, _Dims):
            dims = (len(value.dims),)
        else:
            dims = value.shape if isinstance(value, (np.ndarray, _Zeros)) else self.dims_of(value)
        start, end = self.attr(node, "start", 0), self.attr(node, "end", None)
        return _dims_value(tuple(dims)[start:end])

    def op_ConstantOfShape(self, node):
        dims = _as_dims(self.values[node.input[0]])
        fill = self.attr(node, "value")
        fill = self.onnx.numpy_helper.to_array(fill).reshape(-1)[0] if fill is not None else np.float32(0)
        if all(isinstance(d, int) for d in dims):
            return np.full(dims, fill)
        if fill != 0:
            raise UnsupportedError(f"{self.where(node)}: a non-zero fill of a batch-sized tensor is not supported")
        return _Zeros(dims)

    def op_Expand(self, node):
        value, dims = self.values[node.input[0]], _as_dims(self.values[node.input[1]])
        if isinstance(value, np.ndarray) and all(isinstance(d, int) for d in dims):
            return value * np.ones(dims, value.dtype)
        if isinstance(value, (np.ndarray, _Zeros)) and not np.any(value if isinstance(value, np.ndarray) else 0):
            return _Zeros(dims)
        if isinstance(value, np.ndarray) and value.ndim == len(dims) and all(
                isinstance(d, int) and d in (v, 1, -1) or v == 1 for d, v in zip(dims, value.shape)):
            return value  # stays broadcastable over the batch (an initial state the same for every sequence)
        raise UnsupportedError(f"{self.where(node)}: expanding this value to {dims} is not supported")

    def _fold(self, node, numpy_fn: Callable, dims_fn: Callable | None = None):
        """Run `numpy_fn` on constant inputs, or `dims_fn` on symbolic shapes; None otherwise."""
        values = [self.values[n] if n else None for n in node.input]
        if all(isinstance(v, np.ndarray) or v is None for v in values):
            return numpy_fn(*values)
        if dims_fn is not None and any(isinstance(v, _Dims) for v in values) \
                and all(isinstance(v, _FOLDABLE) or v is None for v in values):
            return dims_fn(*values)
        return None

    def op_Gather(self, node):
        axis = self.attr(node, "axis", 0)
        data, indices = self.values[node.input[0]], self.values[node.input[1]]
        if isinstance(data, _Dims) and isinstance(indices, np.ndarray):
            picked = np.asarray(np.take(np.array(data.dims, dtype=object), indices.astype(np.int64)), dtype=object)
            return _dims_value(tuple(picked.reshape(-1))) if picked.ndim else _Scalar(picked.item())
        if isinstance(data, np.ndarray) and isinstance(indices, np.ndarray):
            return np.asarray(np.take(data, indices, axis=axis))
        if isinstance(data, np.ndarray) and isinstance(indices, _Run):
            return self._embedding(node, data, indices, axis)
        if isinstance(data, _Run) and isinstance(indices, np.ndarray) and indices.ndim == 0:
            return self._select(node, data, axis, int(indices), keep=False)
        raise UnsupportedError(f"{self.where(node)}: this Gather is not an embedding lookup or a step selection")

    def op_Unsqueeze(self, node):
        axes = [int(a) for a in (self.attr(node, "axes") or self.const(node, 1, "axes"))]
        value = self.values[node.input[0]]
        if isinstance(value, _Scalar):
            return _dims_value((value.value,))
        if isinstance(value, np.ndarray):
            return np.expand_dims(value, axes)
        if isinstance(value, _Run):
            labels = list(value.axes)
            for axis in sorted(a % (len(labels) + len(axes)) for a in axes):
                labels.insert(axis, "1")
            return _Run(value.names, tuple(labels))
        raise UnsupportedError(f"{self.where(node)}: cannot unsqueeze this value")

    def op_Squeeze(self, node):
        value = self.values[node.input[0]]
        axes = self.attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes")
        if isinstance(value, np.ndarray):
            return np.squeeze(value, tuple(int(a) for a in axes) if axes is not None else None)
        if isinstance(value, _Run):
            dims = self.dims_of(value)
            drop = {a % len(dims) for a in axes} if axes is not None else {i for i, d in enumerate(dims) if d == 1}
            if any(dims[a] != 1 for a in drop):
                raise UnsupportedError(f"{self.where(node)}: cannot squeeze axes of size {[dims[a] for a in drop]}")
            return _Run(value.names, tuple(l for i, l in enumerate(value.axes) if i not in drop))
        raise UnsupportedError(f"{self.where(node)}: cannot squeeze this value")

    def op_Concat(self, node):
        axis = self.attr(node, "axis")
        values = [self.values[n] for n in node.input]
        if all(isinstance(v, _Zeros) for v in values):
            return values[0]  # initial states of several layers, all zero
        if all(isinstance(v, (np.ndarray, _Zeros)) for v in values):  # batch-sized zeros broadcast as size 1
            return np.concatenate([np.zeros([d if isinstance(d, int) else 1 for d in v.shape], np.float32)
                                   if isinstance(v, _Zeros) else v for v in values], axis=axis)
        if all(isinstance(v, (_FOLDABLE, _Scalar)) for v in values):
            return _dims_value(sum((_as_dims(v) if not isinstance(v, _Scalar) else (v.value,) for v in values), ()))
        if all(isinstance(v, _Run) for v in values) and len({v.axes for v in values}) == 1 \
                and values[0].axes[axis] == "D":  # final states of several layers (h_n)
            return _Run(sum((v.names for v in values), ()), values[0].axes)
        if all(isinstance(v, _Run) for v in values) and len({v.axes for v in values}) == 1:
            names = [self.single(node, v) for v in values]
            if axis % len(values[0].axes) != len(values[0].axes) - 1:
                raise UnsupportedError(f"{self.where(node)}: concatenation is supported on the feature axis only")
            return _Run((self.add(Layer(node.output[0], "merge", names, {"op": "concatenate",
                                                                          "mask_combine": "any"})),),
                        values[0].axes)
        raise UnsupportedError(f"{self.where(node)}: cannot concatenate a runtime tensor with constants")

    def op_Slice(self, node):
        data = self.values[node.input[0]]
        starts, ends = (_as_dims(self.values[n]) for n in node.input[1:3])
        axes = _as_dims(self.values[node.input[3]]) if len(node.input) > 3 and node.input[3] else None
        steps = _as_dims(self.values[node.input[4]]) if len(node.input) > 4 and node.input[4] else None
        if isinstance(data, (np.ndarray, _Dims)):
            if not all(isinstance(v, int) for v in (*starts, *ends)):
                raise UnsupportedError(f"{self.where(node)}: slice bounds must be constants")
            array = np.array(_as_dims(data) if isinstance(data, _Dims) else data, dtype=object)
            index = [slice(None)] * array.ndim
            for i, axis in enumerate(axes if axes is not None else range(len(starts))):
                index[axis] = slice(starts[i], ends[i], steps[i] if steps else 1)
            result = array[tuple(index)]
            return _dims_value(tuple(result)) if isinstance(data, _Dims) else result.astype(data.dtype)
        if isinstance(data, _Run) and len(starts) == 1 and (steps is None or steps[0] == 1):
            axis = (axes or (0,))[0] % len(data.axes)
            size = self.dims_of(data)[axis]
            start, end = starts[0], ends[0]
            to_end = end >= (1 << 31) - 1 or (isinstance(size, int) and end >= size)
            if start == 0 and to_end:
                return data  # the whole axis
            if start == -1 and to_end:
                return self._select(node, data, axis, -1, keep=True)
            if start >= 0 and end - start == 1 and data.axes[axis] != "F":
                return self._select(node, data, axis, start, keep=True)
            if data.axes[axis] == "F" and isinstance(size, int):
                first, stop, _ = slice(start, end).indices(size)
                if stop > first:
                    return self._features(node, node.output[0], data, first, stop - first)
        raise UnsupportedError(f"{self.where(node)}: this Slice of a runtime tensor is not supported "
                               "(supported: whole axes, one step, one direction)")

    def op_Range(self, node):
        return self._fold(node, lambda a, b, c: np.arange(a, b, c))

    def _elementwise(self, node, numpy_fn, dims_fn=None):
        result = self._fold(node, numpy_fn, dims_fn)
        if result is None:
            raise UnsupportedError(f"{self.where(node)}: {node.op_type} of runtime tensors is supported only "
                                   "where it folds into a layer (a bias after MatMul, a residual Add)")
        return result

    def _affine(self, node, scale=None, offset=None, swap: bool = False):
        """x * scale + offset on the feature axis, as a folded ``batch_norm`` layer, for an op of a
        runtime tensor and a constant; None when the op does not have that form."""
        a, b = (self.values[n] for n in node.input)
        run, const = (a, b) if isinstance(a, _Run) else (b, a)
        if not (isinstance(run, _Run) and isinstance(const, np.ndarray)) or (swap and run is b):
            return None
        width = self.shapes[self.single(node, run)][-1]
        if not (const.size == 1 or (const.shape[-1:] == (width,) and const.size == width)):
            raise UnsupportedError(f"{self.where(node)}: a constant of shape {const.shape} is supported only "
                                   "per feature")
        const = np.broadcast_to(const.reshape(-1).astype(np.float32), (width,))
        scale = np.ones(width, np.float32) if scale is None else scale(const)
        offset = np.zeros(width, np.float32) if offset is None else offset(const)
        layer = Layer(node.output[0], "batch_norm", [run.names[0]], {},
                      {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)})
        return _Run((self.add(layer),), run.axes)

    def _merge_runs(self, node, op: str) -> _Run | None:
        """An elementwise op of two runtime tensors in the same view, as a merge layer."""
        a, b = (self.values[n] for n in node.input)
        if not (isinstance(a, _Run) and isinstance(b, _Run) and a.axes == b.axes):
            return None
        names = [self.single(node, v) for v in (a, b)]
        return _Run((self.add(Layer(node.output[0], "merge", names, {"op": op, "mask_combine": "any"})),), a.axes)

    def op_Mul(self, node):
        merged = self._merge_runs(node, "multiply")
        if merged is not None:
            return merged
        return (self._affine(node, scale=lambda c: c)
                or self._elementwise(node, np.multiply, lambda p, q: _dims_arith(p, q, lambda x, y: x * y)))

    def op_Div(self, node):
        return self._affine(node, scale=lambda c: 1.0 / c, swap=True) or self._elementwise(node, _divide)

    def op_Sub(self, node):
        return self._affine(node, offset=lambda c: -c, swap=True) or self._elementwise(node, np.subtract)

    def op_Equal(self, node):
        # A symbolic size equals itself and never a negative number (torch compares shapes with -1).
        return self._elementwise(node, np.equal, lambda a, b: _dims_arith(
            a, b, lambda x, y: int(x == y) if isinstance(x, int) == isinstance(y, int) or min(
                v for v in (x, y) if isinstance(v, int)) < 0 else _unknown(x, y)))

    def op_ReduceProd(self, node):
        value = self.values[node.input[0]]
        if isinstance(value, np.ndarray):
            axes = self.attr(node, "axes")
            return np.asarray(np.prod(value, axis=tuple(axes) if axes else None,
                                      keepdims=bool(self.attr(node, "keepdims", 1))))
        if isinstance(value, _Dims) and not self.attr(node, "keepdims", 1):
            return _Scalar(_join(value.dims))
        raise UnsupportedError(f"{self.where(node)}: ReduceProd is supported on constants and shapes only")

    def op_Where(self, node):
        cond, a, b = (self.values[n] for n in node.input)
        if all(isinstance(v, np.ndarray) for v in (cond, a, b)):
            return np.where(cond, a, b)
        if isinstance(cond, np.ndarray) and all(isinstance(v, _FOLDABLE) for v in (a, b)):
            picked = [x if c else y for c, x, y in zip(cond.reshape(-1), _as_dims(a), _as_dims(b))]
            return _dims_value(tuple(picked))
        raise UnsupportedError(f"{self.where(node)}: Where is supported on constants and shapes only")

    def op_Add(self, node):
        merged = self._merge_runs(node, "add")
        if merged is not None:
            return merged
        a, b = (self.values[n] for n in node.input)
        run, bias = (a, b) if isinstance(a, _Run) else (b, a)
        if isinstance(run, _Run) and isinstance(bias, np.ndarray):
            return self._add_bias(node, run, bias) or self._affine(node, offset=lambda c: c)
        return self._elementwise(node, np.add, lambda x, y: _dims_arith(x, y, lambda p, q: p + q))

    def op_Cast(self, node):
        value = self.values[node.input[0]]
        to = self.onnx.helper.tensor_dtype_to_np_dtype(self.attr(node, "to"))
        if isinstance(value, np.ndarray):
            return value.astype(to)
        if isinstance(value, (_Dims, _Zeros, _Scalar)):
            return value
        if isinstance(value, _Run) and (np.dtype(to).kind == "f") == (value.axes != ("B", "T")):
            return value
        raise UnsupportedError(f"{self.where(node)}: a Cast that changes a runtime tensor's kind is not supported")

    def op_Identity(self, node):
        return self.values[node.input[0]]

    def op_Dropout(self, node):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise UnsupportedError(f"{self.where(node)}: the dropout mask output is not supported")
        return self.values[node.input[0]]

    def op_Transpose(self, node):
        value = self.values[node.input[0]]
        perm = self.attr(node, "perm")
        if isinstance(value, np.ndarray):
            return np.transpose(value, perm)
        if isinstance(value, _Run):
            perm = perm if perm is not None else list(reversed(range(len(value.axes))))
            return _Run(value.names, tuple(value.axes[p] for p in perm))
        raise UnsupportedError(f"{self.where(node)}: cannot transpose this value")

    def op_Reshape(self, node):
        value, target = self.values[node.input[0]], _as_dims(self.values[node.input[1]])
        if isinstance(value, np.ndarray):
            return value.reshape(target)
        if isinstance(value, _Dims) and len(target) == 1:
            return value
        if not isinstance(value, _Run):
            raise UnsupportedError(f"{self.where(node)}: cannot reshape this value")
        dims = self.dims_of(value)
        target = [dims[i] if t == 0 else t for i, t in enumerate(target)]
        known = [d for d in dims if d != 1]
        if [d for d in target if d not in (1, -1)] == [d for d in known if d != 1] and -1 not in target:
            return self._unit_axes(value, target)
        return self._merge_axes(node, value, dims, target)

    def op_Flatten(self, node):
        value = self.values[node.input[0]]
        axis = self.attr(node, "axis", 1)
        if isinstance(value, np.ndarray):
            return value.reshape(int(np.prod(value.shape[:axis])), -1)
        if not isinstance(value, _Run):
            raise UnsupportedError(f"{self.where(node)}: cannot flatten this value")
        if axis != 1:
            raise UnsupportedError(f"{self.where(node)}: Flatten with axis {axis} is not supported (supported: 1)")
        rest = [l for l in value.axes[1:] if l != "1"]
        if value.axes[0] == "B" and rest == ["F"] and len(value.names) == 1:
            return _Run(value.names, ("B", "F"))
        name = self.canonical(node, value)
        return _Run((self.add(Layer(node.output[0], "flatten", [name])),), ("B", "F"))

    def op_Split(self, node):
        value = self.values[node.input[0]]
        axis = self.attr(node, "axis", 0)
        sizes = self.attr(node, "split")
        if sizes is None and len(node.input) > 1 and node.input[1]:
            sizes = self.const(node, 1, "split sizes")
        if isinstance(value, np.ndarray):
            sizes = sizes if sizes is not None else _split_sizes(value.shape[axis], len(node.output))
            return list(np.split(value, np.cumsum(sizes)[:-1], axis=axis))
        if isinstance(value, _Run) and value.axes[axis] == "D":
            return [_Run((n,), value.axes) for n in value.names]
        if isinstance(value, _Run) and value.axes[axis] == "F":
            width = self.shapes[self.single(node, value)][-1]
            sizes = list(sizes) if sizes is not None else _split_sizes(width, len(node.output))
            starts = np.cumsum([0, *sizes[:-1]])
            return [self._features(node, out, value, start, size) for out, start, size in
                    zip(node.output, starts, sizes)]
        raise UnsupportedError(f"{self.where(node)}: Split of a runtime tensor is supported across directions "
                               "and features only")

    # -- layers ---------------------------------------------------------------------------
    def _features(self, node, out: str, value: _Run, start: int, size: int) -> _Run:
        """Features [start, start + size) as a Dense with one-hot columns: an exact copy."""
        name = self.single(node, value)
        select = np.zeros((self.shapes[name][-1], size), np.float32)
        select[np.arange(start, start + size), np.arange(size)] = 1.0
        layer = Layer(out, "dense", [name], {"activation": "linear"},
                      {"kernel": select, "bias": np.zeros(size, np.float32)})
        return _Run((self.add(layer),), value.axes)

    def _embedding(self, node, table, ids: _Run, axis: int) -> _Run:
        if axis != 0 or table.ndim != 2 or sorted(ids.axes) != ["B", "T"]:
            raise UnsupportedError(f"{self.where(node)}: only an embedding lookup of [batch, time] ids is supported")
        name = self.add(Layer(node.output[0], "embedding", [ids.names[0]], {"mask_zero": False},
                              {"embeddings": np.ascontiguousarray(table, np.float32)}))
        return _Run((name,), ids.axes + ("F",))

    def _select(self, node, value: _Run, axis: int, index: int, keep: bool) -> _Run:
        """One entry of an axis: a direction, a unit axis, or a time step (a ``take_step`` layer)."""
        axis %= len(value.axes)
        label = value.axes[axis]
        rest = value.axes[:axis] + (("1",) if keep else ()) + value.axes[axis + 1:]
        if label == "D":
            return _Run((value.names[index],), rest)
        if label == "1" and index in (0, -1):
            return _Run(value.names, rest)
        if label == "T" and len(value.names) == 1:
            return _Run((self.add(Layer(node.output[0], "take_step", [value.names[0]], {"index": index})),), rest)
        raise UnsupportedError(f"{self.where(node)}: selecting along the {label} axis is not supported")

    def _unit_axes(self, value: _Run, target: list) -> _Run:
        labels = [l for l in value.axes if l not in ("1",) and not (l == "D" and len(value.names) == 1)]
        out, i = [], 0
        for t in target:
            if t == 1 and (i >= len(labels) or self.dims_of(_Run(value.names, (labels[i],)))[0] != 1):
                out.append("1")
            else:
                out.append(labels[i])
                i += 1
        return _Run(value.names, tuple(out))

    def _merge_axes(self, node, value: _Run, dims: tuple, target: list) -> _Run:
        labels = [l for l, d in zip(value.axes, dims) if d != 1 or l == "D"]
        # The one merge the exporters need: directions into features, [.., D, F] -> [.., D*F].
        if "D" in labels and labels.index("D") + 1 < len(labels) and labels[labels.index("D") + 1] == "F":
            merged = tuple(l for l in labels if l != "D")
            names = list(value.names)
            if len(names) > 1:
                names = [self.add(Layer(node.output[0], "merge", names, {"op": "concatenate",
                                                                         "mask_combine": "any"}))]
            if len([t for t in target if t != 1]) == len([l for l in merged if dims[value.axes.index(l)] != 1]):
                return self._unit_axes(_Run(tuple(names), merged), target)
        regrouped = self._regroup(value, target)
        if regrouped is not None:
            return regrouped
        raise UnsupportedError(f"{self.where(node)}: reshaping {value.axes} {dims} to {target} is not supported")

    def _regroup(self, value: _Run, target: list) -> _Run | None:
        """Merge adjacent non-feature axes into one (``T*B``) or split such a merge back."""
        labels = [part for axis in value.axes for part in axis.split("*")]
        dims = self.dims_of(_Run(value.names, tuple(labels)))
        if target.count(-1) == 1:  # the one size ONNX infers: the total divided by the others
            total, known = _factor(_join(dims)), _factor(_join([t for t in target if t != -1]))
            rest = list(total[0])
            for symbol in known[0]:
                if symbol not in rest:
                    return None
                rest.remove(symbol)
            if known[1] == 0 or total[1] % known[1]:
                return None
            target = [_join([*rest, total[1] // known[1]]) if t == -1 else t for t in target]
        out, i = [], 0
        for size in target:
            if size == -1:
                return None
            group = []
            while i < len(labels) and (not group or _factor(_join([dims[j] for j in group])) != _factor(size)):
                group.append(i)
                i += 1
            kept = [labels[j] for j in group
                    if dims[j] != 1 or labels[j] == "F" or (labels[j] == "D" and len(value.names) > 1)]
            if _factor(_join([dims[j] for j in group])) != _factor(size):
                return None
            if len(kept) == 1:
                out.append(kept[0])
            elif size == 1:
                out.append("1")
            elif "F" in kept or "D" in kept:
                return None
            else:
                out.append("*".join(kept))
        if any(dims[j] != 1 for j in range(i, len(labels))):
            return None
        return _Run(value.names, tuple(out))

    def _dense(self, node, value: _Run, kernel: np.ndarray, bias: np.ndarray | None) -> _Run:
        name = self.single(node, value)
        bias = np.zeros(kernel.shape[1], np.float32) if bias is None else bias
        layer = Layer(node.output[0], "dense", [name], {"activation": "linear"},
                      {"kernel": np.ascontiguousarray(kernel, np.float32),
                       "bias": np.ascontiguousarray(np.broadcast_to(bias, (kernel.shape[1],)), np.float32)})
        self.dense_value = (self.add(layer), node.output[0])
        return _Run((layer.name,), value.axes)

    def op_MatMul(self, node):
        a, b = (self.values[n] for n in node.input)
        if isinstance(a, _Zeros):
            raise UnsupportedError(f"{self.where(node)}: a product with the zero initial state: this is a recurrence "
                                   "unrolled into per-step ops (PyTorch's dynamo exporter writes nn.RNN so); export "
                                   "with torch.onnx.export(..., dynamo=False) to get an ONNX RNN op")
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a @ b
        if isinstance(a, _Run) and isinstance(b, np.ndarray) and b.ndim == 2:
            return self._dense(node, a, b, None)
        raise UnsupportedError(f"{self.where(node)}: MatMul is supported as runtime tensor x constant matrix")

    def op_Gemm(self, node):
        a = self.values[node.input[0]]
        b = self.const(node, 1, "B matrix")
        c = self.const(node, 2, "C bias") if len(node.input) > 2 and node.input[2] else None
        if not isinstance(a, _Run) or self.attr(node, "transA", 0):
            raise UnsupportedError(f"{self.where(node)}: Gemm is supported as runtime tensor x constant matrix")
        kernel = (b.T if self.attr(node, "transB", 0) else b) * self.attr(node, "alpha", 1.0)
        return self._dense(node, a, kernel, None if c is None else c * self.attr(node, "beta", 1.0))

    def _foldable_dense(self, node, run: _Run) -> Layer | None:
        """The last dense layer, if `node` reads its very output value, nothing else does, and it
        has no activation yet: then a bias or an activation can go into it."""
        layer = self.layers[-1]
        name, value = self.dense_value
        if (name == layer.name and value in node.input and self.uses.get(value) == 1
                and layer.attrs["activation"] == "linear"):
            return layer
        return None

    def _add_bias(self, node, run: _Run, bias: np.ndarray) -> _Run | None:
        layer = self._foldable_dense(node, run)
        if layer is not None and run.axes[-1] == "F" and bias.size in (1, layer.weights["bias"].size):
            layer.weights["bias"] = (layer.weights["bias"] + bias.reshape(-1)).astype(np.float32)
            return run
        return None

    def _activation(self, node, name: str):
        value = self.values[node.input[0]]
        if not isinstance(value, _Run):
            raise UnsupportedError(f"{self.where(node)}: activations are supported on runtime tensors only")
        if name in ("softmax", "log_softmax"):
            axis = self.attr(node, "axis", -1)
            if axis % len(value.axes) != len(value.axes) - 1:
                raise UnsupportedError(f"{self.where(node)}: {node.op_type} is supported over the last axis only")
        source = self.single(node, value)
        layer = self._foldable_dense(node, value)
        if layer is not None:
            layer.attrs["activation"] = name
            return value
        return _Run((self.add(Layer(node.output[0], "activation", [source], {"activation": name})),), value.axes)

    # -- recurrent ops --------------------------------------------------------------------
    def _recurrent(self, node, kind: str):
        where = self.where(node)
        x = self.values[node.input[0]]
        layout = self.attr(node, "layout", 0)
        if not isinstance(x, _Run) or x.axes != (("B", "T", "F") if layout else ("T", "B", "F")):
            raise _LayoutError(f"{where}: its input must be a runtime sequence in layout {layout}")
        lengths = self.const(node, 4, "sequence_lens") if len(node.input) > 4 and node.input[4] else None
        peepholes = self.const(node, 7, "P (peepholes)") if len(node.input) > 7 and node.input[7] else None
        if lengths is not None and len(node.output) > 1 and self.uses.get(node.output[1]):
            raise UnsupportedError(f"{where}: the final state Y_h of a model with sequence_lens is not supported")
        initial = {}
        for index, key in ((5, "initial_h"), (6, "initial_c")):
            state = self.values[node.input[index]] if len(node.input) > index and node.input[index] else None
            if state is None or isinstance(state, _Zeros) or (isinstance(state, np.ndarray) and not state.any()):
                continue
            if not isinstance(state, np.ndarray) or state.ndim != 3:
                raise UnsupportedError(f"{where}: initial states must be constants (or zeros of the batch's size)")
            initial[key] = np.transpose(state, (1, 0, 2)) if layout else state  # [directions, batch, units]
        direction = self.attr(node, "direction", "forward")
        units = self.attr(node, "hidden_size")
        gates = GATES[kind]
        w, r = self.const(node, 1, "W"), self.const(node, 2, "R")
        b = (self.const(node, 3, "B") if len(node.input) > 3 and node.input[3]
             else np.zeros((w.shape[0], 2 * gates * units), np.float32))
        acts = self._recurrent_activations(node, kind, w.shape[0])
        source = x.names[0]  # the layout check above leaves one IR tensor, in the IR's own layout
        if lengths is not None:  # steps past a sequence's length: masked, with zero outputs (as ONNX)
            source = self.add(Layer(source + "/lengths", "length_mask", [source],
                                    {"lengths": [int(v) for v in lengths.reshape(-1)]}))
        order = {"lstm": [0, 2, 3, 1], "gru": [0, 1, 2], "rnn": [0]}[kind]  # ONNX iofc -> IR ifco

        def blocks(m):
            return np.concatenate([m[g * units:(g + 1) * units] for g in order])

        outputs, finals = [], []
        for d, backward in enumerate([False, True] if direction == "bidirectional" else [direction == "reverse"]):
            wb, rb = blocks(b[d, :gates * units]), blocks(b[d, gates * units:])
            weights = {"kernel": np.ascontiguousarray(blocks(w[d]).T, np.float32),
                       "recurrent_kernel": np.ascontiguousarray(blocks(r[d]).T, np.float32)}
            attrs = {"units": units, "return_sequences": True, "go_backwards": backward, "stateful": False,
                     "zero_output_for_mask": lengths is not None, "activation": acts[1]}
            if kind == "gru":
                reset_after = bool(self.attr(node, "linear_before_reset", 0))
                attrs.update(recurrent_activation=acts[0], reset_after=reset_after)
                weights.update(bias=wb.astype(np.float32), recurrent_bias=rb.astype(np.float32))
            else:
                if kind == "lstm":
                    attrs.update(recurrent_activation=acts[0], output_activation=acts[2],
                                 clip=float(self.attr(node, "clip", 0.0)),
                                 input_forget=bool(self.attr(node, "input_forget", 0)))
                    if peepholes is not None:  # ONNX order i, o, f -> IR i, f, o
                        p = peepholes[d]
                        weights["peephole"] = np.concatenate([p[:units], p[2 * units:], p[units:2 * units]]
                                                             ).astype(np.float32)
                weights["bias"] = (wb + rb).astype(np.float32)
            for key, state in initial.items():
                rows = state[d].astype(np.float32)
                weights[key] = np.ascontiguousarray(rows[0] if (rows == rows[0]).all() else rows)
            suffix = ("/forward", "/backward")[d] if direction == "bidirectional" else ""
            raw = self.add(Layer(node.output[0] + suffix if node.output[0] else node.name + suffix, kind,
                                 [source], attrs, weights))
            finals.append(self.add(Layer(raw + "/last", "take_step", [raw], {"index": -1})))
            outputs.append(self.add(Layer(raw + "/realign", "reverse", [raw])) if backward else raw)
        time_axes = ("B", "T", "D", "F") if layout else ("T", "D", "B", "F")
        final_axes = ("B", "D", "F") if layout else ("D", "B", "F")
        results = [_Run(tuple(outputs), time_axes), _Run(tuple(finals), final_axes)]
        if kind == "lstm" and len(node.output) > 2 and node.output[2] and self.uses.get(node.output[2]):
            raise UnsupportedError(f"{where}: the cell-state output Y_c is not supported")
        return results

    def _recurrent_activations(self, node, kind: str, directions: int) -> list[str]:
        """IR names of the (gate, candidate, output) activations for this node (an RNN has one)."""
        defaults = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"], "rnn": ["Tanh"]}[kind]
        names = self.attr(node, "activations") or defaults * directions
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
        alphas = list(self.attr(node, "activation_alpha") or [])
        betas = list(self.attr(node, "activation_beta") or [])
        per = len(defaults)
        ir = []
        for i, name in enumerate(names):
            if name == "HardSigmoid":
                alpha = alphas.pop(0) if alphas else 0.2
                beta = betas.pop(0) if betas else 0.5
                if np.isclose(alpha, 0.2) and np.isclose(beta, 0.5):
                    ir.append("hard_sigmoid_legacy")
                elif np.isclose(alpha, 1 / 6) and np.isclose(beta, 0.5):
                    ir.append("hard_sigmoid")
                else:
                    raise UnsupportedError(f"{self.where(node)}: HardSigmoid(alpha={alpha}, beta={beta}) is not "
                                           "supported (supported: 0.2/0.5 and 1/6/0.5)")
            elif name in _RECURRENT_ACTIVATIONS:
                ir.append(_RECURRENT_ACTIVATIONS[name])
            else:
                raise UnsupportedError(f"{self.where(node)}: activation {name} is not supported; supported: "
                                       f"{', '.join([*_RECURRENT_ACTIVATIONS, 'HardSigmoid'])}")
        if any(ir[i] != ir[i % per] for i in range(len(ir))):
            raise UnsupportedError(f"{self.where(node)}: different activations per direction are not supported")
        return (ir[:per] + ir[per - 1:per] * 3)[:3]  # gates, candidate, output (h) activations


@dataclasses.dataclass(frozen=True)
class _Scalar:
    """A 0-D element of a symbolic shape (an int or "B"/"T")."""

    value: Any


def _dims_arith(a, b, fn):
    da, db = _as_dims(a) if not isinstance(a, _Scalar) else (a.value,), \
        _as_dims(b) if not isinstance(b, _Scalar) else (b.value,)
    if len(da) == 1:
        da = da * len(db)
    if len(db) == 1:
        db = db * len(da)
    out = []
    for x, y in zip(da, db):
        if (isinstance(x, int) and isinstance(y, int)) or fn(2, 3) in (0, 1):  # plain ints, or a comparison
            out.append(fn(x, y))
        elif 1 in (x, y) and fn(2, 1) == 2:
            out.append(y if x == 1 else x)
        elif fn(2, 3) == 6:
            out.append(_join([x, y]))
        else:
            raise UnsupportedError(f"cannot compute with the symbolic sizes {x} and {y}")
    return _dims_value(tuple(out))


def _split_sizes(width: int, parts: int) -> list[int]:
    """ONNX's rule without explicit sizes: equal chunks of ceil(width / parts), the last smaller."""
    chunk = -(-width // parts)
    return [chunk] * (parts - 1) + [width - chunk * (parts - 1)]


def _unknown(x, y):
    raise UnsupportedError(f"cannot compare the symbolic size {x} with {y}")


def _factor(size) -> tuple:
    """A size as (sorted symbols, integer factor): "B*T" -> (("B", "T"), 1), "7*B" -> (("B",), 7)."""
    symbols, number = [], 1
    for part in str(size).split("*"):
        if part.lstrip("-").isdigit():
            number *= int(part)
        else:
            symbols.append(part)
    return tuple(sorted(symbols)), number


def _join(sizes) -> int | str:
    """The product of sizes, an int when all are ints, else a "*"-joined symbolic product."""
    symbols, number = _factor("*".join(str(s) for s in sizes) or "1")
    return number if not symbols else "*".join(([str(number)] if number != 1 else []) + list(symbols))


def _divide(a, b):
    return a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b


_ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax",
                   "LogSoftmax": "log_softmax"}
_RECURRENT_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_VIEW_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast", "Dropout", "Flatten")
_ZERO_PRESERVING = ("Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Cast")
_RECURRENT_ACTIVATIONS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "Softplus": "softplus"}

SUPPORTED_OPS = tuple(sorted([*(name[3:] for name in dir(_Converter) if name.startswith("op_")),
                             *_ACTIVATION_OPS, *_RECURRENT_OPS]))


def _last_step_pass(graph: Graph) -> None:
    """``recurrent(return_sequences=True) -> take_step(-1)`` with nothing else reading the sequence
    becomes ``recurrent(return_sequences=False)``, the form Keras models have; unread layers go."""
    _prune(graph)
    readers: dict[str, list[Layer]] = {}
    for layer in graph.layers:
        for name in layer.inputs:
            readers.setdefault(name, []).append(layer)
    for layer in graph.layers:
        if layer.kind == "take_step" and layer.attrs["index"] == -1:
            source = graph.layer(layer.inputs[0])
            if source.kind in RECURRENT_KINDS and [r.name for r in readers.get(source.name, [])] == [layer.name] \
                    and source.name != graph.output and not source.attrs["zero_output_for_mask"]:
                source.attrs["return_sequences"] = False
                layer.kind, layer.attrs = "alias", {}
    aliases = {l.name: l.inputs[0] for l in graph.layers if l.kind == "alias"}
    graph.layers = [l for l in graph.layers if l.kind != "alias"]
    for layer in graph.layers:
        layer.inputs = [aliases.get(n, n) for n in layer.inputs]
    graph.output = aliases.get(graph.output, graph.output)
    _prune(graph)


def _prune(graph: Graph) -> None:
    """Drop the layers the output does not read (such as unused final-state selections)."""
    needed, todo = set(), [graph.output]
    by_name = {l.name: l for l in graph.layers}
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].inputs
    graph.layers = [l for i, l in enumerate(graph.layers) if i == 0 or l.name in needed]


def import_onnx(path: str | os.PathLike) -> Graph:
    """Convert an ONNX model to the IR, refusing unsupported ops by type and node name.

    The IR always takes and returns batch-first tensors. A model whose input is time-major (a
    PyTorch RNN with batch_first=False, or an ONNX LSTM fed directly) is recognised because it only
    converts when its input is read as [time, batch, ...]; the graph's ``source_layout`` metadata
    then tells how the ONNX model's input and output axes map onto ours.
    """
    path = Path(path)
    model = _load(path)
    try:
        try:
            return _Converter(model, path, time_major=False).convert()
        except _LayoutError as batch_first_error:
            try:
                return _Converter(model, path, time_major=True).convert()
            except _LayoutError:
                raise batch_first_error from None
    except EdgeLSTMError:
        raise
    except Exception as exc:  # noqa: BLE001
        if not raised_in(exc, "onnx"):
            raise
        raise FormatError(f"{path} is corrupt: the onnx library could not read it ({type(exc).__name__}: {exc})") from None
