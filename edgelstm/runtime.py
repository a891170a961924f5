"""Running a graph: `Model` (batch prediction) and `Stream` (step by step with kept state).

The runtime turns each IR layer into an `_Op`: a closure over the layer's weights that calls one
kernel of the chosen backend, writing into a buffer of a `_Workspace`. It does no maths itself.
Masks (boolean [batch, time]) travel beside the values by `ir.mask_rule`; recurrent layers and
the average global pooling consume them. With the CUDA backend every buffer, mask and state is a
device array: the input is copied in once per call and the output copied out once.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import math
import threading
from typing import Callable

import numba
import numpy as np

from . import aligned
from .errors import BackendError, InputError, ShapeError
from .ir import RECURRENT_KINDS, SCALE_SUFFIX, Graph, Layer, conv_padding, mask_rule, scale_names, validate
from .kernels import activations, cpu, reference
from .kernels.packed import PackedMatrix
from .kernels.quantized import MAX_INPUT_ROWS, ROW_QMAX, QuantizedMatrix

BACKENDS = {"cpu": cpu, "reference": reference, "cuda": None}  # cuda: imported when asked for
BACKEND_CHOICES = ("auto", *BACKENDS)

# Layers that keep the time axis step for step: they can run one step at a time.
_TIME_LOCAL = {"input", "dense", "activation", "embedding", "masking", "batch_norm", "layer_norm", "merge"}
_MERGE_CODES = {"add": reference.MERGE_ADD, "multiply": reference.MERGE_MULTIPLY, "average": reference.MERGE_AVERAGE}
_WORKQUEUE_LOCK = threading.Lock()
_PROGRAM_MAX_WORK = 1_500_000  # multiply-adds of a call above which, on several threads, rows split (`_program_pays`)
_STEPPED_MAX_STEPS = 100  # longer sequences run faster layer by layer (see `Model._sequence_program`)


_guard = None


def _parallel_guard():
    """A lock when numba runs on its ``workqueue`` threading layer (used when neither OpenMP nor
    TBB is installed), which aborts the process if two threads enter parallel code at once."""
    global _guard
    if _guard is None:
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run in this process yet: be safe
            return _WORKQUEUE_LOCK
        _guard = _WORKQUEUE_LOCK if layer == "workqueue" else contextlib.nullcontext()
    return _guard


def _gpu_present() -> bool:
    """Cheap signs of a usable NVIDIA GPU, checked before paying for importing numba's CUDA target:
    numba-cuda installed, not the simulator, and the driver library loadable."""
    if numba.config.ENABLE_CUDASIM or importlib.util.find_spec("numba_cuda") is None:
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    from .kernels import cuda as cuda_kernels

    return cuda_kernels.unusable() is None


def resolve_backend(name: str) -> str:
    """The backend `name` stands for: ``auto`` is ``cuda`` when a GPU is usable, else ``cpu``."""
    if name not in BACKENDS and name != "auto":
        raise BackendError(f"unknown backend '{name}'; choose one of: {', '.join(BACKEND_CHOICES)}")
    if name == "auto":
        return "cuda" if _gpu_present() else "cpu"
    return name


def select_backend(name: str):
    """The kernel module for a backend name (``auto`` picks the fastest one available)."""
    name = resolve_backend(name)
    if name == "cuda":
        from .kernels import cuda as cuda_kernels

        why = cuda_kernels.unusable()
        if why:
            raise BackendError(f"the cuda backend cannot run here: {why}; use backend 'cpu' (--backend cpu)")
        return cuda_kernels
    return BACKENDS[name]


class _Workspace:
    """Output buffers and recurrent states, reused from call to call while shapes stay the same."""

    def __init__(self, kernels, streaming: bool = False):
        self.k = kernels  # the backend: its `empty` and `assign` make and fill the arrays
        self.streaming = streaming  # ops get a few time steps per call and keep what they need as state
        self.buffers: dict[str, np.ndarray] = {}
        self.states: dict[str, tuple[np.ndarray, ...]] = {}
        self.initial: dict[str, list] = {}  # per layer: the arrays its states restart from (None: zeros)
        self.programs: dict[int, cpu.StepProgram | None] = {}  # per batch size: `Model._sequence_program`'s

    def buffer(self, key: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[key] = self.k.empty(shape, dtype)
        return buf

    def from_host(self, key: str, array: np.ndarray):
        """A numpy array as the backend takes it (copied into a buffer when the backend is a device)."""
        if not self.k.ON_DEVICE:
            return array
        buf = self.buffer(key, array.shape, array.dtype)
        self.k.assign(buf, array)
        return buf

    def all_true(self, batch: int, steps: int):
        mask = self.buffers.get("<all-true>")
        if mask is None or mask.shape != (batch, steps):  # made once per shape: kernels only read it
            mask = self.buffer("<all-true>", (batch, steps), np.bool_)
            self.k.assign(mask, True)
        return mask

    def state(self, layer: Layer, batch: int, count: int, shape: tuple = ()) -> tuple[np.ndarray, ...]:
        """`count` state arrays [batch, *shape] (default shape: [units]) of `layer`, starting from
        zeros or from the layer's ``initial_h``/``initial_c`` weights."""
        shape = (batch,) + (shape or (layer.attrs["units"],))
        state = self.states.get(layer.name)
        if state is None or state[0].shape != shape:
            initial = [layer.weights.get(name) for name in ("initial_h", "initial_c")[:count]]
            for start in initial:
                if start is not None and start.ndim == 2 and start.shape[0] != batch:
                    raise ShapeError(f"layer '{layer.name}' has initial states for a batch of {start.shape[0]}; "
                                     f"the input has a batch of {batch}")
            self.initial[layer.name] = initial
            state = self.states[layer.name] = tuple(self.k.empty(shape, np.float32) for _ in range(count))
            self._restart(layer.name)
        return state

    def _restart(self, name: str) -> None:
        for array, start in zip(self.states[name], self.initial[name]):
            self.k.assign(array, 0.0 if start is None else start)

    def reset_states(self) -> None:
        for name in self.states:
            self._restart(name)


# An op maps (input arrays, input masks, workspace) to (output array, the mask it produces or None).
_Op = Callable[[list, list, _Workspace], tuple]


def _width(x) -> int:
    """The last dimension (shape[-1], which the CUDA simulator's device arrays do not allow)."""
    return x.shape[len(x.shape) - 1]


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, _width(x))


def _mask_parts(layer: Layer, rule: str, produced, masks: list) -> list:
    """The masks that make `layer`'s output mask by its `mask_rule`: none, one to hand on, or
    several to combine by its ``mask_combine`` (AND for ``all``, else OR)."""
    if rule == "produce":
        return [] if produced is None else [produced]
    if rule == "pass":
        return [] if masks[0] is None else [masks[0]]
    if rule == "drop":
        return []
    present = [m for m in masks if m is not None]
    if layer.attrs["mask_combine"] != "all" and len(present) < len(masks):
        return []
    return present


def _output_mask(layer: Layer, rule: str, produced, masks: list, ws: _Workspace):
    """The mask `layer` hands on (None: none)."""
    parts = _mask_parts(layer, rule, produced, masks)
    if len(parts) < 2:
        return parts[0] if parts else None
    out = ws.buffer(layer.name + "<mask>", parts[0].shape, np.bool_)
    ws.k.combine_masks(parts, layer.attrs["mask_combine"] == "all", out)
    return out


def _window(layer: Layer, length: int, size: int, dilation: int, unpadded: bool = False) -> tuple[int, int]:
    """Padding and output length of a convolution or pooling layer; refuses too-short inputs."""
    padding = "valid" if unpadded else layer.attrs["padding"]
    pad, steps = conv_padding(length, size, layer.attrs["strides"], dilation, padding)
    if steps < 1:
        raise ShapeError(f"a sequence of {length} steps is too short for layer '{layer.name}' ({layer.kind}, "
                         f"window {dilation * (size - 1) + 1})")
    return pad, steps


_INT8_MIN_ROWS = 32  # an int8 product over fewer inputs is no faster, and quantizing its input costs accuracy
# On the CPU the float32 product from packed panels beats the int8 one below 64 inputs
# (bench/RESULTS.md, "int8 below 64 inputs"): the CPU backend widens those matrices too.
_CPU_INT8_MIN_ROWS = 64


def kernel_weights(layer: Layer, int8_min_rows: int = _INT8_MIN_ROWS) -> dict[str, np.ndarray | QuantizedMatrix]:
    """`layer`'s weights as the kernels take them: float16 widened to float32; the int8 matrices
    of recurrent and dense layers with `int8_min_rows` to `MAX_INPUT_ROWS` input rows as `QuantizedMatrix`
    (they run as int8), other int8 tensors (small input projections, convolution kernels, embedding tables)
    dequantized to float32."""
    scales = scale_names(layer)
    ready = {}
    for name, w in layer.weights.items():
        if name in scales:
            continue
        if w.dtype == np.int8:
            scale = layer.weights[name + SCALE_SUFFIX].astype(np.float32)
            runs_int8 = layer.kind in RECURRENT_KINDS or layer.kind == "dense"
            if runs_int8 and int8_min_rows <= w.shape[0] <= MAX_INPUT_ROWS:
                static = np.float32(layer.attrs.get("input_range", 0.0)) / np.float32(ROW_QMAX) if name == "kernel" else 0.0
                w = QuantizedMatrix.from_values(w, np.broadcast_to(scale, w.shape[-1:]), static)
            else:
                w = w.astype(np.float32) * scale
        elif w.dtype != np.float32:
            w = w.astype(np.float32)
        if isinstance(w, np.ndarray) and not aligned.is_aligned(w):  # widened, dequantized, or from a version-1 file
            w = aligned.copy(w)
        ready[name] = w
    if layer.kind == "lstm":
        ready.setdefault("peephole", np.zeros(0, np.float32))  # none: the kernels take an empty one
    return ready


def _pack_recurrent(layer: Layer, w: dict) -> dict:
    """`kernel_weights` w with a recurrent layer's float32 matrices packed into panels as well
    (`PackedMatrix`), as the CPU kernels read them."""
    if layer.kind in RECURRENT_KINDS:
        for name in ("kernel", "recurrent_kernel"):
            if isinstance(w[name], np.ndarray):
                w[name] = PackedMatrix.from_matrix(w[name])
    return w


def _build_op(layer: Layer, w: dict, k) -> _Op:
    """The closure that runs `layer` with its `kernel_weights` w and the kernel module `k`."""
    a, name = layer.attrs, layer.name
    act = activations.CODES.get(a.get("activation", "linear"))
    if k.ON_DEVICE:
        if layer.kind in RECURRENT_KINDS and a["units"] > k.MAX_UNITS:
            raise BackendError(f"layer '{name}' has {a['units']} units; the cuda backend runs recurrent layers of up "
                               f"to {k.MAX_UNITS}; use backend 'cpu' (--backend cpu)")
        w = k.upload(w)

    if layer.kind in RECURRENT_KINDS:
        rec_act = activations.CODES.get(a.get("recurrent_activation", "sigmoid"))
        rs, back, zero = bool(a["return_sequences"]), bool(a["go_backwards"]), bool(a["zero_output_for_mask"])
        units = a["units"]
        if layer.kind == "lstm":
            out_act = activations.CODES[a["output_activation"]]
            clip, input_forget = float(a["clip"]), bool(a["input_forget"])

        def recurrent(xs, masks, ws):
            x = xs[0]
            batch, steps = x.shape[:2]
            mask = masks[0] if masks[0] is not None else ws.all_true(batch, steps)
            # a stream wants every step's output; a layer that returns only its last state then emits
            # its (carried) state at each step, which is what it would return if the sequence ended there
            every = rs or ws.streaming
            zero_masked = zero and rs
            out = ws.buffer(name, (batch, steps if every else 1, units))
            if layer.kind == "lstm":
                h, c = ws.state(layer, batch, 2)
                k.lstm(x, mask, w["kernel"], w["recurrent_kernel"], w["bias"], w["peephole"], act, rec_act,
                       out_act, clip, input_forget, back, every, zero_masked, h, c, out)
            elif layer.kind == "gru":
                (h,) = ws.state(layer, batch, 1)
                k.gru(x, mask, w["kernel"], w["recurrent_kernel"], w["bias"], w["recurrent_bias"], act, rec_act,
                      bool(a["reset_after"]), back, every, zero_masked, h, out)
            else:
                (h,) = ws.state(layer, batch, 1)
                k.rnn(x, mask, w["kernel"], w["recurrent_kernel"], w["bias"], act, back, every, zero_masked, h, out)
            return (out if every else out[:, 0]), None
        return recurrent

    if layer.kind in ("dense", "activation", "batch_norm", "layer_norm"):
        width = layer.shape[-1]  # None: as many features as the input brings (an Activation after an input of any)

        def rowwise(xs, masks, ws):
            x = xs[0]
            out = ws.buffer(name, x.shape[:-1] + (_width(x) if width is None else width,))
            rows, out_rows = _rows(x), _rows(out)
            if layer.kind == "dense":
                k.dense(rows, w["kernel"], w["bias"], act, out_rows)
            elif layer.kind == "activation":
                k.activation(rows, act, out_rows)
            elif layer.kind == "batch_norm":
                k.batch_norm(rows, w["scale"], w["offset"], out_rows)
            else:
                k.layer_norm(rows, w["gamma"], w["beta"], float(a["epsilon"]), out_rows)
            return out, None
        return rowwise

    if layer.kind == "embedding":
        table = w["embeddings"]

        def embed(xs, masks, ws):  # ids were checked against the table by `Model._values`
            ids = xs[0]
            out = ws.buffer(name, ids.shape + (table.shape[1],))
            k.embedding(ids, table, out)
            if not a["mask_zero"]:
                return out, None
            mask = ws.buffer(name + "<mask>", ids.shape, np.bool_)
            k.nonzero(ids, mask)
            return out, mask
        return embed

    if layer.kind == "masking":
        value = np.float32(a["mask_value"])

        def masking(xs, masks, ws):
            out = ws.buffer(name, xs[0].shape)
            mask = ws.buffer(name + "<mask>", xs[0].shape[:2], np.bool_)
            k.masking(xs[0], value, out, mask)
            return out, mask
        return masking

    if layer.kind == "conv1d":
        span = a["dilation"] * (w["kernel"].shape[0] - 1) + 1

        def conv(xs, masks, ws):
            x = xs[0]
            if ws.streaming and span > 1:  # causal, stride 1: the inputs before these steps are kept as state
                (window,) = ws.state(layer, x.shape[0], 1, (span - 1, x.shape[2]))
                full = ws.buffer(name + "<window>", (x.shape[0], span - 1 + x.shape[1], x.shape[2]))
                k.shift_in(window, x, full)
                x = full
            pad, steps = _window(layer, x.shape[1], w["kernel"].shape[0], a["dilation"], ws.streaming)
            out = ws.buffer(name, (x.shape[0], steps, w["kernel"].shape[2]))
            k.conv1d(x, w["kernel"], w["bias"], a["strides"], a["dilation"], pad, act, out)
            return out, None
        return conv

    if layer.kind == "pool1d":
        def pool(xs, masks, ws):
            x = xs[0]
            pad, steps = _window(layer, x.shape[1], a["pool_size"], 1)
            out = ws.buffer(name, (x.shape[0], steps, x.shape[2]))
            k.pool1d(x, a["op"] == "max", a["pool_size"], a["strides"], pad, out)
            return out, None
        return pool

    if layer.kind == "global_pool1d":
        def global_pool(xs, masks, ws):
            x = xs[0]
            mask = masks[0] if masks[0] is not None else ws.all_true(*x.shape[:2])
            out = ws.buffer(name, (x.shape[0], x.shape[2]))
            k.global_pool1d(x, mask, a["op"] == "max", out)
            return out, None
        return global_pool

    if layer.kind == "reverse":
        def reverse(xs, masks, ws):
            out = ws.buffer(name, xs[0].shape)
            k.reverse(xs[0], out)
            return out, None
        return reverse

    if layer.kind == "repeat":
        def repeat(xs, masks, ws):
            out = ws.buffer(name, (xs[0].shape[0], a["n"], xs[0].shape[1]))
            k.repeat(xs[0], out)
            return out, None
        return repeat

    if layer.kind == "length_mask":
        lengths = np.asarray(a["lengths"])

        def length_mask(xs, masks, ws):
            if xs[0].shape[0] != len(lengths):
                raise ShapeError(f"layer '{name}' has sequence lengths for a batch of {len(lengths)}; "
                                 f"the input has a batch of {xs[0].shape[0]}")
            return xs[0], ws.from_host(name + "<mask>", np.arange(xs[0].shape[1])[None, :] < lengths[:, None])
        return length_mask

    if layer.kind == "take_step":
        def take_step(xs, masks, ws):
            x = xs[0]
            if ws.streaming:  # only the newest step streams: each step fed is the newest when it is fed
                return x, None
            if not -x.shape[1] <= a["index"] < x.shape[1]:
                raise ShapeError(f"layer '{name}' takes step {a['index']} of a {x.shape[1]}-step sequence")
            out = ws.buffer(name, (x.shape[0], x.shape[2]))
            k.take_step(x, a["index"] % x.shape[1], out)
            return out, None
        return take_step

    if layer.kind == "flatten":
        return lambda xs, masks, ws: (xs[0].reshape(xs[0].shape[0], -1), None)

    if layer.kind == "merge":
        op = a["op"]

        def merge(xs, masks, ws):
            if any(x.shape[:-1] != xs[0].shape[:-1] or (op != "concatenate" and x.shape != xs[0].shape)
                   for x in xs):
                raise ShapeError(f"layer '{name}' ({op}) gets inputs of shapes {[x.shape for x in xs]}; "
                                 "they must match")
            if op == "concatenate":
                out = ws.buffer(name, xs[0].shape[:-1] + (sum(_width(x) for x in xs),))
                k.concatenate(xs, out)
            else:
                out = ws.buffer(name, xs[0].shape)
                k.merge(tuple(x.reshape(-1) for x in xs), _MERGE_CODES[op], out.reshape(-1))
            return out, None
        return merge

    raise BackendError(f"layer '{name}' of kind '{layer.kind}' has no kernel")


class Model:
    """A loaded model, ready to run. Build one with `edgelstm.load`."""

    def __init__(self, graph: Graph, backend: str = "auto"):
        self.backend = resolve_backend(backend)
        self._kernels = kernels = select_backend(self.backend)
        validate(graph)
        self.graph = graph
        # values and masks travel in lists by layer position: no name lookups on the per-step path
        position = {layer.name: i for i, layer in enumerate(graph.layers)}
        int8_min_rows = _CPU_INT8_MIN_ROWS if kernels is cpu else _INT8_MIN_ROWS
        weights = [kernel_weights(layer, int8_min_rows) for layer in graph.layers[1:]]
        if kernels is cpu:
            weights = [_pack_recurrent(layer, w) for layer, w in zip(graph.layers[1:], weights)]
        self._ops = [(layer, mask_rule(layer), _build_op(layer, w, kernels), [position[s] for s in layer.inputs])
                     for layer, w in zip(graph.layers[1:], weights)]
        self._host_weights = None if kernels.ON_DEVICE else weights  # for `Stream`'s one-call step
        self._output = position[graph.output]
        # token ids can only come from the input: checked there, on the host, against the smallest table
        tables = [(layer.weights["embeddings"].shape[0], layer.name) for layer in graph.layers
                  if layer.kind == "embedding"]
        self._id_limit = min(tables) if tables else None
        self._input_dtype = np.dtype(graph.input.attrs["dtype"])
        self._steps_through = kernels is cpu and _not_streamable(graph) is None  # see `_sequence_program`
        if self._host_weights is not None:  # what `_program_pays` weighs: a step's multiply-adds per
            # sequence (deferred layers counted as if they ran every step), and the matrices that may split
            self._multiply_adds = sum(math.prod(w[name].shape) for w in weights
                                      for name in ("kernel", "recurrent_kernel") if name in w)
            self._split_matrices = [w[name] for layer, w in zip(graph.layers[1:], weights)
                                    if layer.kind in RECURRENT_KINDS for name in ("kernel", "recurrent_kernel")]
        self._every_step = len(self.output_shape) == 2  # the output keeps the time axis
        # `prepare_input`'s quick accept: a float32 model's sequences [batch, steps, *features] whose
        # feature dims are all fixed (their shape, and the number of steps if fixed too)
        steps, *features = self.input_shape
        self._ready_dims = (None if self._input_dtype != np.float32 or None in features
                            else (steps, tuple(features)))
        self._local = threading.local()

    @property
    def input_shape(self) -> tuple:
        """Shape of one input sequence without the batch axis (None: any length)."""
        return self.graph.input.shape

    @property
    def input_dtype(self) -> np.dtype:
        return self._input_dtype

    @property
    def output_shape(self) -> tuple:
        return self.graph.layer(self.graph.output).shape

    def prepare_input(self, x, sequence: bool = True, any_length: bool = False) -> np.ndarray:
        """The input as a contiguous array of the model's dtype, or a clear error. `sequence`:
        x has a time axis (of the model's length, or of any with `any_length`)."""
        ready = self._ready_dims
        if (ready is not None and sequence and not any_length and type(x) is np.ndarray and x.dtype == np.float32
                and x.ndim == 2 + len(ready[1]) and x.shape[2:] == ready[1] and x.shape[0] and x.shape[1]
                and (ready[0] is None or x.shape[1] == ready[0]) and x.flags.c_contiguous):
            return x  # what the checks below would return, for a fraction of their cost (a µs a call)
        if any_length:
            expected = (None,) + tuple(self.input_shape[1:])
        else:
            expected = self.input_shape if sequence else self.input_shape[1:]
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise ShapeError(f"input is not a regular array: {exc}") from None
        if arr.ndim != len(expected) + 1 or any(d is not None and d != g for d, g in zip(expected, arr.shape[1:])):
            want = ("batch",) + tuple("any" if d is None else d for d in expected)
            raise ShapeError(f"input has shape {arr.shape}, expected {want}")
        if arr.shape[0] == 0 or (sequence and arr.shape[1] == 0):
            raise ShapeError(f"input has shape {arr.shape}: it needs at least one sequence of at least one step")
        if self.input_dtype.kind == "i":
            whole = arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0))
            if not whole:
                raise ShapeError(f"input has dtype {arr.dtype}, expected integer token ids")
            return np.ascontiguousarray(arr, np.int64)
        if arr.dtype.kind not in "fiub":
            raise ShapeError(f"input has dtype {arr.dtype}, expected float32")
        return np.ascontiguousarray(arr, np.float32)

    def _check_ids(self, ids: np.ndarray) -> None:
        rows, name = self._id_limit
        if ids.size and (ids.min() < 0 or ids.max() >= rows):
            bad = ids[(ids < 0) | (ids >= rows)][0]
            raise InputError(f"token id {bad} is outside the range of embedding '{name}' [0, {rows})")

    def _values(self, x: np.ndarray, ws: _Workspace) -> list:
        """Every layer's output, by position (in the workspace's buffers: valid until its next use)."""
        if self._id_limit is not None:
            self._check_ids(x)
        values, masks = [ws.from_host("<input>", x)] + [None] * len(self._ops), [None] * (len(self._ops) + 1)
        with _parallel_guard():
            for position, (layer, rule, op, sources) in enumerate(self._ops, 1):
                in_masks = [masks[i] for i in sources]
                values[position], produced = op([values[i] for i in sources], in_masks, ws)
                masks[position] = _output_mask(layer, rule, produced, in_masks, ws)
        return values

    def _run(self, x: np.ndarray, ws: _Workspace) -> np.ndarray:
        """The output for x as a new numpy array."""
        return self._kernels.to_host(self._values(x, ws)[self._output])

    def layer_outputs(self, x) -> dict[str, np.ndarray]:
        """Every layer's output for the whole sequences x, by layer name (for calibration and debugging)."""
        ws = self._workspace()
        ws.reset_states()
        values = self._values(self.prepare_input(x), ws)
        return {layer.name: self._kernels.to_host(value) for layer, value in zip(self.graph.layers, values)}

    def _workspace(self) -> _Workspace:
        ws = getattr(self._local, "workspace", None)
        if ws is None:
            ws = self._local.workspace = _Workspace(self._kernels)
        return ws

    def predict(self, x, batch_size: int | None = None, check_finite: bool = False) -> np.ndarray:
        """Outputs for a batch of whole sequences x [batch, time, features] (or [batch, time] ids).

        Every sequence starts from zero recurrent state. `batch_size` splits a large batch into
        chunks to bound memory. NaN or infinite inputs propagate to their own sequence's outputs;
        `check_finite` refuses them instead. Safe to call from several threads at once.
        """
        x = self.prepare_input(x)
        if check_finite:
            refuse_non_finite(x)
        if batch_size is not None and not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        ws = self._workspace()
        if batch_size is None or batch_size >= x.shape[0]:
            return self._predict_part(x, ws)
        return np.concatenate([self._predict_part(x[start:start + batch_size], ws)
                               for start in range(0, x.shape[0], batch_size)])

    def _predict_part(self, x: np.ndarray, ws: _Workspace) -> np.ndarray:
        program = self._sequence_program(ws, *x.shape[:2])
        if program is None:
            ws.reset_states()
            return self._run(x, ws)
        return self._run_steps(program, x)

    def _sequence_program(self, ws: _Workspace, batch: int, steps: int) -> cpu.StepProgram | None:
        """A `cpu.StepProgram` of the model that runs whole sequences in one call, stepping inside
        it from its initial states; None where the layer-by-layer path runs them: models that do
        not stream, other backends, sequences longer than _STEPPED_MAX_STEPS, and batches where
        splitting rows over threads pays more (`_program_pays`). At batch 1 the layer path's Python
        and numba calls cost 12 us more per sequence, while a step through the program costs about
        0.1 us more (bench/RESULTS.md, "Batch 1"). Made once per batch size and thread."""
        if (not self._steps_through or batch > cpu.STEP_PROGRAM_MAX_BATCH or steps > _STEPPED_MAX_STEPS
                or not _program_pays(self, batch, steps)):
            return None
        if batch not in ws.programs:  # with states of its own: the layer path reallocates its per batch
            ws.programs[batch] = _step_program(self, _Workspace(cpu, streaming=True), batch, whole_sequences=True)
        return ws.programs[batch]

    def _run_steps(self, program: cpu.StepProgram, x: np.ndarray) -> np.ndarray:
        if program.splits_columns and program.threads_now() > 1:
            with _parallel_guard():
                out, bad = program.run_sequence(x, self._every_step)
        else:  # without a `with`: a batch-1 call of a small model costs about 3 us in all
            out, bad = program.run_sequence(x, self._every_step)
        if bad >= 0:  # a token id out of range: nothing ran
            self._check_ids(x)  # names it
            raise InputError("a token id is outside the range of the model's embeddings")
        return out

    def stream(self, batch: int = 1) -> "Stream":
        """A `Stream` that feeds `batch` sequences one time step per call, keeping state."""
        return Stream(self, batch)


def refuse_non_finite(x: np.ndarray) -> None:
    """InputError naming the first NaN or infinite value of a float input."""
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise InputError(f"input holds {np.count_nonzero(~np.isfinite(x))} NaN or infinite values (the first at "
                         f"index {first}); clean the data, or leave out the finite check to let them propagate")


def _not_streamable(graph: Graph) -> str | None:
    """Why a model cannot run one step at a time (None: it can): only forward recurrent layers,
    causal stride-1 convolutions and layers that work on each time step alone stream."""
    for layer in graph.layers:
        if layer.kind in RECURRENT_KINDS and not layer.attrs["go_backwards"]:
            continue
        if layer.kind == "conv1d" and layer.attrs["padding"] == "causal" and layer.attrs["strides"] == 1:
            continue
        if layer.kind == "take_step" and layer.attrs["index"] == -1:  # the newest step: the one fed
            continue
        if layer.kind not in _TIME_LOCAL:
            why = ("it runs backwards over the sequence" if layer.kind in RECURRENT_KINDS
                   else f"'{layer.kind}' layers need the whole sequence"
                   + (" (only causal, stride-1 conv1d streams)" if layer.kind == "conv1d" else ""))
            return f"layer '{layer.name}' is not causal ({why})"
    return None


def _program_pays(model: Model, batch: int, steps: int) -> bool:
    """Whether `steps` steps of `batch` sequences run faster through the model's `cpu.StepProgram`
    than layer by layer. Under 8 rows, or on one thread, they do. From 8 rows on several threads
    the layer path splits the rows over them, which pays once the products' work outweighs its
    Python and thread launches per layer, unless the program splits its products by columns
    itself (a matrix larger than a core's L2: each thread then keeps its share in cache;
    bench/RESULTS.md, "Batches 8 to 64 in one call")."""
    if batch < cpu.ROW_SPLIT_MIN or numba.get_num_threads() == 1:
        return True
    return (batch * steps * model._multiply_adds <= _PROGRAM_MAX_WORK
            or cpu.split_address(model._split_matrices, batch) != 0)


def _step_program(model: Model, ws: _Workspace, batch: int, whole_sequences: bool = False) -> cpu.StepProgram | None:
    """The model's step as one `cpu.StepProgram` call over the workspace's states, or None
    where the layer-by-layer path runs it: another backend, a batch past 64 (rows split over threads), a
    merge of many inputs, a feature count known only at run time, token ids that reach a layer
    other than an embedding (or an embedding of computed values), or a layer kind with no op.
    Masks follow `mask_rule` as in `_output_mask`; which layers have one is known when the stream
    opens. For `whole_sequences` the layers that see only a sequence's end (after a recurrent
    layer without return_sequences or a take_step) are deferred: `run_sequence` runs them once."""
    if model._kernels is not cpu or batch > cpu.STEP_PROGRAM_MAX_BATCH:
        return None
    ids = model.input_dtype.kind == "i"
    if ids and model._id_limit is None:  # token ids that no embedding takes
        return None
    if not ids and model.input_shape[1] is None:  # a feature count known only at run time
        return None
    program = cpu.StepProgram(batch, 0 if ids else model.input_shape[1], model._id_limit[0] if ids else 0)
    slots, masks = [program.input], [None]  # by layer position: the value and the mask (None: none)
    at_end = [False]  # by layer position: the value is needed after the last step only
    for (layer, rule, _, sources), w in zip(model._ops, model._host_weights):
        a, src, in_masks = layer.attrs, slots[sources[0]], [masks[i] for i in sources]
        stateful = layer.kind in RECURRENT_KINDS or layer.kind == "conv1d"  # these step every step
        program.deferred = whole_sequences and not stateful and all(at_end[i] for i in sources)
        if ids and program.input in [slots[i] for i in sources] and layer.kind != "embedding":
            return None
        act = activations.CODES.get(a.get("activation", "linear"))
        produced = None
        if layer.kind in RECURRENT_KINDS:  # forward ones: `Stream` refuses the others
            lstm = layer.kind == "lstm"
            states = ws.state(layer, batch, 2 if lstm else 1)
            acts = (act, activations.CODES.get(a.get("recurrent_activation", "sigmoid")),
                    activations.CODES[a["output_activation"]] if lstm else act)
            value = program.recurrent(layer.kind, src, w, acts, bool(a.get("reset_after", False)),
                                      bool(a.get("input_forget", False)), float(a.get("clip", 0.0)),
                                      states[0], states[1] if lstm else None, in_masks[0],
                                      bool(a["zero_output_for_mask"] and a["return_sequences"]))
        elif layer.kind == "dense":
            value = program.dense(src, w["kernel"], w["bias"], act)
        elif layer.kind == "activation":
            value = program.activation(src, layer.shape[-1], act)
        elif layer.kind == "embedding" and src == program.input:
            value, produced = program.embedding(src, w["embeddings"], bool(a["mask_zero"]))
        elif layer.kind == "masking":
            value, produced = program.masking(src, layer.shape[-1], float(np.float32(a["mask_value"])))
        elif layer.kind == "batch_norm":
            value = program.batch_norm(src, w["scale"], w["offset"])
        elif layer.kind == "layer_norm":
            value = program.layer_norm(src, w["gamma"], w["beta"], float(a["epsilon"]))
        elif layer.kind == "merge" and len(sources) <= cpu.STEP_PROGRAM_MAX_MERGE:
            code = cpu.MERGE_CONCATENATE if a["op"] == "concatenate" else _MERGE_CODES[a["op"]]
            value = program.merge([slots[i] for i in sources], code)
        elif layer.kind == "conv1d":  # causal and stride 1: `Stream` refuses the others
            span = a["dilation"] * (w["kernel"].shape[0] - 1) + 1
            window = ws.state(layer, batch, 1, (span - 1, w["kernel"].shape[1]))[0] if span > 1 else None
            value = program.causal_conv(src, w["kernel"], w["bias"], a["dilation"], act, window)
        elif layer.kind == "take_step":  # the newest step (`Stream` refuses others): the step fed
            value = src
        else:
            return None
        slots.append(value)
        last_only = layer.kind == "take_step" or (layer.kind in RECURRENT_KINDS and not a["return_sequences"])
        at_end.append(program.deferred or (whole_sequences and last_only))
        parts = _mask_parts(layer, rule, produced, in_masks)
        masks.append(program.combine_masks(parts, a["mask_combine"] == "all") if len(parts) > 1
                     else parts[0] if parts else None)
    if whole_sequences:  # each call starts from the initial states
        for name, states in ws.states.items():
            for state, start in zip(states, ws.initial[name]):
                program.restart_from(state, start)
    program.finish(slots[model._output])
    return program


class Stream:
    """Step-by-step inference for `batch` sequences; recurrent state is kept between `step` calls.

    Feeding a sequence one step at a time gives the same outputs as `Model.predict` on the
    whole sequence (for the step's position). Only causal models stream: forward recurrent
    layers and layers that work on each time step alone.
    """

    def __init__(self, model: Model, batch: int = 1):
        why = _not_streamable(model.graph)
        if why:
            raise BackendError(f"this model cannot stream: {why}; use predict() on whole sequences")
        if batch < 1:
            raise ShapeError(f"a stream needs a batch of at least 1, got {batch}")
        self.model = model
        self.batch = batch
        # in a stream every layer keeps the time axis: one output per step fed
        self._ws = _Workspace(model._kernels, streaming=True)
        self._step_shape = (batch,) + tuple(model.input_shape[1:])
        self._step_dtype = np.int64 if model.input_dtype.kind == "i" else np.float32
        for layer in model.graph.layers:  # states now: initial states for another batch are refused here
            if layer.kind in RECURRENT_KINDS:
                self._ws.state(layer, batch, 2 if layer.kind == "lstm" else 1)
        self._program = _step_program(model, self._ws, batch)

    def step(self, x_t, check_finite: bool = False) -> np.ndarray:
        """Advance every sequence by one step: x_t [batch, features] (or [batch] token ids).
        `check_finite` refuses NaN or infinite inputs before they reach the state."""
        if (type(x_t) is np.ndarray and x_t.shape == self._step_shape and x_t.dtype == self._step_dtype
                and x_t.flags.c_contiguous):
            x = x_t  # already what the kernels take: skip the checks (they cost as much as a small step)
        else:
            x = self.model.prepare_input(x_t, sequence=False)
            if x.shape[0] != self.batch:
                raise ShapeError(f"stream step input has batch {x.shape[0]}, the stream was opened for {self.batch}")
        if check_finite:
            refuse_non_finite(x)
        if self._program is None or (self.batch >= cpu.ROW_SPLIT_MIN and not _program_pays(self.model, self.batch, 1)):
            return self.model._run(x[:, None], self._ws)[:, 0]
        if self._program.splits_columns and self._program.threads_now() > 1:
            with _parallel_guard():
                status = self._program.run(x)
        else:
            status = self._program.run(x)
        if status >= 0:  # a token id out of range: nothing ran
            self.model._check_ids(x)  # names it
            raise InputError("a token id is outside the range of the model's embeddings")
        return self._program.output.copy()

    def step_many(self, x_chunk, check_finite: bool = False) -> np.ndarray:
        """Advance every sequence by several steps at once: x_chunk [batch, steps, features] (or
        [batch, steps] ids) gives each step's output [batch, steps, ...], the same as that many
        `step` calls for one call's cost (on a GPU, one launch per layer instead of one per step)."""
        x = self.model.prepare_input(x_chunk, any_length=True)
        if x.shape[0] != self.batch:
            raise ShapeError(f"stream chunk has batch {x.shape[0]}, the stream was opened for {self.batch}")
        if check_finite:
            refuse_non_finite(x)
        return self.model._run(x, self._ws)

    def reset(self) -> None:
        """Forget the recurrent state: the next step starts a new sequence."""
        self._ws.reset_states()
