"""Distillation: train a small student graph to reproduce a teacher graph's outputs.

The teacher runs in our own runtime on the user's unlabelled transfer inputs; its outputs are the
targets. The student keeps the teacher's interface (an Embedding when the teacher reads token
ids, the same output shape and head activation) around a stack of LSTM or GRU layers, and trains
on the CPU with the numba kernels of `kernels.train`: backpropagation through time, Adam,
gradient-norm clipping, Glorot/orthogonal initialisation (LSTM forget bias 1), early stopping on
a validation split. Loss: MSE for linear or tanh heads; for softmax and sigmoid heads the
temperature-scaled KL divergence to the teacher's softened outputs, times T² (Hinton et al.), plus
a small weighted ground-truth term when targets are given. With int8, the last epochs train with
fake-quantized weights (straight-through gradients) before the student is quantized.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from ..errors import InputError, UnsupportedError
from ..ir import Graph, Layer, validate
from ..kernels import train as K
from ..kernels.activations import CODES
from ..kernels.reference import ACTIVATION_FUNCTIONS
from ..runtime import kernel_weights
from .quantize import MIN_ELEMENTS, float16_if_it_fits, quantize, quantize_weight

CELLS = ("lstm", "gru")
HEAD_ACTIVATIONS = ("linear", "tanh", "softmax", "sigmoid")
AUGMENTATIONS = ("noise", "jitter")


@dataclasses.dataclass
class Options:
    """How to build and train the student (the CLI's options, with the same defaults)."""

    hidden: int = 32
    layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = False
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    temperature: float = 2.0
    val_split: float = 0.1
    seed: int = 0
    clip_norm: float = 1.0
    patience: int = 5
    targets_weight: float = 0.1
    augment: str | None = None
    quantize: str | None = None
    qat_epochs: int = 3

    def check(self) -> None:
        """Refuse bad options before any work is done."""
        for name, value, choices in (("cell", self.cell, CELLS), ("quantize", self.quantize, (None, "int8")),
                                     ("augment", self.augment, (None, *AUGMENTATIONS))):
            if value not in choices:
                raise UnsupportedError(f"{name} {value!r} is not supported; supported: "
                                       f"{', '.join(str(c) for c in choices if c is not None)}")
        for name in ("hidden", "layers", "epochs", "batch_size", "patience"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise InputError(f"{name} must be a whole number of at least 1, not {getattr(self, name)!r}")
        limits = {"lr": self.lr > 0, "temperature": self.temperature > 0, "clip_norm": self.clip_norm >= 0,
                  "targets_weight": self.targets_weight >= 0, "val_split": 0 <= self.val_split < 1,
                  "qat_epochs": isinstance(self.qat_epochs, int) and self.qat_epochs >= 0}
        for name, ok in limits.items():
            if not ok:
                raise InputError(f"{name} {getattr(self, name)!r} is out of range")


@dataclasses.dataclass
class Epoch:
    """One epoch's figures, handed to the progress callback."""

    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float  # agreement (classification) or MSE against the teacher (regression)
    metric: str  # "agreement" or "mse"
    seconds: float
    fake_quantized: bool


@dataclasses.dataclass
class Result:
    student: Graph
    history: list[Epoch]
    best_epoch: int
    metric_name: str  # "agreement" or "mse"
    interrupted: bool
    validation: np.ndarray  # the rows of x the student was measured on
    held_out: bool  # False when there was no validation split: those rows are training rows
    validation_targets: np.ndarray  # the teacher's outputs for them
    validation_inputs: np.ndarray


@dataclasses.dataclass
class _Interface:
    """What the student copies from the teacher."""

    token_ids: bool
    embed_dim: int
    mask_zero: bool
    embedding: np.ndarray | None
    features: int
    sequence_output: bool
    outputs: int
    head: str


def teacher_interface(teacher: Graph) -> _Interface:
    """The teacher's input kind, output shape and head activation; refuses what a student cannot copy."""
    validate(teacher)
    out = teacher.layer(teacher.output)
    if len(out.shape) not in (1, 2):
        raise UnsupportedError(f"the teacher's output has shape {out.shape}; a student reproduces [outputs] or "
                               "[time, outputs]")
    head = out.attrs.get("activation", "linear") if out.kind in ("dense", "activation") else "linear"
    if head not in HEAD_ACTIVATIONS:
        raise UnsupportedError(f"the teacher's output activation is {head!r}; a student head supports "
                               f"{', '.join(HEAD_ACTIVATIONS)}")
    masking = next((l for l in teacher.layers if l.kind in ("masking", "length_mask")), None)
    if masking is not None:
        raise UnsupportedError(f"the teacher masks its float inputs (layer '{masking.name}', {masking.kind}); "
                               "students mirror only an Embedding's mask_zero")
    token_ids = teacher.input.attrs["dtype"] == "int32"
    embedding = next((l for l in teacher.layers if l.kind == "embedding"), None)
    if token_ids and embedding is None:
        raise UnsupportedError("the teacher reads token ids but has no Embedding layer to size the student's")
    table = None if embedding is None else kernel_weights(embedding)["embeddings"].astype(np.float32)
    return _Interface(token_ids, 0 if table is None else table.shape[1],
                      bool(embedding and embedding.attrs["mask_zero"]), table,
                      0 if token_ids else teacher.input.shape[-1], len(out.shape) == 2, out.shape[-1], head)


# --- the student's parameters ----------------------------------------------------------------

def _glorot(rng, rows, cols):
    limit = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-limit, limit, (rows, cols)).astype(np.float32)


def _orthogonal(rng, units, gates):
    blocks = []
    for _ in range(gates):
        q, r = np.linalg.qr(rng.normal(0, 1, (units, units)))
        blocks.append(q * np.sign(np.diag(r)))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def init_params(interface: _Interface, options: Options, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Named float32 arrays: ``embeddings``, ``<layer>/<direction>/<weight>``, ``head/kernel``, ``head/bias``."""
    params = {}
    width = interface.features
    if interface.token_ids:
        params["embeddings"] = interface.embedding.copy()
        width = interface.embed_dim
    gates = 4 if options.cell == "lstm" else 3
    units = options.hidden
    for index in range(options.layers):
        for direction in _directions(options):
            prefix = f"rnn{index}/{direction}/"
            params[prefix + "kernel"] = _glorot(rng, width, gates * units)
            params[prefix + "recurrent_kernel"] = _orthogonal(rng, units, gates)
            bias = np.zeros(gates * units, np.float32)
            if options.cell == "lstm":
                bias[units:2 * units] = 1.0  # forget gate
            params[prefix + "bias"] = bias
            if options.cell == "gru":
                params[prefix + "recurrent_bias"] = np.zeros(gates * units, np.float32)
        width = units * len(_directions(options))
    params["head/kernel"] = _glorot(rng, width, interface.outputs)
    params["head/bias"] = np.zeros(interface.outputs, np.float32)
    return params


def _directions(options: Options) -> tuple[str, ...]:
    return ("forward", "backward") if options.bidirectional else ("forward",)


def _weight_names(cell: str) -> tuple[str, ...]:
    return ("kernel", "recurrent_kernel", "bias") + (("recurrent_bias",) if cell == "gru" else ())


def _recurrent_weights(params, prefix, cell):
    return [params[prefix + n] for n in _weight_names(cell)]


# --- forward and backward over a batch ---------------------------------------------------------

def _mask(x: np.ndarray, interface: _Interface) -> np.ndarray:
    if interface.token_ids and interface.mask_zero:
        return x != 0
    return np.ones(x.shape[:2], bool)


def forward(params, x, interface: _Interface, options: Options):
    """The student's pre-activation head output ([B, O] or [B, T, O]) and the tape for `backward`."""
    mask = _mask(x, interface)
    dtype = params["head/kernel"].dtype
    h = K.embedding_forward(x, params["embeddings"]) if interface.token_ids else x.astype(dtype, copy=False)
    tape = []
    run = K.lstm_forward if options.cell == "lstm" else K.gru_forward
    for index in range(options.layers):
        last = index == options.layers - 1
        outs = []
        for direction in _directions(options):
            weights = _recurrent_weights(params, f"rnn{index}/{direction}/", options.cell)
            y, cache = run(h, mask, *weights, direction == "backward")
            tape.append((h, cache))
            outs.append(y[:, -1] if last and not interface.sequence_output else
                        (y[:, ::-1] if direction == "backward" else y))
        h = np.ascontiguousarray(np.concatenate(outs, axis=-1)) if len(outs) > 1 else outs[0]
    flat = h.reshape(-1, h.shape[-1])
    z = K.dense_forward(np.ascontiguousarray(flat), params["head/kernel"], params["head/bias"])
    return z.reshape(h.shape[:-1] + (interface.outputs,)), (x, mask, tape, flat)


def backward(d_z, params, interface: _Interface, options: Options, tape) -> dict[str, np.ndarray]:
    """Gradients of every parameter, given the loss's gradient for the head's pre-activation output."""
    x, mask, layer_tape, flat = tape
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    d_h = K.dense_backward(np.ascontiguousarray(d_z.reshape(-1, interface.outputs)), flat, params["head/kernel"],
                           (grads["head/kernel"], grads["head/bias"]))
    batch, steps = mask.shape
    units = options.hidden
    run = K.lstm_backward if options.cell == "lstm" else K.gru_backward
    directions = _directions(options)
    d_h = d_h.reshape((batch, steps, -1) if interface.sequence_output else (batch, -1))
    for index in reversed(range(options.layers)):
        sequence = interface.sequence_output or index < options.layers - 1
        d_input = None
        for k, direction in enumerate(directions):
            h_in, cache = layer_tape[index * len(directions) + k]
            names = _weight_names(options.cell)
            prefix = f"rnn{index}/{direction}/"
            part = d_h[..., k * units:(k + 1) * units]
            if sequence:
                d_outputs = np.ascontiguousarray(part[:, ::-1] if direction == "backward" else part)
                d_last = np.zeros((batch, units), part.dtype)
            else:
                d_outputs = np.zeros((batch, steps, units), part.dtype)
                d_last = np.ascontiguousarray(part)
            d_x = run(d_outputs, d_last, h_in, mask, params[prefix + "kernel"], params[prefix + "recurrent_kernel"],
                      direction == "backward", cache, tuple(grads[prefix + n] for n in names))
            d_input = d_x if d_input is None else d_input + d_x
        d_h = d_input
    if interface.token_ids:
        K.embedding_backward(d_h, x, grads["embeddings"])
    return grads


# --- losses -----------------------------------------------------------------------------------

_softmax = ACTIVATION_FUNCTIONS[CODES["softmax"]]
_sigmoid = ACTIVATION_FUNCTIONS[CODES["sigmoid"]]


def _apply_head(z, head):
    return ACTIVATION_FUNCTIONS[CODES[head]](z)


def soft_targets(teacher_out: np.ndarray, head: str, temperature: float) -> np.ndarray:
    """The teacher's outputs softened at `temperature` (softmax, sigmoid heads); others unchanged."""
    if head == "softmax":
        return _softmax(np.log(np.clip(teacher_out, 1e-12, None)) / temperature)
    if head == "sigmoid":
        p = np.clip(teacher_out, 1e-7, 1 - 1e-7)
        return _sigmoid(np.log(p / (1 - p)) / temperature)
    return teacher_out


def loss_and_gradient(z, soft, truth, head, options: Options) -> tuple[float, np.ndarray]:
    """Loss on a batch and its gradient for the head's pre-activation output z."""
    rows = z.shape[0] * (z.shape[1] if z.ndim == 3 else 1)
    t = options.temperature
    if head in ("softmax", "sigmoid"):
        s = _apply_head(z / t, head)
        eps = 1e-12
        if head == "softmax":
            loss = np.sum(soft * (np.log(soft + eps) - np.log(s + eps)))
        else:
            loss = np.sum(soft * (np.log(soft + eps) - np.log(s + eps))
                          + (1 - soft) * (np.log(1 - soft + eps) - np.log(1 - s + eps)))
        loss, grad = t * t * loss / rows, t * (s - soft) / rows
        if truth is not None:
            p = _apply_head(z, head)
            w = options.targets_weight
            if head == "softmax":
                labels = truth.astype(int) if truth.ndim == z.ndim - 1 else truth.argmax(axis=-1)
                one_hot = np.eye(z.shape[-1], dtype=z.dtype)[labels]
            else:
                one_hot = truth.reshape(z.shape).astype(z.dtype)
            cross_entropy = one_hot * np.log(p + eps)
            if head == "sigmoid":
                cross_entropy = cross_entropy + (1 - one_hot) * np.log(1 - p + eps)
            loss -= w * float(np.sum(cross_entropy) / rows)
            grad = grad + w * (p - one_hot) / rows
        return float(loss), grad.astype(z.dtype)
    y = _apply_head(z, head)
    count = y.size
    diff = y - soft
    loss, d_y = float(np.sum(diff * diff) / count), 2 * diff / count
    if truth is not None:
        w = options.targets_weight
        miss = y - truth.reshape(y.shape)
        loss += w * float(np.sum(miss * miss) / count)
        d_y = d_y + w * 2 * miss / count
    if head == "tanh":
        d_y = d_y * (1 - y * y)
    return loss, d_y.astype(z.dtype)


def agreement_or_mse(student_out: np.ndarray, teacher_out: np.ndarray, head: str) -> float:
    """Classification heads: the share of rows where student and teacher pick the same class;
    others: the MSE between them."""
    if head == "softmax":
        return float(np.mean(student_out.argmax(axis=-1) == teacher_out.argmax(axis=-1)))
    if head == "sigmoid":
        return float(np.mean((student_out > 0.5) == (teacher_out > 0.5)))
    return float(np.mean((student_out - teacher_out) ** 2))


# --- training ---------------------------------------------------------------------------------

class Adam:
    """Adam (Kingma & Ba) with Keras's defaults, over a dict of arrays, updated in place."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, beta1=0.9, beta2=0.999, eps=1e-7):
        self.lr, self.beta1, self.beta2, self.eps, self.steps = lr, beta1, beta2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def update(self, params, grads) -> None:
        self.steps += 1
        scale = self.lr * np.sqrt(1 - self.beta2 ** self.steps) / (1 - self.beta1 ** self.steps)
        for k, g in grads.items():
            self.m[k] += (1 - self.beta1) * (g - self.m[k])
            self.v[k] += (1 - self.beta2) * (g * g - self.v[k])
            params[k] -= (scale * self.m[k] / (np.sqrt(self.v[k]) + self.eps)).astype(params[k].dtype)


def clip_by_global_norm(grads: dict[str, np.ndarray], limit: float) -> None:
    norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values())))
    if limit > 0 and norm > limit:
        for g in grads.values():
            g *= limit / norm


def fake_quantized(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters as the int8 student will hold them (`quantize`: matrices of `MIN_ELEMENTS`
    or more rounded to int8 per column, the rest to float16)."""
    out = {}
    for name, w in params.items():
        if w.ndim == 2 and w.size >= MIN_ELEMENTS:
            values, scale = quantize_weight(w, "embedding" if name == "embeddings" else "dense")
            out[name] = (values * scale.astype(np.float32)).astype(np.float32)
        else:
            out[name] = float16_if_it_fits(w).astype(np.float32)
    return out


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise InputError(f"the {what} data holds NaN or infinite values; clean it before distilling")
    return a


def _check_targets(truth, teacher_out: np.ndarray, head: str) -> np.ndarray:
    """Ground truth shaped like the teacher's outputs: class ids (or one-hot rows) for a softmax
    head, values in [0, 1] for sigmoid, anything finite otherwise."""
    truth = np.asarray(truth)
    if len(truth) != len(teacher_out):
        raise InputError(f"the targets hold {len(truth)} rows for {len(teacher_out)} transfer sequences")
    per_row = teacher_out.shape[:-1]
    if head == "softmax" and truth.shape != teacher_out.shape:
        if truth.size != int(np.prod(per_row)) or truth.dtype.kind not in "iuf":
            raise InputError(f"the targets have shape {truth.shape}; a softmax teacher of output shape "
                             f"{teacher_out.shape} takes class ids shaped {per_row} (or one-hot {teacher_out.shape})")
        ids = truth.reshape(per_row)
        if not (np.all(ids == np.round(ids)) and ids.min() >= 0 and ids.max() < teacher_out.shape[-1]):
            raise InputError(f"class ids must be whole numbers from 0 to {teacher_out.shape[-1] - 1}")
        return ids.astype(np.int64)
    if truth.size != teacher_out.size or truth.dtype.kind not in "iufb":
        raise InputError(f"the targets have shape {truth.shape}; the teacher's outputs have shape {teacher_out.shape}")
    truth = _finite(truth.reshape(teacher_out.shape).astype(np.float32), "targets")
    if head == "sigmoid" and (truth.min() < 0 or truth.max() > 1):
        raise InputError("targets for a sigmoid teacher must lie in [0, 1]")
    return truth


def augment(x: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """A perturbed copy of float inputs: `noise` adds Gaussian noise of 5% of each feature's
    standard deviation; `jitter` shifts each sequence in time by up to two steps (edges repeated)."""
    if x.dtype.kind != "f":
        raise InputError(f"--augment {how} needs float inputs; token ids cannot be perturbed")
    if how == "noise":
        std = x.reshape(-1, x.shape[-1]).std(axis=0)
        return (x + rng.normal(0, 1, x.shape) * (0.05 * std)).astype(x.dtype)
    shifts = rng.choice(np.array([-2, -1, 1, 2]), x.shape[0])
    steps = np.arange(x.shape[1])
    index = np.clip(steps[None, :] - shifts[:, None], 0, x.shape[1] - 1)
    return np.take_along_axis(x, index[:, :, None], axis=1)


def train_student(teacher: Graph, x, options: Options, truth=None,
                  progress: Callable[[Epoch], None] | None = None) -> Result:
    """Train a student on the teacher's outputs for the transfer inputs x; returns the best
    student (lowest validation loss) as a graph. Augmented copies (`options.augment`) are made of
    the training rows only. Ctrl-C stops training and keeps the best student so far."""
    from ..runtime import Model

    options.check()
    interface = teacher_interface(teacher)
    teacher_model = Model(teacher)
    x = teacher_model.prepare_input(x)
    if not interface.token_ids:
        x = _finite(x.astype(np.float32), "transfer")
    teacher_out = _finite(teacher_model.predict(x).astype(np.float32), "teacher's output")
    if interface.sequence_output and teacher_out.shape[1] != x.shape[1]:
        raise UnsupportedError(f"the teacher turns {x.shape[1]} input steps into {teacher_out.shape[1]} output "
                               "steps; a student's per-step outputs follow its input steps")
    truth = None if truth is None else _check_targets(truth, teacher_out, interface.head)
    rng = np.random.default_rng(options.seed)
    params = init_params(interface, options, rng)
    order = rng.permutation(len(x))
    n_val = 0 if options.val_split == 0 else max(1, int(round(len(x) * options.val_split)))
    if len(x) - n_val < 1:
        raise InputError(f"{len(x)} transfer sequences leave none to train on with a validation split of "
                         f"{options.val_split}")
    val, fit = order[:n_val], order[n_val:]
    if options.augment:
        if truth is not None and options.augment == "jitter":
            raise InputError("--augment jitter shifts sequences in time, which their --targets do not follow; "
                             "use --augment noise with targets")
        extra = augment(x[fit], options.augment, rng)
        x = np.concatenate([x, extra])
        teacher_out = np.concatenate([teacher_out, teacher_model.predict(extra).astype(np.float32)])
        truth = None if truth is None else np.concatenate([truth, truth[fit]])
        fit = np.concatenate([fit, np.arange(len(x) - len(extra), len(x))])
    soft = soft_targets(teacher_out, interface.head, options.temperature).astype(np.float32)
    optimizer = Adam(params, options.lr)
    metric_name = "agreement" if interface.head in ("softmax", "sigmoid") else "mse"
    history, best, best_epoch, interrupted = [], {k: v.copy() for k, v in params.items()}, 0, False
    qat = min(options.qat_epochs, options.epochs) if options.quantize == "int8" else 0
    phases = [(options.epochs - qat, False), (qat, True)]  # float epochs, then fake-quantized ones
    try:
        for count, fake in phases:
            best_loss, since_best = np.inf, 0
            if fake and count:  # the rounded weights must beat the best float student, rounded
                best_loss = _evaluate(fake_quantized(best), x, soft, teacher_out, truth, val if n_val else fit,
                                      interface, options)[0]
            for _ in range(count):
                start = time.perf_counter()
                shuffled = fit[rng.permutation(len(fit))]
                total = 0.0
                for first in range(0, len(shuffled), options.batch_size):
                    rows = np.sort(shuffled[first:first + options.batch_size])
                    used = fake_quantized(params) if fake else params
                    z, tape = forward(used, x[rows], interface, options)
                    loss, d_z = loss_and_gradient(z, soft[rows], None if truth is None else truth[rows],
                                                  interface.head, options)
                    grads = backward(d_z, used, interface, options, tape)  # straight through the rounding
                    clip_by_global_norm(grads, options.clip_norm)
                    optimizer.update(params, grads)
                    total += loss * len(rows)
                val_loss, val_metric = _evaluate(fake_quantized(params) if fake else params, x, soft, teacher_out,
                                                 truth, val if n_val else fit, interface, options)
                history.append(Epoch(len(history) + 1, total / len(fit), val_loss, val_metric, metric_name,
                                     time.perf_counter() - start, fake))
                if not np.isfinite(val_loss):
                    raise InputError(f"training diverged at epoch {len(history)} (the loss is not finite); "
                                     "try a smaller learning rate")
                if val_loss < best_loss:
                    best, best_loss, best_epoch, since_best = {k: v.copy() for k, v in params.items()}, val_loss, \
                        len(history), 0
                else:
                    since_best += 1
                if progress:
                    progress(history[-1])
                if since_best >= options.patience:
                    break
            params = {k: v.copy() for k, v in best.items()}  # the next phase starts from the best student
    except KeyboardInterrupt:
        interrupted = True
    student = build_student(teacher, best, interface, options)
    return Result(student, history, best_epoch, metric_name, interrupted, val if n_val else fit, n_val > 0,
                  teacher_out[val if n_val else fit], x[val if n_val else fit])


def _evaluate(params, x, soft, teacher_out, truth, rows, interface, options) -> tuple[float, float]:
    losses, outputs = [], []
    for first in range(0, len(rows), 256):
        part = rows[first:first + 256]
        z, _ = forward(params, x[part], interface, options)
        loss, _ = loss_and_gradient(z, soft[part], None if truth is None else truth[part], interface.head, options)
        losses.append(loss * len(part))
        outputs.append(_apply_head(z, interface.head))
    return float(np.sum(losses) / len(rows)), agreement_or_mse(np.concatenate(outputs), teacher_out[rows],
                                                                 interface.head)


# --- the student as a graph --------------------------------------------------------------------

def build_student(teacher: Graph, params: dict[str, np.ndarray], interface: _Interface, options: Options) -> Graph:
    """The trained student in the IR (float32), its interface copied from the teacher."""
    source = teacher.input
    layers = [Layer("input", "input", [], {"shape": list(source.attrs["shape"]), "dtype": source.attrs["dtype"]})]
    previous = "input"
    if interface.token_ids:
        layers.append(Layer("embedding", "embedding", [previous], {"mask_zero": interface.mask_zero},
                            {"embeddings": params["embeddings"]}))
        previous = "embedding"
    names = _weight_names(options.cell)
    for index in range(options.layers):
        sequences = index < options.layers - 1 or interface.sequence_output
        merged = []
        for direction in _directions(options):
            name = f"{options.cell}{index}" + (f"/{direction}" if options.bidirectional else "")
            attrs = {"units": options.hidden, "return_sequences": sequences, "go_backwards": direction == "backward",
                     "stateful": False, "zero_output_for_mask": False, "activation": "tanh",
                     "recurrent_activation": "sigmoid"}
            if options.cell == "lstm":
                attrs.update(output_activation="tanh", clip=0.0, input_forget=False)
            else:
                attrs["reset_after"] = True
            prefix = f"rnn{index}/{direction}/"
            layers.append(Layer(name, options.cell, [previous], attrs, {n: params[prefix + n] for n in names}))
            merged.append(name)
            if direction == "backward" and sequences:
                layers.append(Layer(f"{name}/realign", "reverse", [name]))
                merged[-1] = layers[-1].name
        if len(merged) > 1:
            layers.append(Layer(f"{options.cell}{index}", "merge", merged, {"op": "concatenate", "mask_combine": "any"}))
        previous = layers[-1].name
    layers.append(Layer("head", "dense", [previous], {"activation": interface.head},
                        {"kernel": params["head/kernel"], "bias": params["head/bias"]}))
    graph = Graph(layers, "head", {"distillation": dataclasses.asdict(options)})
    validate(graph)
    if options.quantize:
        graph = quantize(graph, options.quantize)
    return graph


# --- the whole pass ---------------------------------------------------------------------------

@dataclasses.dataclass
class Report:
    """Teacher against student on the validation split (the CLI prints it; the file keeps it)."""

    metric: str  # "agreement" (share of rows with the teacher's class) or "mse" (against the teacher)
    value: float
    teacher_params: int
    student_params: int
    teacher_bytes: int
    student_bytes: int
    teacher_latency_s: float  # one sequence, our runtime, median
    student_latency_s: float
    epochs: int
    best_epoch: int
    seconds_per_epoch: float
    validation_rows: int
    held_out: bool  # False: no validation split, the figure is on training rows
    interrupted: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def distill(teacher: Graph, x, options: Options, truth=None,
            progress: Callable[[Epoch], None] | None = None) -> tuple[Graph, Report]:
    """Train a student of the teacher on the transfer inputs x (see `train_student`) and measure
    both on the validation rows; the student graph's metadata keeps the report."""
    from .. import artifact
    from ..benchmark import time_calls
    from ..runtime import Model

    result = train_student(teacher, x, options, truth, progress)
    teacher_model, student = Model(teacher), Model(result.student)
    inputs = result.validation_inputs
    value = agreement_or_mse(student.predict(inputs), result.validation_targets, teacher_interface(teacher).head)
    one = inputs[:1]
    latency = [float(np.median(time_calls(lambda m=m: m.predict(one), 0.2))) for m in (teacher_model, student)]
    seconds = [e.seconds for e in result.history[1:] or result.history]  # the first epoch also compiles
    report = Report(result.metric_name, value, sum(l.param_count() for l in teacher.layers),
                    sum(l.param_count() for l in result.student.layers), len(artifact.to_bytes(teacher)),
                    len(artifact.to_bytes(result.student)), latency[0], latency[1], len(result.history),
                    result.best_epoch, float(np.mean(seconds)) if seconds else 0.0, len(inputs), result.held_out,
                    result.interrupted)
    result.student.metadata["distillation"]["report"] = report.as_dict()
    return result.student, report
