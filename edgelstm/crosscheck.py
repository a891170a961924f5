"""Running a reference model next to ours: a ``.tflite`` under LiteRT or an ``.onnx`` under ONNX
Runtime, on the same input, and comparing the outputs.

LiteRT comes from ``ai-edge-litert`` (``tflite_runtime`` is the fallback: it is built against
NumPy 1 and fails under NumPy 2); ONNX Runtime from ``onnxruntime``. Both are extras.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .errors import FormatError, ShapeError, UnsupportedError
from .passes.quantize import VERIFY_ERROR_FACTOR, ErrorReport
from .runtime import Model

REFERENCE_KINDS = ("tflite", "onnx")
FLOAT_ATOL = 1e-5


@dataclasses.dataclass
class Comparison:
    """How one reference output compares with ours."""

    name: str
    shape: tuple
    max_abs_error: float
    max_rel_error: float
    passed: bool


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise UnsupportedError("running a .tflite model needs LiteRT: pip install 'edgelstm[litert]'") from None
    return Interpreter


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y


def _source_layout(model: Model) -> dict | None:
    return model.graph.metadata.get("source_layout")


def to_source_input(model: Model, x: np.ndarray) -> np.ndarray:
    """Our batch-first input in the layout the source model takes (e.g. time-major ONNX)."""
    layout = _source_layout(model)
    if layout is None:
        return x
    ours = ("B", "T", "F")[:x.ndim]
    return np.ascontiguousarray(np.transpose(x, [ours.index(label) for label in layout["input"]]))


def to_source_output(model: Model, y: np.ndarray) -> np.ndarray:
    """Our output in the layout the source model gives (axes permuted, unit axes, directions apart)."""
    layout = _source_layout(model)
    if layout is None:
        return y
    ours = ["B", "T", "F"] if y.ndim == 3 else ["B", "F"]
    target = layout["output"]
    if "F" not in target:  # a width-1 feature axis the source squeezed away
        y, ours = y[..., 0], ours[:-1]
    if "D" in target:  # directions sit side by side in our features
        y = y.reshape(y.shape[:-1] + (layout["directions"], -1))
        ours.insert(len(ours) - 1, "D")
    y = np.transpose(y, [ours.index(label) for label in target if label != "1"])
    return y.reshape([1 if label == "1" else y.shape[[l for l in target if l != "1"].index(label)]
                      for label in target])


def tflite_runner(path: str | os.PathLike, x: np.ndarray, threads: int | None = None):
    """A function running a ``.tflite`` model on inputs shaped like x, its interpreter made once.

    A model with a dynamic batch is resized to x's; one whose batch is frozen (LiteRT's LSTM
    exports mostly are: resizing them fails or, at batch 1, silently returns the old shape) runs
    in chunks of its own batch, the last one padded. The function returns outputs by name.
    """
    make = _interpreter_class()
    try:
        interpreter = make(model_path=str(path), num_threads=threads)
    except ValueError as exc:
        raise FormatError(f"{path} is not a readable .tflite model ({exc})") from None
    (inp,) = interpreter.get_input_details()
    frozen, signature = tuple(inp["shape"]), tuple(inp.get("shape_signature", inp["shape"]))
    if len(frozen) != x.ndim or any(s != -1 and f != g for s, f, g in zip(signature[1:], frozen[1:], x.shape[1:])):
        raise ShapeError(f"{path} takes input of shape {frozen}, the given input has shape {x.shape}")
    if signature[0] == -1 or frozen[0] == x.shape[0]:
        if frozen != x.shape:
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        return lambda batch: _invoke_tflite(interpreter, batch)
    size = frozen[0]
    if frozen[1:] != x.shape[1:]:  # a dynamic time axis under a frozen batch
        interpreter.resize_tensor_input(inp["index"], [size, *x.shape[1:]])
    interpreter.allocate_tensors()

    def chunked(batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = []
        for start in range(0, batch.shape[0], size):
            chunk = batch[start:start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
            parts.append({k: v[:len(chunk)] for k, v in _invoke_tflite(interpreter, padded).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return chunked


def run_tflite(path: str | os.PathLike, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of a ``.tflite`` model on x, by output name (see `tflite_runner`)."""
    return tflite_runner(path, x)(x)


def _invoke_tflite(interpreter, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter.reset_all_variables()  # fused LSTM ops keep their state in variables between calls
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], _quantize(x, inp))
    interpreter.invoke()
    return {d["name"]: _dequantize(interpreter.get_tensor(d["index"]).copy(), d)
            for d in interpreter.get_output_details()}


def onnx_runner(path: str | os.PathLike, threads: int | None = None):
    """A function running an ``.onnx`` model under ONNX Runtime (session made once): outputs by name."""
    try:
        import onnxruntime
    except ImportError:
        raise UnsupportedError("running an .onnx model needs ONNX Runtime: pip install 'edgelstm[onnxruntime]'") \
            from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise FormatError(f"ONNX Runtime cannot load {path}: {exc}") from None
    (inp,) = session.get_inputs()
    dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(inp.type)
    if dtype is None:
        raise UnsupportedError(f"{path}: input type {inp.type} is not supported for cross-checking")
    names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, map(np.asarray, session.run(None, {inp.name: x.astype(dtype, copy=False)}))))
    return run


def run_onnx(path: str | os.PathLike, x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of an ``.onnx`` model under ONNX Runtime on x, by output name."""
    return onnx_runner(path)(x)


def compare(ours: np.ndarray, theirs: dict[str, np.ndarray], atol: float, rtol: float) -> list[Comparison]:
    """Our output against the first reference output of the same shape (numpy's allclose rule)."""
    rows = []
    for name, ref in theirs.items():
        if ref.shape != ours.shape or rows:
            continue
        ref = ref.astype(np.float64)
        diff = np.abs(ours.astype(np.float64) - ref)
        rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
        rows.append(Comparison(name, ref.shape, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                               bool(np.all(diff <= atol + rtol * np.abs(ref)))))
    if not rows:
        shapes = ", ".join(f"{n} {v.shape}" for n, v in theirs.items())
        raise ShapeError(f"no reference output has our output's shape {ours.shape}; reference outputs: {shapes}")
    return rows


def default_atol(model: Model) -> tuple[float, str]:
    """The absolute tolerance `verify` uses when none is given, and why: float32 precision, or for a
    quantized model a multiple of the error its conversion recorded against float32."""
    quantization = model.graph.metadata.get("quantization", {})
    if "error" not in quantization:
        return FLOAT_ATOL, "float32 precision"
    report = ErrorReport(**quantization["error"])
    return report.verify_atol, (f"{VERIFY_ERROR_FACTOR}x the {quantization['scheme']} error recorded at conversion: "
                                f"max |diff| {report.max_abs:.3g} against float32 on {report.data}")


def verify(model: Model, reference: str | os.PathLike, x, atol: float | None = None, rtol: float = 1e-5,
           kind: str | None = None) -> list[Comparison]:
    """Run `model` and the reference model (``.tflite`` or ``.onnx``; `kind` overrides the suffix)
    on `x` and compare; every row's `passed` tells whether it is within tolerance (`atol` defaults
    to `default_atol`)."""
    if atol is None:
        atol = default_atol(model)[0]
    kind = kind or Path(reference).suffix.lstrip(".")
    if kind not in REFERENCE_KINDS:
        raise UnsupportedError(f"cannot cross-check against {reference}; supported: .tflite (LiteRT), .onnx "
                               "(ONNX Runtime)")
    ours = to_source_output(model, model.predict(x))
    batch = to_source_input(model, model.prepare_input(x))
    run = run_tflite if kind == "tflite" else run_onnx
    return compare(ours, run(reference, batch), atol, rtol)
