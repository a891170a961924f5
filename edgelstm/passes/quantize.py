"""Quantization: a float32 graph to one with int8 or float16 weights, and what that costs.

``int8``: every matrix of `ir.QUANTIZABLE` (input and recurrent kernels, dense and conv kernels,
embedding tables) of at least `MIN_ELEMENTS` weights becomes symmetric int8 with a float16 scale
per output column (per row for an embedding table), or one per tensor. The other weights of those
layers (smaller matrices, biases, peepholes) are stored as float16 and computed in float32: a
Dense(1) head is a few hundred bytes, yet int8 rounding of it and of the rows it multiplies
reaches the output undamped (LiteRT's converter leaves such matrices float too; bench/RESULTS.md,
"int8": half the error of the grid's models), while float16's rounding (2^-11 relative) is a
hundredth of int8's. Normalisation weights stay float32. Recurrent and dense layers then run int8
products (`kernels.quantized`); the rest is dequantized when a model is loaded. With calibration
data, each int8 layer also gets a fixed ``input_range`` for the rows its input matrix multiplies;
without it they are scaled per row at run time (LiteRT's dynamic range mode).

``float16``: every float weight is stored as float16 and computed in float32.

A weight with values beyond float16's range (65504; for an int8 matrix, 127 times that, where its
scale would overflow) stays float32 under either scheme.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import InputError, UnsupportedError
from ..ir import QUANTIZABLE, RECURRENT_KINDS, SCALE_SUFFIX, Graph, validate
from ..kernels.quantized import QMAX, symmetric_scale

SCHEMES = ("int8", "float16")
MIN_ELEMENTS = 1024  # smaller matrices stay float (float16) under int8 (LiteRT's threshold too)
WARN_RELATIVE_RMSE = 0.02
VERIFY_ERROR_FACTOR = 4
"""A quantized model whose outputs differ from float32 by more than this relative RMSE gets a warning."""


_FLOAT16_TINY = np.finfo(np.float16).smallest_subnormal
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _int8_scale_fits(w: np.ndarray) -> bool:
    """Whether the int8 scales of `w` (up to max |w| / 127) fit float16."""
    return bool(np.all(np.abs(w) <= QMAX * _FLOAT16_MAX))


def float16_if_it_fits(w: np.ndarray) -> np.ndarray:
    """A float32 weight as float16 when its values are in float16's range; else unchanged."""
    return w.astype(np.float16) if w.dtype == np.float32 and np.all(np.abs(w) <= _FLOAT16_MAX) else w


def quantize_weight(w: np.ndarray, kind: str, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float16 scale) of a float weight: symmetric, per output column (per row for an
    embedding table) or per tensor; an all-zero channel gets scale 1.

    Scales are stored as float16 (that keeps an LSTM(128) under 27% of its float32 size), rounded
    up so no value passes ±127, and the values are rounded against the stored scale."""
    w = np.asarray(w, np.float32)
    if not per_channel:
        axes, keep = None, False
    elif kind == "embedding":
        axes, keep = 1, True
    else:
        axes, keep = tuple(range(w.ndim - 1)), False
    top = np.abs(w).max(axis=axes, keepdims=keep)
    exact = symmetric_scale(top)
    scale = np.maximum(exact.astype(np.float16), _FLOAT16_TINY)
    scale = np.where(scale.astype(np.float32) < exact, np.nextafter(scale, np.float16(np.inf)), scale)
    scale = scale.astype(np.float16).reshape(top.shape if per_channel else (1,))
    values = np.clip(np.rint(w / scale.astype(np.float32)), -QMAX, QMAX).astype(np.int8)
    return values, scale


def is_quantized(graph: Graph) -> bool:
    """Whether `graph` went through `quantize` (even one left without int8 matrices) or holds
    weights other than float32."""
    return ("quantization" in graph.metadata
            or any(w.dtype != np.float32 for layer in graph.layers for w in layer.weights.values()))


def _check_data(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise InputError(f"the {what} data holds NaN or infinite values; clean it before quantizing")
    return x


def input_ranges(graph: Graph, calibration: np.ndarray) -> dict[str, float]:
    """Per recurrent or dense layer: max |input| over the calibration data, run in float32 (layers
    whose input is all zeros there are left to per-row scaling)."""
    from ..runtime import Model

    outputs = Model(graph).layer_outputs(_check_data(calibration, "calibration"))
    ranges = {}
    for layer in graph.layers:
        if layer.kind in RECURRENT_KINDS or layer.kind == "dense":
            top = float(np.abs(outputs[layer.inputs[0]]).max())
            if top > 0:
                ranges[layer.name] = top
    return ranges


def quantize(graph: Graph, scheme: str = "int8", per_channel: bool = True, calibration=None,
             min_elements: int = MIN_ELEMENTS) -> Graph:
    """A copy of the float32 `graph` with `scheme` weights (see the module's docstring); under int8
    matrices of fewer than `min_elements` weights stay float (float16)."""
    if scheme not in SCHEMES:
        raise UnsupportedError(f"unknown quantization '{scheme}'; supported: {', '.join(SCHEMES)}")
    if is_quantized(graph):
        raise UnsupportedError("the model is already quantized; quantize its float32 original instead")
    static = input_ranges(graph, calibration) if calibration is not None and scheme == "int8" else {}
    layers = []
    for layer in graph.layers:
        weights, attrs = dict(layer.weights), dict(layer.attrs)
        if scheme == "float16":
            weights = {name: float16_if_it_fits(w) for name, w in weights.items()}
        elif layer.kind in QUANTIZABLE:
            matrices = [name for name in QUANTIZABLE[layer.kind]
                        if weights[name].size >= min_elements and _int8_scale_fits(weights[name])]
            weights = {name: w if name in matrices else float16_if_it_fits(w) for name, w in weights.items()}
            for name in matrices:
                weights[name], weights[name + SCALE_SUFFIX] = quantize_weight(weights[name], layer.kind, per_channel)
            if layer.name in static and weights["kernel"].dtype == np.int8:  # it fixes the input matrix's rows
                attrs["input_range"] = static[layer.name]
        layers.append(dataclasses.replace(layer, weights=weights, attrs=attrs))
    metadata = dict(graph.metadata)
    metadata["quantization"] = {"scheme": scheme, "per_channel": per_channel if scheme == "int8" else None,
                                "input_scales": ("static, from calibration data"
                                                 if any("input_range" in l.attrs for l in layers) else "per row, at run time")
                                if scheme == "int8" else None}
    quantized = Graph(layers=layers, output=graph.output, metadata=metadata)
    validate(quantized)
    return quantized


@dataclasses.dataclass
class ErrorReport:
    """How far a quantized model's outputs are from float32's on some data."""

    data: str  # what the inputs were
    max_abs: float
    relative_rmse: float  # RMSE of the difference / RMS of the float32 outputs
    per_output: list[tuple[float, float]]  # (max_abs, relative_rmse) per output column, for up to 16 columns

    @property
    def warning(self) -> str | None:
        if self.relative_rmse <= WARN_RELATIVE_RMSE:
            return None
        return (f"the quantized outputs differ from float32 by {100 * self.relative_rmse:.1f}% relative RMSE "
                f"(more than {100 * WARN_RELATIVE_RMSE:.0f}%); check the model on your task before shipping it")

    @property
    def verify_atol(self) -> float:
        """The absolute tolerance for `edgelstm verify` against a float32 twin or another int8 one
        (LiteRT dynamic range, ONNX Runtime quantize_dynamic): four times `max_abs`, rounded up to two
        significant digits. Those twins round weights and rows their own way: on the trained task
        models (8-bit rows on both sides) their error from float32 measured 1.2-1.3x ours, and ours
        and theirs differed by 1.3-1.5x our error; with 12-bit rows ours was a third of theirs, so
        the margin also covers twins rounded more coarsely than ours."""
        bound = VERIFY_ERROR_FACTOR * self.max_abs
        if bound <= 0:
            return 1e-5
        step = 10.0 ** (math.floor(math.log10(bound)) - 1)
        return max(math.ceil(bound / step - 1e-9) * step, 1e-5)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _relative_rmse(diff: np.ndarray, ref: np.ndarray) -> float:
    scale = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    return float(np.sqrt(np.mean(np.square(diff, dtype=np.float64)))) / max(scale, 1e-12)


def compare(float_graph: Graph, quantized: Graph, x, data: str) -> ErrorReport:
    """Run both graphs on x and measure the quantized outputs against float32's."""
    from ..runtime import Model

    x = _check_data(x, "evaluation")
    ref = Model(float_graph).predict(x).astype(np.float64)
    got = Model(quantized).predict(x).astype(np.float64)
    diff = got - ref
    columns = ref.reshape(-1, ref.shape[-1])
    per_output = [(float(np.abs(d).max()), _relative_rmse(d, r))
                  for d, r in zip(diff.reshape(-1, ref.shape[-1]).T, columns.T)] if ref.shape[-1] <= 16 else []
    return ErrorReport(data=data, max_abs=float(np.abs(diff).max()), relative_rmse=_relative_rmse(diff, ref),
                       per_output=per_output)


def probe_input(graph: Graph, batch: int = 32, steps: int = 50, seed: int = 0) -> np.ndarray:
    """Random inputs for a model when the user gave no data: standard normal features, or token ids
    drawn from the first embedding table."""
    rng = np.random.default_rng(seed)
    shape = (batch,) + tuple(steps if d is None else d for d in graph.input.shape)
    if graph.input.attrs["dtype"] == "int32":
        vocab = next(l.weights["embeddings"].shape[0] for l in graph.layers if l.kind == "embedding")
        return rng.integers(1 if vocab > 1 else 0, vocab, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)
