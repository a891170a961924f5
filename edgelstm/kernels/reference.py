"""Plain-numpy kernels: short, readable, obviously right, slow.

They are the oracle the fast kernels are tested against, and a backend of their own
(``backend="reference"``) for debugging. Every kernel writes its result into `out` and has the
same signature as its numba twin in `cpu.py`. Activations come as the integer codes of
`activations.CODES`; masks are boolean [batch, time] arrays (all true when there is no mask).
Weight matrices are float32 arrays or `QuantizedMatrix` (int8), which ``a @ w`` handles alike.

The data-movement and mask functions at the end are what the runtime needs beside the maths; the
CPU backend uses them as they are, the CUDA backend has device twins.
"""

import math

import numpy as np

from .activations import CODES

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


_FUNCTIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "tanh": np.tanh,
    "softmax": _softmax,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "swish": lambda x: x * 0.5 * (1.0 + np.tanh(0.5 * x)),
    "softplus": lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_legacy": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "log_softmax": _log_softmax,
}
ACTIVATION_FUNCTIONS = [_FUNCTIONS[name] for name in CODES]
"""Numpy activation functions indexed by activation code."""


def activation(x, act, out):
    """out = act(x) over the last axis (softmax) or elementwise."""
    out[...] = ACTIVATION_FUNCTIONS[act](x)


def dense(x, kernel, bias, act, out):
    """x [N, I] -> out [N, O] = act(x @ kernel + bias)."""
    out[...] = ACTIVATION_FUNCTIONS[act](x @ kernel + bias)


def _emit(out, s, mask_t, new_h, old_h, zero_output_for_mask):
    """Output of step `s`: the new state where the step is unmasked, else the carried or a zero one."""
    out[:, s] = np.where(mask_t, new_h, 0.0 if zero_output_for_mask else old_h)


def _run(step, x, mask, go_backwards, return_sequences, zero_output_for_mask, states, out):
    """Drive a recurrent `step(x_t, *states) -> new states` over time with Keras's masking rule."""
    steps = x.shape[1]
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for s, t in enumerate(order):
        new = step(x[:, t], *states)
        keep = mask[:, t][:, None]
        for state, value in zip(states, new):
            state[...] = np.where(keep, value, state)
        if return_sequences:
            _emit(out, s, keep, new[0], states[0], zero_output_for_mask)
    if not return_sequences:
        out[:, 0] = states[0]


def lstm(x, mask, kernel, recurrent_kernel, bias, peephole, act, rec_act, out_act, clip, input_forget,
         go_backwards, return_sequences, zero_output_for_mask, h, c, out):
    """LSTM over x [B, T, I] from state h, c [B, H] (updated); out [B, T or 1, H]. `peephole` is
    [3H] (i, f, o) or empty; `clip` > 0 bounds gate pre-activations; `input_forget` couples f = 1 - i."""
    f, g, h_act = ACTIVATION_FUNCTIONS[act], ACTIVATION_FUNCTIONS[rec_act], ACTIVATION_FUNCTIONS[out_act]
    p_i, p_f, p_o = np.split(peephole, 3) if peephole.size else (0.0, 0.0, 0.0)

    def bound(z):
        return np.clip(z, -clip, clip) if clip > 0 else z

    def step(x_t, h, c):
        i, fg, cand, o = np.split(x_t @ kernel + h @ recurrent_kernel + bias, 4, axis=1)
        gate_i = g(bound(i + p_i * c))
        gate_f = 1.0 - gate_i if input_forget else g(bound(fg + p_f * c))
        c_new = gate_f * c + gate_i * f(bound(cand))
        return g(bound(o + p_o * c_new)) * h_act(c_new), c_new

    _run(step, x, mask, go_backwards, return_sequences, zero_output_for_mask, (h, c), out)


def gru(x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
        go_backwards, return_sequences, zero_output_for_mask, h, out):
    """GRU over x [B, T, I] from state h [B, H] (updated); out [B, T or 1, H]."""
    f, g = ACTIVATION_FUNCTIONS[act], ACTIVATION_FUNCTIONS[rec_act]
    rb_h = np.split(recurrent_bias, 3)[2]

    def step(x_t, h):  # whole products, then columns: the weights may be a QuantizedMatrix
        xz, xr, xh = np.split(x_t @ kernel + bias, 3, axis=1)
        hz, hr, hh = np.split(h @ recurrent_kernel + recurrent_bias, 3, axis=1)
        z, r = g(xz + hz), g(xr + hr)
        if reset_after:
            cand = f(xh + r * hh)
        else:
            cand = f(xh + np.split((r * h) @ recurrent_kernel, 3, axis=1)[2] + rb_h)
        return (z * h + (1.0 - z) * cand,)

    _run(step, x, mask, go_backwards, return_sequences, zero_output_for_mask, (h,), out)


def rnn(x, mask, kernel, recurrent_kernel, bias, act, go_backwards, return_sequences,
        zero_output_for_mask, h, out):
    """Simple (Elman) RNN over x [B, T, I] from state h [B, H] (updated); out [B, T or 1, H]."""
    f = ACTIVATION_FUNCTIONS[act]
    _run(lambda x_t, h: (f(x_t @ kernel + h @ recurrent_kernel + bias),),
         x, mask, go_backwards, return_sequences, zero_output_for_mask, (h,), out)


def embedding(ids, table, out):
    """ids [B, T] (checked in range) -> out [B, T, D] rows of `table`."""
    out[...] = table[ids]


def masking(x, value, out, mask):
    """mask [B, T] = step has a feature != value; out = x with masked steps zeroed (as Keras does)."""
    mask[...] = np.any(x != value, axis=-1)
    out[...] = x * mask[..., None]


MERGE_ADD, MERGE_MULTIPLY, MERGE_AVERAGE = range(3)


def merge(xs, op, out):
    """Elementwise sum, product or mean of the same-shaped flat arrays in the tuple `xs`."""
    fold = np.prod if op == MERGE_MULTIPLY else np.sum
    out[...] = fold(np.stack(xs), axis=0) / (len(xs) if op == MERGE_AVERAGE else 1)


def conv1d(x, kernel, bias, strides, dilation, pad_left, act, out):
    """1-D convolution of x [B, T, I] with kernel [K, I, O]; zeros padded before and after."""
    size = kernel.shape[0]
    steps = out.shape[1]
    need = (steps - 1) * strides + dilation * (size - 1) + 1
    padded = np.zeros((x.shape[0], max(need, pad_left + x.shape[1]), x.shape[2]), x.dtype)
    padded[:, pad_left:pad_left + x.shape[1]] = x
    acc = np.zeros(out.shape, np.float32) + bias
    for k in range(size):
        start = k * dilation
        acc += padded[:, start:start + (steps - 1) * strides + 1:strides] @ kernel[k]
    out[...] = ACTIVATION_FUNCTIONS[act](acc)


def pool1d(x, is_max, pool_size, strides, pad_left, out):
    """Max or average pooling over time; padded positions never count (TensorFlow's rule)."""
    steps = x.shape[1]
    for s in range(out.shape[1]):
        lo = max(s * strides - pad_left, 0)
        hi = min(s * strides - pad_left + pool_size, steps)
        window = x[:, lo:hi]
        out[:, s] = window.max(axis=1) if is_max else window.mean(axis=1)


def global_pool1d(x, mask, is_max, out):
    """Max over time, or the mean over unmasked steps (Keras's masked average)."""
    if is_max:
        out[...] = x.max(axis=1)
    else:
        weights = mask[:, :, None].astype(np.float32)
        out[...] = (x * weights).sum(axis=1) / weights.sum(axis=1)


def batch_norm(x, scale, offset, out):
    """Inference batch normalisation, folded to x * scale + offset."""
    out[...] = x * scale + offset


def layer_norm(x, gamma, beta, epsilon, out):
    """Normalise each row of x [N, F] to zero mean, unit variance; then scale and shift."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out[...] = (x - mean) / np.sqrt(var + epsilon) * gamma + beta


# Data movement and masks. A backend whose arrays live in host memory (ON_DEVICE False) takes numpy
# arrays as they come; `cuda.py` has the same functions for device arrays.
ON_DEVICE = False
empty = np.empty


def to_host(value):
    """A value as a new numpy array."""
    return np.array(value)


def assign(array, value):
    """array[...] = value (a scalar, or a host array that broadcasts to its shape)."""
    array[...] = value


def reverse(x, out):
    """out = x with the time axis reversed."""
    np.copyto(out, x[:, ::-1])


def repeat(x, out):
    """out [B, n, F] = n copies of x [B, F]."""
    np.copyto(out, x[:, None, :])


def take_step(x, index, out):
    """out [B, F] = x[:, index] (index may count from the end)."""
    np.copyto(out, x[:, index])


def concatenate(xs, out):
    """out = the arrays of `xs` side by side on the last axis."""
    np.concatenate(xs, axis=-1, out=out)


def shift_in(window, x, full):
    """full = window then x on the time axis; window keeps the newest window.shape[1] steps of full."""
    kept = window.shape[1]
    full[:, :kept] = window
    full[:, kept:] = x
    window[...] = full[:, full.shape[1] - kept:]


def nonzero(ids, out):
    """out = ids != 0 (the mask of an embedding with mask_zero)."""
    np.not_equal(ids, 0, out=out)


def combine_masks(masks, all_of, out):
    """out = the AND (`all_of`) or the OR of the boolean arrays in `masks`."""
    (np.logical_and if all_of else np.logical_or).reduce(masks, out=out)
