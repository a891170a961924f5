"""Numba CUDA kernels: the GPU twins of `reference.py`, same names, same signatures, on device arrays.

Weights are uploaded once when a model loads (`upload`); every buffer, mask and recurrent state
lives on the device, so a call copies its input in and its output out once. A recurrent layer is
two launches per call whatever the sequence length: the input projection of every step at once,
then the whole recurrence in one kernel with one block per sequence, each thread owning hidden
units (all gates of a unit together, so the cell update needs no exchange) and `h` in shared
memory; two `syncthreads` per step. Recurrence kernels are built per layer shape and options
(compile-time sizes and activation codes), cached per process.

Written for numba-cuda (`pip install 'edgelstm[cuda]'`) and kept runnable in Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), which runs the tests on machines without a GPU: no warp
shuffles, no grid-wide sync, one shared array per source line (the simulator keys them by line).
All arithmetic is float32: literals are typed, since a bare ``1.0`` makes numba compute in float64,
which is slow on Jetson GPUs.
"""

import functools
import math
import sys
import threading
from typing import NamedTuple

import numpy as np
from numba import config, cuda, float32, int32

from . import activations as A
from .quantized import QuantizedMatrix, ROW_QMAX
from .reference import MERGE_AVERAGE, MERGE_MULTIPLY

SIMULATED = bool(config.ENABLE_CUDASIM)
ON_DEVICE = True
MAX_UNITS = 4096  # three float32 [units] shared arrays per block stay within the 48 KiB every GPU has

_ZERO, _ONE, _HALF = float32(0.0), float32(1.0), float32(0.5)
_QMAX = float32(ROW_QMAX)
_LSTM, _GRU, _RNN = range(3)


def _lock_simulated_shared_arrays():
    """Make the simulator hand every thread of a block the same `cuda.shared.array`.

    The simulator finds a block's shared array by the calling source line and creates it on a
    miss, unlocked: two threads that miss together get two arrays, and a thread left with its own
    copy of `h` computes the rest of the sequence from it (CI failed on that, about one run in
    eight). The same lookup, under a lock; dynamic shared memory (shape 0) needs no lookup.
    """
    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    unlocked = FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return unlocked(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        line = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(line)
            if found is None:
                dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                found = self._allocations[line] = np.empty(shape, dtype)
        return found

    FakeCUDAShared.array = array


if SIMULATED:
    _lock_simulated_shared_arrays()

    @cuda.jit(device=True)  # the simulator's libdevice functions are stubs
    def _rint(v):
        return float32(np.rint(v))
else:
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def _rint(v):
        return libdevice.rintf(v)


def unusable() -> str | None:
    """Why the CUDA backend cannot run in this process, or None when it can."""
    if SIMULATED:
        return None
    if getattr(cuda, "implementation", "Built-in") != "NVIDIA":
        return "numba's built-in CUDA target is deprecated and unsupported; install numba-cuda: pip install 'edgelstm[cuda]'"
    try:
        if not cuda.is_available():
            return "no CUDA GPU or driver was found"
        cuda.get_current_device()
    except Exception as exc:  # driver or toolkit trouble: say what it was
        return f"CUDA did not start ({type(exc).__name__}: {exc})"
    return None


def device_name() -> str:
    """The GPU this process runs on, with its compute capability (for reports)."""
    if SIMULATED:
        return "Numba CUDA simulator"
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    return f"{name}, sm_{''.join(map(str, device.compute_capability))}, {device.MULTIPROCESSOR_COUNT} SMs"


# ---- launch shapes -------------------------------------------------------------------------------

_BLOCK_2D = (8, 4) if SIMULATED else (32, 8)  # the simulator runs one OS thread per CUDA thread
_BLOCK_1D = 32 if SIMULATED else 256


def _nothing(*args):
    """What an empty launch does (a real GPU refuses a grid of no blocks)."""


def _grid2(kernel, cols: int, rows: int):
    """`kernel` configured over a (cols, rows) grid of threads, columns fastest."""
    if cols == 0 or rows == 0:
        return _nothing
    bx, by = _BLOCK_2D
    return kernel[(-(-cols // bx), -(-rows // by)), _BLOCK_2D]


def _grid1(kernel, count: int):
    if count == 0:
        return _nothing
    return kernel[-(-count // _BLOCK_1D), _BLOCK_1D]


# ---- arrays -------------------------------------------------------------------------------------

class DeviceQuantized(NamedTuple):
    """A `QuantizedMatrix` on the device: int8 values [K, N] (unpacked: threads read columns), a
    float32 scale per column, and the static input scale (0: per row and call)."""

    values: object
    scale: object
    input_scale: np.float32


def empty(shape, dtype):
    return cuda.device_array(shape, dtype)


_local = threading.local()


def _scratch(shape: tuple):
    """A float32 device array of `shape`, carved from one buffer per thread that grows as needed:
    numba allocates device memory with a plain cudaMalloc, which would cost more than a small
    layer's whole run if done per call. Kernels of one thread run in order on the default stream,
    so one use of the buffer ends before the next begins."""
    size = math.prod(shape)
    buffer = getattr(_local, "scratch", None)
    if buffer is None or buffer.size < size:
        buffer = _local.scratch = cuda.device_array(max(size, 1), np.float32)
    return buffer[:size].reshape(shape)


def upload(weights: dict) -> dict:
    """A layer's kernel weights (float32 arrays or `QuantizedMatrix`) copied to the device."""
    ready = {}
    for name, w in weights.items():
        if isinstance(w, QuantizedMatrix):
            ready[name] = DeviceQuantized(cuda.to_device(np.ascontiguousarray(w.values)), cuda.to_device(w.scale),
                                          np.float32(w.input_scale))
        else:
            ready[name] = cuda.to_device(np.ascontiguousarray(w))
    return ready


def to_host(value) -> np.ndarray:
    return value.copy_to_host()


@cuda.jit
def _fill(flat, value):
    i = cuda.grid(1)
    if i < flat.shape[0]:
        flat[i] = value


def assign(array, value):
    """array[...] = value: a scalar (filled on the device) or a host array broadcast to its shape."""
    if np.ndim(value) == 0:
        flat = array.reshape(array.size)
        _grid1(_fill, array.size)(flat, np.asarray(value, array.dtype)[()])
    else:
        host = np.asarray(value, array.dtype)
        if host.shape != array.shape or 0 in host.strides or not host.flags.c_contiguous:
            host = np.array(np.broadcast_to(host, array.shape))  # fresh strides: numba drops zero-stride axes
        array.copy_to_device(host)


# ---- activations --------------------------------------------------------------------------------

@cuda.jit(device=True)
def _sigmoid(x):
    return _ONE / (_ONE + math.exp(-x))


@cuda.jit(device=True)
def _activate(code, x):
    """The activation `code` of a float32; softmax codes (whole rows: `_softmax_rows`) return x."""
    if code == A.SIGMOID:
        return _sigmoid(x)
    if code == A.TANH:
        return math.tanh(x)
    if code == A.RELU:
        return max(x, _ZERO)
    if code == A.HARD_SIGMOID:
        return min(max(x / float32(6.0) + _HALF, _ZERO), _ONE)
    if code == A.HARD_SIGMOID_LEGACY:
        return min(max(float32(0.2) * x + _HALF, _ZERO), _ONE)
    if code == A.ELU:
        return x if x > _ZERO else math.expm1(x)
    if code == A.SELU:
        scale = float32(1.0507009873554805)
        return scale * x if x > _ZERO else scale * float32(1.6732632423543772) * math.expm1(x)
    if code == A.GELU:
        return _HALF * x * (_ONE + math.erf(x * float32(0.7071067811865476)))
    if code == A.SWISH:
        return x * _sigmoid(x)
    if code == A.SOFTPLUS:
        return max(x, _ZERO) + math.log1p(math.exp(-abs(x)))
    return x


@cuda.jit
def _softmax_rows(rows, log):
    """Each row of rows [N, F] replaced by its softmax (or log-softmax), in place."""
    n = cuda.grid(1)
    if n < rows.shape[0]:
        top = rows[n, 0]
        for j in range(1, rows.shape[1]):
            top = max(top, rows[n, j])
        total = _ZERO
        for j in range(rows.shape[1]):
            total += math.exp(rows[n, j] - top)
        for j in range(rows.shape[1]):
            rows[n, j] = rows[n, j] - top - math.log(total) if log else math.exp(rows[n, j] - top) / total


def _finish_rows(rows, act):
    """Softmax and log-softmax, which the producing kernels leave to a pass over whole rows."""
    if act in (A.SOFTMAX, A.LOG_SOFTMAX):
        _grid1(_softmax_rows, rows.shape[0])(rows, act == A.LOG_SOFTMAX)


@cuda.jit
def _activation(x, act, out):
    j, n = cuda.grid(2)
    if n < x.shape[0] and j < x.shape[1]:
        out[n, j] = _activate(act, x[n, j])


def activation(x, act, out):
    _grid2(_activation, x.shape[1], x.shape[0])(x, act, out)
    _finish_rows(out, act)


# ---- matrix products ----------------------------------------------------------------------------

@cuda.jit(device=True)
def _row_scale(x, n, input_scale):
    """The 8-bit quantization scale of row n of x: `input_scale` when positive, else max |row| / 127."""
    if input_scale > _ZERO:
        return input_scale
    top = _ZERO
    for k in range(x.shape[1]):
        top = max(top, abs(x[n, k]))
    return top / _QMAX if top > _ZERO else _ONE


@cuda.jit(device=True)
def _quantize(v, scale):
    """v as an 8-bit value of `scale`: times the scale's reciprocal, as the CPU kernels round it."""
    return int32(min(max(_rint(v * (_ONE / scale)), -_QMAX), _QMAX))


@cuda.jit
def _project(x, w, bias, act, out):
    """out [N, G] = act(bias + x [N, K] @ w [K, G]): one thread per output, threads along G."""
    g, n = cuda.grid(2)
    if n < x.shape[0] and g < w.shape[1]:
        acc = _ZERO
        for k in range(x.shape[1]):
            acc += x[n, k] * w[k, g]
        out[n, g] = _activate(act, bias[g] + acc)


@cuda.jit
def _project_int8(x, w, scale, input_scale, bias, act, out):
    """As `_project` with int8 weights: rows quantized to 8 bits, int32 sums (as the CPU kernels)."""
    g, n = cuda.grid(2)
    if n < x.shape[0] and g < w.shape[1]:
        row_scale = _row_scale(x, n, input_scale)
        acc = int32(0)
        for k in range(x.shape[1]):
            acc += _quantize(x[n, k], row_scale) * int32(w[k, g])
        out[n, g] = _activate(act, bias[g] + float32(acc) * (row_scale * scale[g]))


def _product(x, w, bias, act, out):
    """out = act(bias + x @ w) for float32 weights or a `DeviceQuantized`."""
    if isinstance(w, DeviceQuantized):
        _grid2(_project_int8, out.shape[1], x.shape[0])(x, w.values, w.scale, w.input_scale, bias, act, out)
    else:
        _grid2(_project, out.shape[1], x.shape[0])(x, w, bias, act, out)


def dense(x, kernel, bias, act, out):
    _product(x, kernel, bias, act, out)
    _finish_rows(out, act)


# ---- recurrent layers ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _recurrence(cell: int, units: int, quantized: bool, general: bool, reset_after: bool,
                act: int, rec_act: int, out_act: int, input_forget: bool, threads: int):
    """The recurrence kernel of one layer shape: grid = one block per sequence, `threads` threads.

    Arguments: proj [B, T, G] (bias + x @ kernel for every step), mask [B, T], the recurrent
    weights u [H, G] (float32, or int8 with its column `scale`), the GRU's recurrent bias, the
    LSTM's peephole [3H] and clip (used when `general`), flags, the state h, c [B, H] (updated)
    and out [B, T or 1, H].
    """
    two_phase = cell == _GRU and not reset_after  # the candidate's product needs every unit's reset gate
    spare = units if two_phase else 1

    @cuda.jit(device=True)
    def h_scale(v):
        """The 8-bit scale of the shared vector v (every thread computes it: no extra sync)."""
        top = _ZERO
        for k in range(units):
            top = max(top, abs(v[k]))
        return top / _QMAX if top > _ZERO else _ONE

    @cuda.jit(device=True)
    def dot(v, scale, u, uscale, col):
        """v [H] (shared) @ u[:, col]: float32, or quantized like `_project_int8`."""
        if quantized:
            acc = int32(0)
            for k in range(units):
                acc += _quantize(v[k], scale) * int32(u[k, col])
            return float32(acc) * (scale * uscale[col])
        total = _ZERO
        for k in range(units):
            total += v[k] * u[k, col]
        return total

    @cuda.jit(device=True)
    def bound(v, clip):
        return min(max(v, -clip), clip) if clip > _ZERO else v

    @cuda.jit
    def kernel(proj, mask, u, uscale, rbias, peephole, clip, backwards, every, zero, h, c, out):
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        hs = cuda.shared.array(units, float32)  # h of the previous step
        rh = cuda.shared.array(spare, float32)  # GRU without reset_after: r * h
        zs = cuda.shared.array(spare, float32)  # ... and the update gates kept between the phases
        for j in range(tid, units, threads):
            hs[j] = h[b, j]
        cuda.syncthreads()
        steps = proj.shape[1]
        for s in range(steps):
            t = steps - 1 - s if backwards else s
            keep = mask[b, t]  # the same for the whole block: branching on it is uniform
            if keep:
                scale = h_scale(hs) if quantized else _ONE
                for j in range(tid, units, threads):
                    if cell == _LSTM:
                        zi = proj[b, t, j] + dot(hs, scale, u, uscale, j)
                        zf = proj[b, t, units + j] + dot(hs, scale, u, uscale, units + j)
                        zg = proj[b, t, 2 * units + j] + dot(hs, scale, u, uscale, 2 * units + j)
                        zo = proj[b, t, 3 * units + j] + dot(hs, scale, u, uscale, 3 * units + j)
                        cell_j = c[b, j]
                        if general:
                            if peephole.shape[0] > 0:
                                zi += peephole[j] * cell_j
                                zf += peephole[units + j] * cell_j
                            gate_i = _activate(rec_act, bound(zi, clip))
                            gate_f = _ONE - gate_i if input_forget else _activate(rec_act, bound(zf, clip))
                            cell_j = gate_f * cell_j + gate_i * _activate(act, bound(zg, clip))
                            if peephole.shape[0] > 0:
                                zo += peephole[2 * units + j] * cell_j
                            gate_o = _activate(rec_act, bound(zo, clip))
                        else:
                            cell_j = _activate(rec_act, zf) * cell_j + _activate(rec_act, zi) * _activate(act, zg)
                            gate_o = _activate(rec_act, zo)
                        c[b, j] = cell_j
                        h[b, j] = gate_o * _activate(out_act, cell_j)
                    elif cell == _GRU:
                        gate_z = _activate(rec_act, proj[b, t, j] + (rbias[j] + dot(hs, scale, u, uscale, j)))
                        gate_r = _activate(rec_act, proj[b, t, units + j]
                                           + (rbias[units + j] + dot(hs, scale, u, uscale, units + j)))
                        if two_phase:
                            zs[j] = gate_z
                            rh[j] = gate_r * hs[j]
                        else:
                            hh = rbias[2 * units + j] + dot(hs, scale, u, uscale, 2 * units + j)
                            cand = _activate(act, proj[b, t, 2 * units + j] + gate_r * hh)
                            h[b, j] = gate_z * hs[j] + (_ONE - gate_z) * cand
                    else:
                        h[b, j] = _activate(act, proj[b, t, j] + dot(hs, scale, u, uscale, j))
                if two_phase:
                    cuda.syncthreads()
                    rscale = h_scale(rh) if quantized else _ONE
                    for j in range(tid, units, threads):
                        hh = rbias[2 * units + j] + dot(rh, rscale, u, uscale, 2 * units + j)
                        cand = _activate(act, proj[b, t, 2 * units + j] + hh)
                        h[b, j] = zs[j] * hs[j] + (_ONE - zs[j]) * cand
            if every:
                for j in range(tid, units, threads):
                    out[b, s, j] = h[b, j] if keep or not zero else _ZERO
            cuda.syncthreads()  # every thread has read hs for this step
            for j in range(tid, units, threads):
                hs[j] = h[b, j]
            cuda.syncthreads()
        if not every:
            for j in range(tid, units, threads):
                out[b, 0, j] = h[b, j]

    return kernel


MAX_THREADS = 512  # the recurrence kernels use up to ~80 registers a thread (ptxas, sm_87): 512 x 80 fit 64K


def _threads(units: int) -> int:
    """Threads per block of a recurrence kernel; past MAX_THREADS units a thread owns several."""
    if SIMULATED:
        return min(units, 64)
    return min(-(-units // 32) * 32, MAX_THREADS)


_NO_WEIGHTS = None  # a one-element float32 device array for arguments a cell does not use


def _unused():
    global _NO_WEIGHTS
    if _NO_WEIGHTS is None:
        _NO_WEIGHTS = cuda.to_device(np.zeros(1, np.float32))
    return _NO_WEIGHTS


def _sequence(cell, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after, peephole,
              out_act, clip, input_forget, go_backwards, return_sequences, zero_output_for_mask, h, c, out):
    batch, steps = x.shape[:2]
    units = h.shape[1]  # at most MAX_UNITS: larger layers are refused when the model loads
    width = bias.shape[0]
    proj = _scratch((batch, steps, width))
    _product(x.reshape(batch * steps, x.shape[2]), kernel, bias, A.LINEAR, proj.reshape(batch * steps, width))
    quantized = isinstance(recurrent_kernel, DeviceQuantized)
    u, uscale = (recurrent_kernel.values, recurrent_kernel.scale) if quantized else (recurrent_kernel, _unused())
    general = cell == _LSTM and (peephole.shape[0] > 0 or clip > 0.0 or input_forget)
    threads = _threads(units)
    run = _recurrence(cell, units, quantized, general, bool(reset_after), act, rec_act, out_act,
                      bool(input_forget), threads)
    run[batch, threads](proj, mask, u, uscale, recurrent_bias, peephole, np.float32(clip), bool(go_backwards),
                        bool(return_sequences), bool(zero_output_for_mask), h, c, out)


def lstm(x, mask, kernel, recurrent_kernel, bias, peephole, act, rec_act, out_act, clip, input_forget,
         go_backwards, return_sequences, zero_output_for_mask, h, c, out):
    _sequence(_LSTM, x, mask, kernel, recurrent_kernel, bias, _unused(), act, rec_act, False, peephole, out_act,
              clip, input_forget, go_backwards, return_sequences, zero_output_for_mask, h, c, out)


def gru(x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
        go_backwards, return_sequences, zero_output_for_mask, h, out):
    _sequence(_GRU, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
              _unused()[:0], act, 0.0, False, go_backwards, return_sequences, zero_output_for_mask, h, h, out)


def rnn(x, mask, kernel, recurrent_kernel, bias, act, go_backwards, return_sequences,
        zero_output_for_mask, h, out):
    _sequence(_RNN, x, mask, kernel, recurrent_kernel, bias, _unused(), act, act, False, _unused()[:0], act,
              0.0, False, go_backwards, return_sequences, zero_output_for_mask, h, h, out)


# ---- other layers -------------------------------------------------------------------------------

@cuda.jit
def _embedding(ids, table, out):
    j, n = cuda.grid(2)
    if n < ids.shape[0] * ids.shape[1] and j < table.shape[1]:
        b, t = n // ids.shape[1], n % ids.shape[1]
        out[b, t, j] = table[ids[b, t], j]


def embedding(ids, table, out):
    _grid2(_embedding, table.shape[1], ids.shape[0] * ids.shape[1])(ids, table, out)


@cuda.jit
def _masking(x, value, out, mask):
    n = cuda.grid(1)
    if n < x.shape[0] * x.shape[1]:
        b, t = n // x.shape[1], n % x.shape[1]
        keep = False
        for j in range(x.shape[2]):
            keep = keep or x[b, t, j] != value
        mask[b, t] = keep
        for j in range(x.shape[2]):
            out[b, t, j] = x[b, t, j] if keep else _ZERO


def masking(x, value, out, mask):
    _grid1(_masking, x.shape[0] * x.shape[1])(x, np.float32(value), out, mask)


@cuda.jit
def _merge_into(out, x, op):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = out[i] * x[i] if op == MERGE_MULTIPLY else out[i] + x[i]


@cuda.jit
def _scale(out, factor):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] *= factor


def merge(xs, op, out):
    out.copy_to_device(xs[0])
    for x in xs[1:]:
        _grid1(_merge_into, out.shape[0])(out, x, op)
    if op == MERGE_AVERAGE:
        _grid1(_scale, out.shape[0])(out, np.float32(1.0 / len(xs)))


@cuda.jit
def _conv1d(x, kernel, bias, strides, dilation, pad_left, act, out):
    o, n = cuda.grid(2)
    if n < out.shape[0] * out.shape[1] and o < out.shape[2]:
        b, s = n // out.shape[1], n % out.shape[1]
        acc = bias[o]
        for k in range(kernel.shape[0]):
            t = s * strides + k * dilation - pad_left
            if 0 <= t < x.shape[1]:
                for i in range(x.shape[2]):
                    acc += x[b, t, i] * kernel[k, i, o]
        out[b, s, o] = _activate(act, acc)


def conv1d(x, kernel, bias, strides, dilation, pad_left, act, out):
    _grid2(_conv1d, out.shape[2], out.shape[0] * out.shape[1])(x, kernel, bias, strides, dilation, pad_left, act, out)
    _finish_rows(out.reshape(out.shape[0] * out.shape[1], out.shape[2]), act)


@cuda.jit
def _pool1d(x, is_max, pool_size, strides, pad_left, out):
    j, n = cuda.grid(2)
    if n < out.shape[0] * out.shape[1] and j < out.shape[2]:
        b, s = n // out.shape[1], n % out.shape[1]
        lo = max(s * strides - pad_left, 0)
        hi = min(s * strides - pad_left + pool_size, x.shape[1])
        acc = x[b, lo, j]
        for t in range(lo + 1, hi):
            acc = max(acc, x[b, t, j]) if is_max else acc + x[b, t, j]
        out[b, s, j] = acc if is_max else acc / float32(hi - lo)


def pool1d(x, is_max, pool_size, strides, pad_left, out):
    _grid2(_pool1d, out.shape[2], out.shape[0] * out.shape[1])(x, is_max, pool_size, strides, pad_left, out)


@cuda.jit
def _global_pool1d(x, mask, is_max, out):
    j, b = cuda.grid(2)
    if b < x.shape[0] and j < x.shape[2]:
        if is_max:
            acc = x[b, 0, j]
            for t in range(1, x.shape[1]):
                acc = max(acc, x[b, t, j])
            out[b, j] = acc
        else:
            acc = _ZERO
            count = 0
            for t in range(x.shape[1]):
                if mask[b, t]:
                    acc += x[b, t, j]
                    count += 1
            out[b, j] = acc / float32(count)


def global_pool1d(x, mask, is_max, out):
    _grid2(_global_pool1d, x.shape[2], x.shape[0])(x, mask, is_max, out)


@cuda.jit
def _batch_norm(x, scale, offset, out):
    j, n = cuda.grid(2)
    if n < x.shape[0] and j < x.shape[1]:
        out[n, j] = x[n, j] * scale[j] + offset[j]


def batch_norm(x, scale, offset, out):
    _grid2(_batch_norm, x.shape[1], x.shape[0])(x, scale, offset, out)


@cuda.jit
def _layer_norm(x, gamma, beta, epsilon, out):
    n = cuda.grid(1)
    if n < x.shape[0]:
        width = x.shape[1]
        mean = _ZERO
        for j in range(width):
            mean += x[n, j]
        mean /= float32(width)
        var = _ZERO
        for j in range(width):
            var += (x[n, j] - mean) * (x[n, j] - mean)
        inv = _ONE / math.sqrt(var / float32(width) + epsilon)
        for j in range(width):
            out[n, j] = (x[n, j] - mean) * inv * gamma[j] + beta[j]


def layer_norm(x, gamma, beta, epsilon, out):
    _grid1(_layer_norm, x.shape[0])(x, gamma, beta, np.float32(epsilon), out)


# ---- data movement and masks (the twins of the functions at the end of reference.py) ------------

@cuda.jit
def _copy_steps(x, first, step, out):
    """out[b, s] = x[b, first + s * step] (step -1 reverses time)."""
    j, n = cuda.grid(2)
    if n < out.shape[0] * out.shape[1] and j < out.shape[2]:
        b, s = n // out.shape[1], n % out.shape[1]
        out[b, s, j] = x[b, first + s * step, j]


def reverse(x, out):
    _grid2(_copy_steps, x.shape[2], x.shape[0] * x.shape[1])(x, x.shape[1] - 1, -1, out)


def repeat(x, out):
    _grid2(_copy_steps, x.shape[1], out.shape[0] * out.shape[1])(x.reshape(x.shape[0], 1, x.shape[1]), 0, 0, out)


def take_step(x, index, out):
    one = out.reshape(out.shape[0], 1, out.shape[1])
    _grid2(_copy_steps, x.shape[2], x.shape[0])(x, index, 0, one)


@cuda.jit
def _copy_columns(x, first, out):
    """out[n, first:first + F] = x [N, F]."""
    j, n = cuda.grid(2)
    if n < x.shape[0] and j < x.shape[1]:
        out[n, first + j] = x[n, j]


def _rows(x):
    width = x.shape[len(x.shape) - 1]  # the simulator's device arrays refuse shape[-1]
    return x.reshape(x.size // width, width)


def concatenate(xs, out):
    rows = _rows(out)
    first = 0
    for x in xs:
        flat = _rows(x)
        _grid2(_copy_columns, flat.shape[1], flat.shape[0])(flat, first, rows)
        first += flat.shape[1]


@cuda.jit
def _join_steps(window, x, full):
    """full = window then x on the time axis."""
    j, n = cuda.grid(2)
    if n < full.shape[0] * full.shape[1] and j < full.shape[2]:
        b, t = n // full.shape[1], n % full.shape[1]
        kept = window.shape[1]
        full[b, t, j] = window[b, t, j] if t < kept else x[b, t - kept, j]


def shift_in(window, x, full):
    _grid2(_join_steps, full.shape[2], full.shape[0] * full.shape[1])(window, x, full)
    _grid2(_copy_steps, window.shape[2], window.shape[0] * window.shape[1])(
        full, full.shape[1] - window.shape[1], 1, window)


@cuda.jit
def _nonzero(ids, out):
    n = cuda.grid(1)
    if n < ids.shape[0]:
        out[n] = ids[n] != 0


def nonzero(ids, out):
    _grid1(_nonzero, ids.size)(ids.reshape(ids.size), out.reshape(out.size))


@cuda.jit
def _combine(a, b, all_of, out):
    n = cuda.grid(1)
    if n < out.shape[0]:
        out[n] = (a[n] and b[n]) if all_of else (a[n] or b[n])


def combine_masks(masks, all_of, out):
    flat = out.reshape(out.size)
    first = masks[0].reshape(out.size)
    for mask in masks[1:]:
        _grid1(_combine, out.size)(first, mask.reshape(out.size), all_of, flat)
        first = flat
