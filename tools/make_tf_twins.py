"""Generate LiteRT (.tflite) and tf2onnx (.onnx) twins of some Keras fixtures.

The twins let tests compare edgelstm with the real runtimes on the same weights
and inputs (``edgelstm verify ... --tflite``, the ONNX importer).  Nothing is
retrained: each twin is converted from a fixture already in ``models/`` (listed
in ``models/manifest.json``) and run on that fixture's ``.input.npy``.

Writes

* ``models/tflite/<name>.tflite`` and ``<name>.output.npy`` (LiteRT's output),
  ``models/tflite/manifest.json``, one entry per twin::

    {"name", "file", "keras_model", "input", "output", "quantization",
     "export", "max_abs_error_vs_keras", "expect_mismatch", "notes"}

  ``quantization`` is "float32" or "dynamic-int8" (``Optimize.DEFAULT``, no
  representative dataset); ``export`` is "keras3-savedmodel" (Keras 3
  ``model.export`` with a fixed-shape signature, then ``from_saved_model``:
  a WHILE-loop model) or "tf_keras-fused" (the same architecture and weights
  rebuilt in tf_keras with a fixed batch, then ``from_keras_model``: a fused
  UNIDIRECTIONAL_SEQUENCE_LSTM op).  Every twin is converted with builtin ops
  only, so LiteRT without Flex can run it.  The batch of every .tflite is fixed
  to the fixture's batch (builtins-only conversion needs static shapes); do
  not resize it (see the notes).  One twin has ``expect_mismatch: true``: it
  comes from a deliberately altered copy of its Keras model.
  ``input`` is relative to ``models/tflite/`` and points at the Keras fixture.
  A dynamic-int8 twin is written only when the converter quantized some weight:
  it skips weight tensors under 1024 elements, which is every weight of the
  small fixtures; where the default (MLIR) quantizer quantizes nothing, the
  legacy one is tried (``experimental_new_dynamic_range_quantizer = False``).

* ``models/tf2onnx/<name>.onnx``, ``<name>.output.npy`` (ONNX Runtime's output),
  ``models/tf2onnx/manifest.json``::

    {"name", "file", "keras_model", "input", "output", "opset", "producer",
     "notes", "max_abs_error_vs_keras"[, "expect_error"]}

  Converted by ``python -m tf2onnx.convert --saved-model`` from a Keras 3
  ``model.export`` whose signature keeps the Keras input shape (batch and, where
  Keras has it, time dynamic).  ``tf2onnx.convert.from_keras`` does not work
  with Keras 3 models.  Models that tf2onnx lowers to an ONNX ``Loop`` (GRU,
  masked LSTM) are kept as negative fixtures with ``"expect_error": "Loop"``.

* ``/tmp/tf_twins_layout.txt``: tensor details, op lists and resize behaviour of
  each .tflite; node lists and initializers of each .onnx.

Needs TensorFlow, Keras 3, tf_keras, tf2onnx, onnx, onnxruntime and
ai-edge-litert, none of which edgelstm depends on.  Run from the repo root::

    /work/tfvenv/bin/pip install tf2onnx onnx onnxruntime ai-edge-litert
    /work/tfvenv/bin/python tools/make_tf_twins.py

Reproducibility: the same fixtures and library versions give the same
``.output.npy`` arrays and manifests.  tf2onnx numbers and orders its graphs
differently from run to run, so each ``.onnx`` is canonicalized (nodes in a
content-defined topological order, values renamed ``<OpType>_<n>:<i>``,
initializers ``const_<n>`` or ``<LSTM node>_W/_R/_B``); the LSTM ones are then
byte-identical across runs.  Two files still vary in byte layout, not in
content: ``tf2onnx/text_classifier.onnx`` (tf2onnx orders the Loop body's
outputs differently) and ``tflite/sensor_forecast_fused_dynint8.tflite`` (the
legacy quantizer orders its four DEQUANTIZE ops differently).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import absl.logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (legacy Keras 2, for the fused LSTM op)
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from tensorflow.lite.python import schema_py_generated as tflite_schema  # noqa: E402

absl.logging.set_verbosity(absl.logging.ERROR)

MODELS = Path(__file__).resolve().parent.parent / "models"
TFLITE_DIR = MODELS / "tflite"
ONNX_DIR = MODELS / "tf2onnx"
LAYOUT_PATH = Path("/tmp/tf_twins_layout.txt")
ONNX_OPSET = 17
MISMATCH_BIAS_SHIFT = 0.5

BUILTIN_OPS = {v: k for k, v in vars(tflite_schema.BuiltinOperator).items() if not k.startswith("_")}


# --------------------------------------------------------------------------
# Keras fixtures
# --------------------------------------------------------------------------


@dataclass
class Fixture:
    name: str
    model: keras.Model
    x: np.ndarray
    y: np.ndarray


_FIXTURES: dict[str, Fixture] = {}


def fixture(name: str) -> Fixture:
    if name not in _FIXTURES:
        entries = {e["name"]: e for e in json.loads((MODELS / "manifest.json").read_text())}
        entry = entries[name]
        model = keras.models.load_model(MODELS / entry["file"], compile=False)
        _FIXTURES[name] = Fixture(name, model, np.load(MODELS / entry["input"]), np.load(MODELS / entry["output"]))
    return _FIXTURES[name]


def with_shifted_output_bias(model: keras.Model, shift: float) -> keras.Model:
    """A copy of ``model`` whose last layer's bias is shifted: a deliberate mismatch."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    bias = clone.layers[-1].bias
    bias.assign(bias + shift)
    return clone


def export_saved_model(model: keras.Model, spec: tf.TensorSpec, directory: Path) -> Path:
    model.export(str(directory), input_signature=[spec], verbose=False)
    return directory


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"output shape {a.shape} != Keras output shape {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --------------------------------------------------------------------------
# TFLite twins
# --------------------------------------------------------------------------

# Keras 3 layer -> tf_keras layer, with the config keys that matter for inference.
_TF_KERAS_LAYERS = {
    "LSTM": ("units", "activation", "recurrent_activation", "use_bias", "return_sequences", "unit_forget_bias"),
    "Dense": ("units", "activation", "use_bias"),
}


def tf_keras_twin(model: keras.Model, batch: int) -> tf_keras.Model:
    """Rebuild a Sequential LSTM/Dense model in tf_keras with a fixed batch and the same weights."""
    layers = [tf_keras.Input(shape=tuple(model.inputs[0].shape[1:]), batch_size=batch)]
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in _TF_KERAS_LAYERS:
            raise ValueError(f"tf_keras twin: layer {layer.name} ({kind}) is not supported")
        config = layer.get_config()
        layers.append(getattr(tf_keras.layers, kind)(**{k: config[k] for k in _TF_KERAS_LAYERS[kind]}))
    twin = tf_keras.Sequential(layers)
    twin.set_weights(model.get_weights())
    return twin


ConverterFactory = Callable[[], tf.lite.TFLiteConverter]


def savedmodel_converter(model: keras.Model, x: np.ndarray, workdir: Path) -> ConverterFactory:
    directory = export_saved_model(model, tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)), workdir / "savedmodel")
    return lambda: tf.lite.TFLiteConverter.from_saved_model(str(directory))


def fused_converter(model: keras.Model, x: np.ndarray, workdir: Path) -> ConverterFactory:
    twin = tf_keras_twin(model, batch=x.shape[0])
    return lambda: tf.lite.TFLiteConverter.from_keras_model(twin)


EXPORTS: dict[str, Callable[[keras.Model, np.ndarray, Path], ConverterFactory]] = {
    "keras3-savedmodel": savedmodel_converter,
    "tf_keras-fused": fused_converter,
}

EXPORT_NOTES = {
    "keras3-savedmodel": "Keras 3 model.export(input_signature=[TensorSpec(fixture shape)]) + "
    "TFLiteConverter.from_saved_model, builtins only: TRANSPOSE + WHILE loop (cond/body subgraphs)",
    "tf_keras-fused": "same architecture and weights rebuilt in tf_keras with a fixed batch + "
    "TFLiteConverter.from_keras_model, builtins only: fused UNIDIRECTIONAL_SEQUENCE_LSTM",
}


@dataclass(frozen=True)
class TfliteTwin:
    name: str
    keras_model: str
    export: str
    quantization: str
    mismatch: bool = False


def tflite_twins() -> list[TfliteTwin]:
    twins = [
        TfliteTwin(f"{model}_{'f32' if q == 'float32' else 'dynint8'}", model, "keras3-savedmodel", q)
        for model in ("sensor_forecast", "text_classifier", "gru_reset_after_seq", "lstm_stacked")
        for q in ("float32", "dynamic-int8")
    ]
    twins += [
        TfliteTwin(f"sensor_forecast_fused_{'f32' if q == 'float32' else 'dynint8'}", "sensor_forecast", "tf_keras-fused", q)
        for q in ("float32", "dynamic-int8")
    ]
    twins.append(TfliteTwin("MISMATCH_sensor_forecast_bias_plus_0p5_f32", "sensor_forecast", "keras3-savedmodel", "float32", mismatch=True))
    return twins


class Skipped(Exception):
    """A twin that is not written; the message says why."""


def convert(factory: ConverterFactory, quantization: str, legacy_quantizer: bool = False) -> bytes:
    """Builtin ops only; a model that would need Flex (SELECT_TF_OPS) is skipped, saying so."""
    def attempt(ops: list) -> bytes:
        converter = factory()
        converter.target_spec.supported_ops = ops
        if quantization == "dynamic-int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.experimental_new_dynamic_range_quantizer = not legacy_quantizer
        return converter.convert()

    try:
        return attempt([tf.lite.OpsSet.TFLITE_BUILTINS])
    except Exception as builtins_error:  # noqa: BLE001  (converter errors have several types)
        try:
            attempt([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])
        except Exception:  # noqa: BLE001
            raise Skipped(f"conversion failed: {first_line(builtins_error)}") from None
        raise Skipped(f"builtins-only conversion failed ({first_line(builtins_error)}); "
                      "works only with SELECT_TF_OPS, which LiteRT without Flex cannot run") from None


def first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if "error" in line.lower()] or str(error).splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:300]}"


def flatbuffer_summary(buf: bytes) -> tuple[list[str], list[str]]:
    """Per-subgraph op lists and the int8 tensors (weights quantized by the converter), from the flatbuffer."""
    model = tflite_schema.ModelT.InitFromPackedBuf(buf, 0)
    ops, int8 = [], []
    for sg in model.subgraphs:
        names = [BUILTIN_OPS.get(model.operatorCodes[op.opcodeIndex].builtinCode, "?") for op in sg.operators]
        ops.append(f"{sg.name.decode()}: {' '.join(names)}")
        for t in sg.tensors:
            if t.type == tflite_schema.TensorType.INT8:
                q = t.quantization
                scales = 0 if q is None or q.scale is None else len(q.scale)
                zps = sorted(set(q.zeroPoint.tolist())) if q is not None and q.zeroPoint is not None else []
                int8.append(f"{sg.name.decode()}/{t.name.decode()} {list(map(int, t.shape))} "
                            f"({scales} scales, axis {q.quantizedDimension if q else '-'}, zero points {zps})")
    return ops, int8


def run_litert(buf: bytes, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    interpreter = Interpreter(model_content=buf)
    inp = interpreter.get_input_details()[0]
    if batch is not None:
        interpreter.resize_tensor_input(inp["index"], [batch, *x.shape[1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def resize_probe(buf: bytes, x: np.ndarray, y: np.ndarray) -> list[str]:
    """What happens when the (fixed-batch) input is resized to another batch."""
    results = []
    for batch in (1, x.shape[0] + 1):
        rows = np.arange(batch) % x.shape[0]
        try:
            out = run_litert(buf, x[rows], batch)
        except Exception as error:  # noqa: BLE001
            results.append(f"batch {batch}: fails ({first_line(error)})")
            continue
        if out.shape != y[rows].shape:
            results.append(f"batch {batch}: no error, but output shape {out.shape} instead of {y[rows].shape} (WRONG, silently)")
        else:
            results.append(f"batch {batch}: works, max abs error vs Keras {max_abs_error(out, y[rows]):.3g}")
    return results


def tensor_line(d: dict) -> str:
    q = d["quantization_parameters"]
    return (f"name={d['name']} shape={d['shape'].tolist()} shape_signature={d['shape_signature'].tolist()} "
            f"dtype={np.dtype(d['dtype']).name} quantization={d['quantization']} "
            f"scales={q['scales'].tolist()} zero_points={q['zero_points'].tolist()}")


def io_summary(d: dict) -> str:
    scale, zp = d["quantization"]
    quant = "not quantized" if scale == 0 else f"scale {scale}, zero point {zp}"
    return f"{d['name']} {d['shape_signature'].tolist()} {np.dtype(d['dtype']).name} ({quant})"


_FACTORIES: dict[tuple, ConverterFactory] = {}


def converter_factory(twin: TfliteTwin, workdir: Path) -> ConverterFactory:
    """One export per (Keras model, export path, mismatch), shared by its float32 and int8 twins."""
    key = (twin.keras_model, twin.export, twin.mismatch)
    if key not in _FACTORIES:
        fx = fixture(twin.keras_model)
        model = with_shifted_output_bias(fx.model, MISMATCH_BIAS_SHIFT) if twin.mismatch else fx.model
        subdir = workdir / "_".join(map(str, key))
        subdir.mkdir()
        _FACTORIES[key] = EXPORTS[twin.export](model, fx.x, subdir)
    return _FACTORIES[key]


def convert_twin(twin: TfliteTwin, workdir: Path) -> tuple[bytes, list[str], list[str], bool]:
    """The .tflite bytes, its op lists and int8 tensors, and whether the legacy quantizer was needed."""
    factory = converter_factory(twin, workdir)
    buf = convert(factory, twin.quantization)
    ops, int8 = flatbuffer_summary(buf)
    legacy = twin.quantization == "dynamic-int8" and not int8
    if legacy:
        # Both quantizers skip weights below a 1024-element minimum; on the fused LSTM(32), whose gate
        # matrices have exactly 32x32 = 1024 elements, the default (MLIR) one quantized nothing and the
        # legacy one quantized the four recurrent matrices.
        buf = convert(factory, twin.quantization, legacy_quantizer=True)
        ops, int8 = flatbuffer_summary(buf)
        if not int8:
            raise Skipped("dynamic-range quantization (default and legacy quantizer) left every weight float32: "
                          "each weight tensor has fewer than 1024 elements, so this twin would duplicate the float32 one")
    return buf, ops, int8, legacy


def make_tflite_twin(twin: TfliteTwin, workdir: Path, layout: list[str]) -> dict | None:
    try:
        buf, ops, int8, legacy = convert_twin(twin, workdir)
    except Skipped as skipped:
        layout += [f"== {twin.name}: SKIPPED: {skipped}", ""]
        print(f"  {twin.name}: SKIPPED ({skipped})")
        return None

    fx = fixture(twin.keras_model)
    out = run_litert(buf, fx.x)
    error = max_abs_error(out, fx.y)
    interpreter = Interpreter(model_content=buf)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    resize = resize_probe(buf, fx.x, fx.y)

    (TFLITE_DIR / f"{twin.name}.tflite").write_bytes(buf)
    np.save(TFLITE_DIR / f"{twin.name}.output.npy", out)

    notes = [EXPORT_NOTES[twin.export]]
    if legacy:
        notes.append("the default (MLIR) dynamic-range quantizer quantized no weight (none is above its 1024-element "
                     "minimum; the gate matrices have exactly 1024), so converter.experimental_new_dynamic_range_quantizer = False (the "
                     "legacy quantizer) was used; it stores those weights int8 behind DEQUANTIZE ops, so LiteRT "
                     "dequantizes them once and runs the float kernel (not the hybrid int8 kernel)")
    if twin.mismatch:
        notes.append(f"DELIBERATE MISMATCH: exported from a copy of {twin.keras_model} whose last Dense bias is "
                     f"shifted by +{MISMATCH_BIAS_SHIFT}; its outputs differ from the Keras model's by that much")
    notes.append("input " + "; ".join(map(io_summary, inputs)))
    notes.append("output " + "; ".join(map(io_summary, outputs)))
    notes.append(f"int8 weight tensors: {len(int8)}" + (f" ({'; '.join(int8)})" if int8 else "")
                 + (", activations float32 (dynamic range)" if int8 else ""))
    notes.append(f"fixed batch {fx.x.shape[0]}; resize_tensor_input: " + "; ".join(resize))
    entry = {
        "name": twin.name,
        "file": f"{twin.name}.tflite",
        "keras_model": twin.keras_model,
        "input": f"../{twin.keras_model}.input.npy",
        "output": f"{twin.name}.output.npy",
        "quantization": twin.quantization,
        "export": twin.export,
        "max_abs_error_vs_keras": error,
        "expect_mismatch": twin.mismatch,
        "notes": ". ".join(notes),
    }

    layout.append(f"== {twin.name}.tflite ({len(buf)} bytes; {twin.export}, {twin.quantization}; "
                  f"keras fixture {twin.keras_model}; max abs error vs Keras {error:.3g})")
    layout += [f"  input  {tensor_line(d)}" for d in inputs]
    layout += [f"  output {tensor_line(d)}" for d in outputs]
    layout += [f"  subgraph {line}" for line in ops]
    layout += [f"  int8 tensor {line}" for line in int8] or ["  int8 tensors: none"]
    layout += [f"  resize_tensor_input to {line}" for line in resize]
    layout.append("")
    print(f"  {twin.name}: {len(buf)} bytes, max abs error vs Keras {error:.3g}")
    return entry


# --------------------------------------------------------------------------
# tf2onnx twins
# --------------------------------------------------------------------------

ONNX_TWINS = ("sensor_forecast", "lstm_stacked", "bidir_lstm_concat", "text_classifier", "gru_reset_after_seq")


EXPORT_FOR_ONNX = "--export-for-onnx"  # internal: export one fixture's SavedModel in a fresh process


def run_quietly(cmd: list[str], what: str) -> None:
    # A fresh process with a fixed hash seed, so that TensorFlow's graph-name counters depend on the
    # fixture alone (tf2onnx's own numbering still varies: see _OnnxCanonicalizer).
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{tail}")


def export_for_onnx(name: str, directory: Path) -> None:
    """Keras 3 SavedModel export keeping the Keras input shape (batch, and maybe time, dynamic)."""
    fx = fixture(name)
    export_saved_model(fx.model, tf.TensorSpec(tuple(fx.model.inputs[0].shape), tf.as_dtype(fx.x.dtype)), directory)


def tf2onnx_convert(name: str, workdir: Path, output: Path) -> None:
    saved = workdir / f"onnx_{name}"
    run_quietly([sys.executable, str(Path(__file__).resolve()), EXPORT_FOR_ONNX, name, str(saved)], f"SavedModel export of {name}")
    run_quietly([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
                 "--opset", str(ONNX_OPSET), "--output", str(output)], f"tf2onnx on {name}")
    model = canonical_onnx(onnx.load(output))
    model.graph.doc_string = f"converted by tf2onnx from a Keras 3 SavedModel export of models/{name}.keras"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, output)


RNN_OPS = ("LSTM", "GRU", "RNN")
RNN_INPUTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


class _OnnxCanonicalizer:
    """Reorder nodes and rename values so that equivalent graphs serialize identically.

    tf2onnx 1.17 is not reproducible: on the same SavedModel, with PYTHONHASHSEED fixed, it numbers
    the names it generates (``Unsqueeze__43``) differently, keeps a different one of two merged
    duplicates (``lstm_1/zeros`` or ``lstm_1/zeros_1``) and breaks topological-order ties differently.
    Here every value gets a signature from what computes it (op, attributes, the signatures of its
    inputs; initializers by content), nodes are put in topological order with ties broken by
    signature, and everything except the model's inputs and outputs is renamed in that order:
    nodes ``<OpType>_<n>``, their outputs ``<node>:<i>``, initializers ``const_<n>`` (an LSTM/GRU/RNN
    node's weights ``<node>_W``, ``_R``, ``_B``), subgraphs ``<node>_<attribute>`` with inputs
    ``<subgraph>_in<i>``.
    """

    def __init__(self) -> None:
        self._nodes = 0
        self._consts = 0
        self._dims: dict[str, str] = {}

    def _rename_dims(self, values: list[onnx.ValueInfoProto]) -> None:
        """tf2onnx's symbolic dimensions (``unk__71``) are numbered too: renumber them ``dim_<n>``."""
        for value in values:
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param"):
                    dim.dim_param = self._dims.setdefault(dim.dim_param, f"dim_{len(self._dims)}")

    @staticmethod
    def _hash(*parts: object) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    @staticmethod
    def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
        return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]

    def _outer_refs(self, graph: onnx.GraphProto) -> set[str]:
        """Names a (sub)graph reads from enclosing scopes."""
        defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
        defined |= {o for n in graph.node for o in n.output}
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        used |= {r for n in graph.node for g in self._subgraphs(n) for r in self._outer_refs(g)}
        return {u for u in used if u and u not in defined}

    def _order(self, graph: onnx.GraphProto, outer: dict[str, str]) -> tuple[list[onnx.NodeProto], dict[str, str]]:
        """Nodes in canonical topological order, and the signature of every value in scope."""
        sig = {**outer, "": "absent"}
        for i, value in enumerate(graph.input):
            sig[value.name] = self._hash("input", i)
        for init in graph.initializer:
            anonymous = onnx.TensorProto.FromString(init.SerializeToString())
            anonymous.name = ""
            sig[init.name] = self._hash("init", anonymous.SerializeToString(deterministic=True))
        needs = [list(n.input) + sorted(r for g in self._subgraphs(n) for r in self._outer_refs(g)) for n in graph.node]
        pending, ready, order = set(range(len(graph.node))), {}, []
        while pending:
            for k in pending - ready.keys():
                if all(i in sig for i in needs[k]):
                    node = graph.node[k]
                    attrs = [(a.name, self._graph_sig(a.g, sig) if a.type == onnx.AttributeProto.GRAPH
                              else a.SerializeToString(deterministic=True)) for a in node.attribute]
                    ready[k] = self._hash(node.op_type, node.domain, attrs, [sig[i] for i in needs[k]])
            if not ready:
                raise ValueError(f"graph {graph.name} has a cycle or an undefined input")
            k = min(ready, key=lambda j: (ready[j], j))
            node_sig = ready.pop(k)
            pending.remove(k)
            order.append(graph.node[k])
            for j, out in enumerate(graph.node[k].output):
                sig[out] = self._hash(node_sig, j)
        return order, sig

    def _graph_sig(self, graph: onnx.GraphProto, outer: dict[str, str]) -> str:
        _, sig = self._order(graph, outer)
        return self._hash([sig.get(o.name, o.name) for o in graph.output])

    def graph(self, graph: onnx.GraphProto, names: dict[str, str], outer: dict[str, str], keep_io: bool) -> None:
        """Canonicalize ``graph`` in place; ``names`` and ``outer`` rename and sign enclosing scopes' values."""
        order, sig = self._order(graph, outer)
        self._rename_dims([*graph.input, *graph.output])
        names = dict(names)
        if keep_io:
            names.update({v.name: v.name for v in [*graph.input, *graph.output]})
        else:
            names.update({v.name: f"{graph.name}_in{i}" for i, v in enumerate(graph.input)})
        for node in order:
            node.name = f"{node.op_type}_{self._nodes}"
            self._nodes += 1
            for j, out in enumerate(node.output):
                if out and out not in names:
                    names[out] = f"{node.name}:{j}"
        first_use: dict[str, tuple[int, onnx.NodeProto, int]] = {}
        for pos, node in enumerate(order):
            for slot, i in enumerate(node.input):
                first_use.setdefault(i, (pos, node, slot))
        inits = sorted(graph.initializer, key=lambda t: (first_use.get(t.name, (len(order),))[0], sig[t.name]))
        for init in inits:
            _, node, slot = first_use.get(init.name, (None, None, None))
            if node is not None and node.op_type in RNN_OPS:
                names[init.name] = f"{node.name}_{RNN_INPUTS[slot]}"
            else:
                names[init.name] = f"const_{self._consts}"
                self._consts += 1
        for node in order:
            node.input[:] = [names.get(i, i) for i in node.input]
            node.output[:] = [names.get(o, o) for o in node.output]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    attr.g.name = f"{node.name}_{attr.name}"
                    self.graph(attr.g, names, sig, keep_io=False)
        for value in [*graph.input, *graph.output, *graph.value_info, *inits]:
            value.name = names.get(value.name, value.name)
        self._rename_dims(list(graph.value_info))
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
        tensors = [onnx.TensorProto.FromString(t.SerializeToString()) for t in inits]
        del graph.node[:], graph.initializer[:]
        graph.node.extend(nodes)
        graph.initializer.extend(tensors)


def canonical_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    _OnnxCanonicalizer().graph(model.graph, {}, {}, keep_io=True)
    return model


def onnx_attribute(attr: onnx.AttributeProto) -> str:
    if attr.type == onnx.AttributeProto.GRAPH:
        return f"<graph {attr.g.name}, {len(attr.g.node)} nodes>"
    if attr.type == onnx.AttributeProto.TENSOR:
        t = onnx.numpy_helper.to_array(attr.t)
        return f"<tensor {t.dtype} {list(t.shape)} {t.ravel()[:8].tolist()}>"
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return str([v.decode() if isinstance(v, bytes) else v for v in value])
    return str(value)


def onnx_graph_lines(graph: onnx.GraphProto, indent: str = "  ") -> list[str]:
    lines = [f"{indent}graph {graph.name}: inputs " + ", ".join(f"{i.name}{value_shape(i)}" for i in graph.input)
             + "; outputs " + ", ".join(f"{o.name}{value_shape(o)}" for o in graph.output)]
    for init in graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        values = f" = {array.ravel().tolist()}" if array.size <= 8 else ""
        lines.append(f"{indent}  initializer {init.name}: {array.dtype} {list(array.shape)}{values}")
    for node in graph.node:
        attrs = {a.name: onnx_attribute(a) for a in node.attribute}
        lines.append(f"{indent}  node {node.op_type} {node.name}: inputs {list(node.input)} -> outputs {list(node.output)}"
                     + (f" attrs {attrs}" if attrs else ""))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                lines += onnx_graph_lines(attr.g, indent + "    ")
    return lines


def value_shape(value: onnx.ValueInfoProto) -> str:
    t = value.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in t.shape.dim]
    return f"[{onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name} {dims}]" if t.elem_type else ""


def op_counts(graph: onnx.GraphProto) -> str:
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(counts.items()))


def describe_rnn_node(graph: onnx.GraphProto, node: onnx.NodeProto) -> str:
    """An ONNX LSTM/GRU node's attributes and weight shapes, and the ops that feed and read it."""
    attrs = {a.name: onnx_attribute(a) for a in node.attribute}
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def upstream(name: str) -> str:
        ops = []
        while name in producers:
            n = producers[name]
            ops.append(n.op_type)
            name = next((i for i in n.input if i and i not in shapes), "")
        return " <- ".join(ops + [name or "constants"])

    def downstream(name: str, depth: int = 6) -> str:
        if name in {o.name for o in graph.output}:
            return "graph output"
        readers = consumers.get(name, [])
        if not readers or depth == 0:
            return "..." if readers else ""
        paths = [f"{n.op_type} -> {downstream(n.output[0], depth - 1)}".removesuffix(" -> ") for n in readers]
        return paths[0] if len(paths) == 1 else "(" + " | ".join(paths) + ")"

    inputs = [f"{slot}={'absent' if not name else shapes.get(name, 'computed')}" for slot, name in zip(RNN_INPUTS, node.input)]
    used = [f"Y[{i}] -> {downstream(o)}" for i, o in enumerate(node.output) if consumers.get(o)]
    return (f"{node.op_type} node {node.name}: direction {attrs.get('direction', 'forward')}, hidden_size "
            f"{attrs.get('hidden_size')}, activations {attrs.get('activations')}; inputs {', '.join(inputs)}; "
            f"X = {upstream(node.input[0])}; initial_h = {upstream(node.input[5]) if len(node.input) > 5 and node.input[5] else 'absent'}; "
            f"outputs used: {'; '.join(used)}")


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def make_onnx_twin(name: str, workdir: Path, layout: list[str]) -> dict:
    fx = fixture(name)
    shape = tuple(fx.model.inputs[0].shape)
    path = ONNX_DIR / f"{name}.onnx"
    tf2onnx_convert(name, workdir, path)
    graph = onnx.load(path).graph
    out = run_onnx(path, fx.x)
    np.save(ONNX_DIR / f"{name}.output.npy", out)
    error = max_abs_error(out, fx.y)
    batch_probe = max_abs_error(run_onnx(path, fx.x[:1]), fx.y[:1])
    rnn = [n for n in graph.node if n.op_type in RNN_OPS]
    loops = [n for n in graph.node if n.op_type == "Loop"]

    notes = [f"Keras 3 model.export(input_signature=[TensorSpec({list(shape)})]) + "
             f"python -m tf2onnx.convert --saved-model --opset {ONNX_OPSET}",
             f"max abs error vs Keras {error:.3g} (ONNX Runtime; batch 1 also runs, error {batch_probe:.3g})",
             f"ops: {op_counts(graph)}"]
    for node in rnn:
        notes.append(describe_rnn_node(graph, node))
    entry = {
        "name": name,
        "file": path.name,
        "keras_model": name,
        "input": f"../{name}.input.npy",
        "output": f"{name}.output.npy",
        "opset": ONNX_OPSET,
        "producer": "tf2onnx",
        "max_abs_error_vs_keras": error,
    }
    if loops:
        notes.append(f"NEGATIVE: tf2onnx lowered the recurrent layer to {len(loops)} ONNX Loop node(s) "
                     "(a TF while loop, the cell written out in the body), not an ONNX LSTM/GRU op; "
                     "an importer should refuse it naming the Loop")
        entry["expect_error"] = "Loop"
    entry["notes"] = ". ".join(notes)

    layout.append(f"== {path.name} ({path.stat().st_size} bytes; keras fixture {name}; opset {ONNX_OPSET}; "
                  f"max abs error vs Keras {error:.3g}" + ("; NEGATIVE: Loop" if loops else "") + ")")
    layout.append(f"  ops: {op_counts(graph)}")
    layout += onnx_graph_lines(graph)
    layout.append("")
    print(f"  {name}.onnx: {path.stat().st_size} bytes, max abs error vs Keras {error:.3g}"
          + (" (Loop: negative fixture)" if loops else ""))
    return entry


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

LAYOUT_HEADER = """\
Layout of the TFLite and tf2onnx twins written by tools/make_tf_twins.py
Versions: tensorflow {tf}, keras {keras}, tf_keras {tfk}, tf2onnx {t2o}, onnx {onnx}, onnxruntime {ort}, ai-edge-litert {litert}, numpy {np}

Facts checked while writing them:
- TFLite: builtins-only conversion needs a fully static input shape (a None batch fails on TensorListReserve), so
  every .tflite has the fixture's batch baked in. resize_tensor_input to another batch either fails at
  allocate/invoke or, for the WHILE-loop models at batch 1, "succeeds" and returns the old output shape: run a
  .tflite only at its own batch (split or pad other batches).
- tf2onnx 1.17: tf2onnx.convert.from_keras fails on a Keras 3 model (KeyError: 'keras_tensor_N'); converting the
  SavedModel from model.export with `python -m tf2onnx.convert --saved-model` works. The ONNX LSTM node holds
  W [dirs, 4H, I] = Keras kernel.T and R [dirs, 4H, H] = recurrent_kernel.T with the gate blocks reordered from
  Keras (i, f, c, o) to ONNX (i, o, f, c); B [dirs, 8H] = [Keras bias reordered the same way, zeros (Rb)].
  Keras GRU and masked (Embedding mask_zero) LSTMs become Loop nodes instead.

"""


def main() -> None:
    import tf2onnx
    from importlib.metadata import version

    layout = [LAYOUT_HEADER.format(tf=tf.__version__, keras=keras.__version__, tfk=tf_keras.__version__,
                                   t2o=tf2onnx.__version__, onnx=onnx.__version__, ort=ort.__version__,
                                   litert=version("ai-edge-litert"), np=np.__version__)]
    for directory in (TFLITE_DIR, ONNX_DIR):
        directory.mkdir(exist_ok=True)
        for old in directory.glob("*"):
            if old.suffix in (".tflite", ".onnx", ".npy", ".json"):
                old.unlink()

    with tempfile.TemporaryDirectory(prefix="tf_twins_") as tmp:
        workdir = Path(tmp)
        print("TFLite twins:")
        layout.append("######## TFLite (models/tflite/)\n")
        entries = [e for twin in tflite_twins() if (e := make_tflite_twin(twin, workdir, layout)) is not None]
        (TFLITE_DIR / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n")

        print("tf2onnx twins:")
        layout.append("######## tf2onnx (models/tf2onnx/)\n")
        entries = [make_onnx_twin(name, workdir, layout) for name in ONNX_TWINS]
        (ONNX_DIR / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n")

    LAYOUT_PATH.write_text("\n".join(layout) + "\n")
    print(f"layout: {LAYOUT_PATH}")


if __name__ == "__main__":
    if sys.argv[1:2] == [EXPORT_FOR_ONNX]:
        export_for_onnx(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
