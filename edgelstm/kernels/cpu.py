"""Numba CPU kernels: the fast twins of `reference.py`, same names, same signatures.

Every kernel runs its batch rows in parallel (`prange`), writes into the preallocated `out`
and allocates nothing inside its time loop. `cache=True` keeps compiled code on disk so a
second process starts fast; ``error_model="numpy"`` drops the division checks that block
vectorisation.
"""

import math

import numpy as np
from numba import njit, prange

from . import activations as A
from .reference import MERGE_AVERAGE, MERGE_MULTIPLY

__all__ = ["activation", "dense", "lstm", "gru", "rnn", "embedding", "masking", "merge", "conv1d", "pool1d",
           "global_pool1d", "batch_norm", "layer_norm"]

_jit = dict(cache=True, error_model="numpy")


@njit(**_jit)
def _activate_row(row, act):
    if act == A.SOFTMAX or act == A.LOG_SOFTMAX:
        top = row[0]
        for j in range(1, row.shape[0]):
            top = max(top, row[j])
        total = 0.0
        for j in range(row.shape[0]):
            total += math.exp(row[j] - top)
        for j in range(row.shape[0]):
            row[j] = math.exp(row[j] - top) / total if act == A.SOFTMAX else row[j] - top - math.log(total)
    elif act != A.LINEAR:
        for j in range(row.shape[0]):
            row[j] = A.apply(act, row[j])


@njit(parallel=True, **_jit)
def activation(x, act, out):
    for n in prange(x.shape[0]):
        out[n, :] = x[n, :]
        _activate_row(out[n], act)


@njit(parallel=True, **_jit)
def dense(x, kernel, bias, act, out):
    for n in prange(x.shape[0]):
        row = out[n]
        row[:] = bias
        for k in range(x.shape[1]):
            v = x[n, k]
            for j in range(row.shape[0]):
                row[j] += v * kernel[k, j]
        _activate_row(row, act)


@njit(**_jit)
def _project(z, bias, x_t, kernel, h, recurrent_kernel):
    """z = bias + x_t @ kernel + h @ recurrent_kernel, as row updates that vectorise over z."""
    z[:] = bias
    for k in range(x_t.shape[0]):
        v = x_t[k]
        for j in range(z.shape[0]):
            z[j] += v * kernel[k, j]
    for k in range(h.shape[0]):
        v = h[k]
        for j in range(z.shape[0]):
            z[j] += v * recurrent_kernel[k, j]


_LSTM, _GRU, _RNN = range(3)
_NONE = np.zeros((1, 0), np.float32)  # the cell state of cells that have none: c[0] is an empty row


@njit(**_jit)
def _clip(v, clip):
    return min(max(v, -clip), clip) if clip > 0.0 else v


@njit(**_jit)
def _cell_step(cell, x_t, h, c, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
               peephole, out_act, clip, input_forget, xz, hz, new_h):
    """One step of an LSTM, GRU or simple RNN cell for one sequence: new_h from x_t and h (c updated)."""
    units = h.shape[0]
    empty = x_t[:0]  # _project with an empty vector skips that product
    if cell == _GRU:
        _project(xz, bias, x_t, kernel, empty, recurrent_kernel)
        _project(hz, recurrent_bias, empty, kernel, h, recurrent_kernel)
        if not reset_after:  # the candidate's recurrent product must see r * h: redo that block
            for j in range(units):
                new_h[j] = A.apply(rec_act, xz[units + j] + hz[units + j]) * h[j]
            hz[2 * units:] = recurrent_bias[2 * units:]
            for k in range(units):
                v = new_h[k]
                for j in range(units):
                    hz[2 * units + j] += v * recurrent_kernel[k, 2 * units + j]
        for j in range(units):
            update = A.apply(rec_act, xz[j] + hz[j])
            if reset_after:
                reset = A.apply(rec_act, xz[units + j] + hz[units + j])
                cand = A.apply(act, xz[2 * units + j] + reset * hz[2 * units + j])
            else:
                cand = A.apply(act, xz[2 * units + j] + hz[2 * units + j])
            new_h[j] = update * h[j] + (1.0 - update) * cand
        return
    _project(xz, bias, x_t, kernel, h, recurrent_kernel)
    if cell == _RNN:
        for j in range(units):
            new_h[j] = A.apply(act, xz[j])
        return
    peep = peephole.shape[0] > 0
    if not peep and clip <= 0.0 and not input_forget:  # the plain (Keras) LSTM: no extra work per gate
        for j in range(units):
            cell_j = (A.apply(rec_act, xz[units + j]) * c[j]
                      + A.apply(rec_act, xz[j]) * A.apply(act, xz[2 * units + j]))
            c[j] = cell_j
            new_h[j] = A.apply(rec_act, xz[3 * units + j]) * A.apply(out_act, cell_j)
        return
    for j in range(units):
        zi, zf, zo = xz[j], xz[units + j], xz[3 * units + j]
        if peep:
            zi += peephole[j] * c[j]
            zf += peephole[units + j] * c[j]
        gate_i = A.apply(rec_act, _clip(zi, clip))
        gate_f = 1.0 - gate_i if input_forget else A.apply(rec_act, _clip(zf, clip))
        cell_j = gate_f * c[j] + gate_i * A.apply(act, _clip(xz[2 * units + j], clip))
        c[j] = cell_j
        if peep:
            zo += peephole[2 * units + j] * cell_j
        new_h[j] = A.apply(rec_act, _clip(zo, clip)) * A.apply(out_act, cell_j)


@njit(parallel=True, **_jit)
def _sequence(cell, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
              peephole, out_act, clip, input_forget, go_backwards, return_sequences, zero_output_for_mask, h, c,
              out):
    """Run a cell over x [B, T, I] with Keras's masking rule; one sequence per parallel task."""
    batch, steps = x.shape[0], x.shape[1]
    units = h.shape[1]
    width = bias.shape[0]
    for b in prange(batch):
        xz = np.empty(width, np.float32)
        hz = np.empty(width, np.float32)
        new_h = np.empty(units, np.float32)
        c_b = c[b] if cell == _LSTM else c[0]
        for s in range(steps):
            t = steps - 1 - s if go_backwards else s
            if not mask[b, t]:
                if return_sequences:
                    for j in range(units):
                        out[b, s, j] = 0.0 if zero_output_for_mask else h[b, j]
                continue
            _cell_step(cell, x[b, t], h[b], c_b, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act,
                       reset_after, peephole, out_act, clip, input_forget, xz, hz, new_h)
            h[b, :] = new_h
            if return_sequences:
                out[b, s, :] = new_h
        if not return_sequences:
            out[b, 0, :] = h[b]


# The three public kernels share `_sequence`; arguments a cell does not use (an LSTM's recurrent
# bias, a GRU's cell state) are filled with arrays of the right type that are never read.


def lstm(x, mask, kernel, recurrent_kernel, bias, peephole, act, rec_act, out_act, clip, input_forget,
         go_backwards, return_sequences, zero_output_for_mask, h, c, out):
    _sequence(_LSTM, x, mask, kernel, recurrent_kernel, bias, bias, act, rec_act, False, peephole, out_act,
              clip, input_forget, go_backwards, return_sequences, zero_output_for_mask, h, c, out)


def gru(x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
        go_backwards, return_sequences, zero_output_for_mask, h, out):
    _sequence(_GRU, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
              bias[:0], act, 0.0, False, go_backwards, return_sequences, zero_output_for_mask, h, _NONE, out)


def rnn(x, mask, kernel, recurrent_kernel, bias, act, go_backwards, return_sequences,
        zero_output_for_mask, h, out):
    _sequence(_RNN, x, mask, kernel, recurrent_kernel, bias, bias, act, act, False, bias[:0], act, 0.0, False,
              go_backwards, return_sequences, zero_output_for_mask, h, _NONE, out)


@njit(parallel=True, **_jit)
def embedding(ids, table, out):
    for b in prange(ids.shape[0]):
        for t in range(ids.shape[1]):
            out[b, t, :] = table[ids[b, t]]


@njit(parallel=True, **_jit)
def masking(x, value, out, mask):
    for b in prange(x.shape[0]):
        for t in range(x.shape[1]):
            keep = False
            for j in range(x.shape[2]):
                keep = keep or x[b, t, j] != value
            mask[b, t] = keep
            for j in range(x.shape[2]):
                out[b, t, j] = x[b, t, j] if keep else 0.0


@njit(**_jit)
def merge(xs, op, out):
    out[:] = xs[0]
    for x in xs[1:]:
        for i in range(out.shape[0]):
            out[i] = out[i] * x[i] if op == MERGE_MULTIPLY else out[i] + x[i]
    if op == MERGE_AVERAGE:
        out /= len(xs)


@njit(parallel=True, **_jit)
def conv1d(x, kernel, bias, strides, dilation, pad_left, act, out):
    steps = x.shape[1]
    for b in prange(x.shape[0]):
        for s in range(out.shape[1]):
            row = out[b, s]
            row[:] = bias
            for k in range(kernel.shape[0]):
                t = s * strides + k * dilation - pad_left
                if t < 0 or t >= steps:
                    continue
                for i in range(x.shape[2]):
                    v = x[b, t, i]
                    for j in range(row.shape[0]):
                        row[j] += v * kernel[k, i, j]
            _activate_row(row, act)


@njit(parallel=True, **_jit)
def pool1d(x, is_max, pool_size, strides, pad_left, out):
    steps = x.shape[1]
    for b in prange(x.shape[0]):
        for s in range(out.shape[1]):
            lo = max(s * strides - pad_left, 0)
            hi = min(s * strides - pad_left + pool_size, steps)
            for j in range(x.shape[2]):
                acc = x[b, lo, j]
                for t in range(lo + 1, hi):
                    acc = max(acc, x[b, t, j]) if is_max else acc + x[b, t, j]
                out[b, s, j] = acc if is_max else acc / (hi - lo)


@njit(parallel=True, **_jit)
def global_pool1d(x, mask, is_max, out):
    for b in prange(x.shape[0]):
        for j in range(x.shape[2]):
            if is_max:
                acc = x[b, 0, j]
                for t in range(1, x.shape[1]):
                    acc = max(acc, x[b, t, j])
                out[b, j] = acc
            else:
                acc = 0.0
                count = 0
                for t in range(x.shape[1]):
                    if mask[b, t]:
                        acc += x[b, t, j]
                        count += 1
                out[b, j] = acc / count


@njit(parallel=True, **_jit)
def batch_norm(x, scale, offset, out):
    for n in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[n, j] = x[n, j] * scale[j] + offset[j]


@njit(parallel=True, **_jit)
def layer_norm(x, gamma, beta, epsilon, out):
    width = x.shape[1]
    for n in prange(x.shape[0]):
        mean = 0.0
        for j in range(width):
            mean += x[n, j]
        mean /= width
        var = 0.0
        for j in range(width):
            var += (x[n, j] - mean) ** 2
        inv = 1.0 / math.sqrt(var / width + epsilon)
        for j in range(width):
            out[n, j] = (x[n, j] - mean) * inv * gamma[j] + beta[j]
