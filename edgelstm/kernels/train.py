"""Numba training kernels for distillation students: forward passes that keep what the backward
pass needs, and backpropagation through time.

Semantics are the inference kernels' (`reference.py`) for the layers a student uses: LSTM (gates
i, f, g, o; sigmoid and tanh), GRU with ``reset_after`` (gates z, r, h), Dense on the last axis,
Embedding. A step whose mask is False carries state and output forward. Recurrent layers run in
processing order (reversed for ``go_backwards``) and return their outputs in that order, as Keras
does. Kernels are generic over float32 and float64 (the gradient tests use float64) and run on
one thread, so a seed gives the same student every time.
"""

import numpy as np
from numba import njit

_jit = dict(cache=True, error_model="numpy", fastmath={"contract"})


@njit(**_jit)
def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


@njit(**_jit)
def add_matmul(out, a, w):
    """out[B, N] += a[B, K] @ w[K, N]."""
    for b in range(a.shape[0]):
        row = out[b]
        for k in range(a.shape[1]):
            v = a[b, k]
            wk = w[k]
            for j in range(row.shape[0]):
                row[j] += v * wk[j]


@njit(**_jit)
def add_matmul_transposed(out, dz, w):
    """out[B, K] += dz[B, N] @ w[K, N].T (the gradient flowing back through a product)."""
    for b in range(dz.shape[0]):
        d = dz[b]
        for k in range(w.shape[0]):
            wk = w[k]
            total = 0.0
            for j in range(d.shape[0]):
                total += d[j] * wk[j]
            out[b, k] += total


@njit(**_jit)
def add_outer(dw, a, dz):
    """dw[K, N] += a[B, K].T @ dz[B, N] (a weight's gradient)."""
    for b in range(a.shape[0]):
        d = dz[b]
        for k in range(a.shape[1]):
            v = a[b, k]
            if v != 0.0:
                row = dw[k]
                for j in range(d.shape[0]):
                    row[j] += v * d[j]


@njit(**_jit)
def _outputs(h):
    """The states after each step, h[1:] [T, B, H], as outputs [B, T, H]."""
    outputs = np.empty((h.shape[1], h.shape[0] - 1, h.shape[2]), h.dtype)
    for s in range(h.shape[0] - 1):
        outputs[:, s] = h[s + 1]
    return outputs


@njit(**_jit)
def lstm_forward(x, mask, kernel, recurrent_kernel, bias, go_backwards):
    """x [B, T, I] -> (outputs [B, T, H] in processing order, cache). States start at zero."""
    batch, steps = x.shape[0], x.shape[1]
    units = recurrent_kernel.shape[0]
    h = np.zeros((steps + 1, batch, units), x.dtype)
    c = np.zeros((steps + 1, batch, units), x.dtype)
    gates = np.zeros((steps, batch, 4 * units), x.dtype)
    z = np.empty((batch, 4 * units), x.dtype)
    for s in range(steps):
        t = steps - 1 - s if go_backwards else s
        for b in range(batch):
            z[b] = bias
        add_matmul(z, x[:, t], kernel)
        add_matmul(z, h[s], recurrent_kernel)
        for b in range(batch):
            if not mask[b, t]:
                h[s + 1, b] = h[s, b]
                c[s + 1, b] = c[s, b]
                continue
            g = gates[s, b]
            for j in range(units):
                i_, f_ = _sigmoid(z[b, j]), _sigmoid(z[b, units + j])
                g_, o_ = np.tanh(z[b, 2 * units + j]), _sigmoid(z[b, 3 * units + j])
                g[j], g[units + j], g[2 * units + j], g[3 * units + j] = i_, f_, g_, o_
                cell = f_ * c[s, b, j] + i_ * g_
                c[s + 1, b, j] = cell
                h[s + 1, b, j] = o_ * np.tanh(cell)
    return _outputs(h), (h, c, gates)


@njit(**_jit)
def lstm_backward(d_outputs, d_last, x, mask, kernel, recurrent_kernel, go_backwards, cache, grads):
    """Gradients of an `lstm_forward`: d_outputs [B, T, H] (processing order) and d_last [B, H]
    (the final state) in; adds to grads (kernel, recurrent_kernel, bias) and returns d_x."""
    h, c, gates = cache
    d_kernel, d_recurrent, d_bias = grads
    batch, steps = x.shape[0], x.shape[1]
    units = recurrent_kernel.shape[0]
    d_x = np.zeros_like(x)
    dh = d_last.copy()
    dc = np.zeros((batch, units), x.dtype)
    dz = np.zeros((batch, 4 * units), x.dtype)
    dh_prev = np.empty((batch, units), x.dtype)
    for s in range(steps - 1, -1, -1):
        t = steps - 1 - s if go_backwards else s
        dh += d_outputs[:, s]
        for b in range(batch):
            if not mask[b, t]:
                dz[b] = 0.0
                continue
            g = gates[s, b]
            for j in range(units):
                i_, f_, g_, o_ = g[j], g[units + j], g[2 * units + j], g[3 * units + j]
                tc = np.tanh(c[s + 1, b, j])
                dcell = dc[b, j] + dh[b, j] * o_ * (1.0 - tc * tc)
                dz[b, j] = dcell * g_ * i_ * (1.0 - i_)
                dz[b, units + j] = dcell * c[s, b, j] * f_ * (1.0 - f_)
                dz[b, 2 * units + j] = dcell * i_ * (1.0 - g_ * g_)
                dz[b, 3 * units + j] = dh[b, j] * tc * o_ * (1.0 - o_)
                dc[b, j] = dcell * f_
        add_outer(d_kernel, x[:, t], dz)
        add_outer(d_recurrent, h[s], dz)
        for b in range(batch):
            d_bias += dz[b]
        add_matmul_transposed(d_x[:, t], dz, kernel)
        for b in range(batch):
            if mask[b, t]:
                dh_prev[b] = 0.0
            else:
                dh_prev[b] = dh[b]  # a masked step hands its state (and its gradient) straight through
        add_matmul_transposed(dh_prev, dz, recurrent_kernel)
        dh[:] = dh_prev
    return d_x


@njit(**_jit)
def gru_forward(x, mask, kernel, recurrent_kernel, bias, recurrent_bias, go_backwards):
    """GRU with reset_after: x [B, T, I] -> (outputs [B, T, H] in processing order, cache)."""
    batch, steps = x.shape[0], x.shape[1]
    units = recurrent_kernel.shape[0]
    h = np.zeros((steps + 1, batch, units), x.dtype)
    gates = np.zeros((steps, batch, 3 * units), x.dtype)  # z, r, n
    hz_candidate = np.zeros((steps, batch, units), x.dtype)  # h U_h + rb_h, before the reset gate
    xz = np.empty((batch, 3 * units), x.dtype)
    hz = np.empty((batch, 3 * units), x.dtype)
    for s in range(steps):
        t = steps - 1 - s if go_backwards else s
        for b in range(batch):
            xz[b] = bias
            hz[b] = recurrent_bias
        add_matmul(xz, x[:, t], kernel)
        add_matmul(hz, h[s], recurrent_kernel)
        for b in range(batch):
            if not mask[b, t]:
                h[s + 1, b] = h[s, b]
                continue
            g = gates[s, b]
            for j in range(units):
                z_ = _sigmoid(xz[b, j] + hz[b, j])
                r_ = _sigmoid(xz[b, units + j] + hz[b, units + j])
                n_ = np.tanh(xz[b, 2 * units + j] + r_ * hz[b, 2 * units + j])
                g[j], g[units + j], g[2 * units + j] = z_, r_, n_
                hz_candidate[s, b, j] = hz[b, 2 * units + j]
                h[s + 1, b, j] = z_ * h[s, b, j] + (1.0 - z_) * n_
    return _outputs(h), (h, gates, hz_candidate)


@njit(**_jit)
def gru_backward(d_outputs, d_last, x, mask, kernel, recurrent_kernel, go_backwards, cache, grads):
    """Gradients of a `gru_forward`; adds to grads (kernel, recurrent_kernel, bias, recurrent_bias)
    and returns d_x."""
    h, gates, hz_candidate = cache
    d_kernel, d_recurrent, d_bias, d_recurrent_bias = grads
    batch, steps = x.shape[0], x.shape[1]
    units = recurrent_kernel.shape[0]
    d_x = np.zeros_like(x)
    dh = d_last.copy()
    dxz = np.zeros((batch, 3 * units), x.dtype)
    dhz = np.zeros((batch, 3 * units), x.dtype)
    dh_prev = np.empty((batch, units), x.dtype)
    for s in range(steps - 1, -1, -1):
        t = steps - 1 - s if go_backwards else s
        dh += d_outputs[:, s]
        for b in range(batch):
            if not mask[b, t]:
                dxz[b] = 0.0
                dhz[b] = 0.0
                dh_prev[b] = dh[b]
                continue
            g = gates[s, b]
            for j in range(units):
                z_, r_, n_ = g[j], g[units + j], g[2 * units + j]
                dn = dh[b, j] * (1.0 - z_) * (1.0 - n_ * n_)
                dz_pre = dh[b, j] * (h[s, b, j] - n_) * z_ * (1.0 - z_)
                dr_pre = dn * hz_candidate[s, b, j] * r_ * (1.0 - r_)
                dxz[b, j], dxz[b, units + j], dxz[b, 2 * units + j] = dz_pre, dr_pre, dn
                dhz[b, j], dhz[b, units + j], dhz[b, 2 * units + j] = dz_pre, dr_pre, dn * r_
                dh_prev[b, j] = dh[b, j] * z_
        add_outer(d_kernel, x[:, t], dxz)
        add_outer(d_recurrent, h[s], dhz)
        for b in range(batch):
            d_bias += dxz[b]
            d_recurrent_bias += dhz[b]
        add_matmul_transposed(d_x[:, t], dxz, kernel)
        add_matmul_transposed(dh_prev, dhz, recurrent_kernel)
        dh[:] = dh_prev
    return d_x


@njit(**_jit)
def dense_forward(x, kernel, bias):
    """x [N, I] -> x @ kernel + bias [N, O] (before the head's activation)."""
    out = np.empty((x.shape[0], kernel.shape[1]), x.dtype)
    for n in range(x.shape[0]):
        out[n] = bias
    add_matmul(out, x, kernel)
    return out


@njit(**_jit)
def dense_backward(d_out, x, kernel, grads):
    """Adds to grads (kernel, bias) and returns d_x for `dense_forward`."""
    d_kernel, d_bias = grads
    add_outer(d_kernel, x, d_out)
    for n in range(d_out.shape[0]):
        d_bias += d_out[n]
    d_x = np.zeros_like(x)
    add_matmul_transposed(d_x, d_out, kernel)
    return d_x


@njit(**_jit)
def embedding_forward(ids, table):
    """ids [B, T] -> table rows [B, T, D]."""
    out = np.empty((ids.shape[0], ids.shape[1], table.shape[1]), table.dtype)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            out[b, t] = table[ids[b, t]]
    return out


@njit(**_jit)
def embedding_backward(d_out, ids, d_table):
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            d_table[ids[b, t]] += d_out[b, t]
