"""Numba CPU kernels: the fast twins of `reference.py`, same names, same signatures.

Every kernel runs its batch rows in parallel (`prange`), writes into the preallocated `out`
and allocates nothing inside its time loop; under 8 rows a cell's products by a large matrix are
split by columns instead (`_step_product`). `StepProgram` (at the end) runs a model's whole step
for up to 64 sequences in one call, through the same helpers (its products by a large matrix
split by columns up to 16 rows). `cache=True` keeps compiled code on disk so a
second process starts fast; ``error_model="numpy"`` drops the division checks that block
vectorisation.
"""

import functools
import math

import numba
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import activations as A
from . import blas
from . import packed
from .int8 import panel_product
from .packed import PackedMatrix
from .quantized import GROUP, PANEL, ROW_QMAX, QuantizedMatrix
from .vectors import largest_magnitude, wide_vectors
from .reference import (MERGE_AVERAGE, MERGE_MULTIPLY, ON_DEVICE, assign, combine_masks, concatenate, empty,
                        nonzero, repeat, reverse, shift_in, take_step, to_host)

__all__ = ["activation", "dense", "lstm", "gru", "rnn", "embedding", "masking", "merge", "conv1d", "pool1d",
           "global_pool1d", "batch_norm", "layer_norm",
           # data movement and masks, shared with the reference backend:
           "ON_DEVICE", "empty", "to_host", "assign", "reverse", "repeat", "take_step", "concatenate", "shift_in", "nonzero",
           "combine_masks",
           # a stream's whole step as one call:
           "StepProgram", "STEP_PROGRAM_MAX_BATCH", "ROW_SPLIT_MIN", "STEP_PROGRAM_MAX_MERGE", "MERGE_CONCATENATE"]

# nogil: predictions from several Python threads run side by side (`edgelstm score`'s local engine)
_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


_PANEL = 512  # output columns per pass of a matrix product: a panel of weights stays in cache
# From 8 rows and 32 inputs on, OpenBLAS's packed sgemm beats our loops (bench/RESULTS.md).
_BLAS_ROWS, _BLAS_INPUTS = 8, 32


# numba counts the references to an array's memory: each view (a row, a slice) and each array
# argument increments the count and later decrements it, an atomic add of 5-10 ns (and a cache
# line that threads fight over). A step of LSTM(32) made about forty of them, as long as its maths.
# The time-loop kernels therefore work on borrowed views of their array arguments, which carry no
# count: the caller holds the arrays for the whole call, and nothing borrowed outlives it.

@intrinsic
def _unowned(typingctx, array):
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        view = context.make_array(array)(context, builder, value=args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()
    return array(array), codegen


def _borrowed(value):
    """`value` (an array, a QuantizedMatrix or a PackedMatrix) over the same memory without a
    reference count."""


@overload(_borrowed, jit_options=_jit)
def _borrowed_by_type(value):
    if isinstance(value, types.Array):
        return lambda value: _unowned(value)
    if isinstance(value, types.BaseNamedTuple) and value.instance_class is QuantizedMatrix:
        return lambda value: QuantizedMatrix(_unowned(value.panels), _unowned(value.scale), value.input_scale,
                                             value.rows)
    if _is_packed(value):
        return lambda value: PackedMatrix(_unowned(value.matrix), _unowned(value.panels))


def _is_packed(numba_type) -> bool:
    return isinstance(numba_type, types.BaseNamedTuple) and numba_type.instance_class is PackedMatrix


@njit(inline="always", **_jit)
def _copy(dst, src):
    """dst[:] = src for rows of equal length, 4x faster than numba's slice assignment (its general
    broadcasting path) on a [256, 128] block; inlined, since a call per row costs as much again."""
    if src.shape[0] != dst.shape[0]:  # the slice assignment refused this too
        raise ValueError("rows of different lengths")
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**_jit)
def _activate(code, v, lo, hi):
    """v[lo:hi] = code(v[lo:hi]) in place; sigmoid and tanh by the vectorising float32 forms."""
    wide_vectors()
    u = v[lo:hi]  # loops indexed from 0: numba then needs no negative-index fix-up, and LLVM vectorises
    if code == A.SIGMOID:
        for j in range(u.shape[0]):
            u[j] = A.sigmoid32(u[j])
    elif code == A.TANH:
        for j in range(u.shape[0]):
            u[j] = A.tanh32(u[j])
    elif code == A.RELU:
        for j in range(u.shape[0]):
            u[j] = max(u[j], 0.0)
    elif code != A.LINEAR:
        for j in range(u.shape[0]):
            u[j] = A.apply(code, u[j])


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
    else:
        _activate(act, row, 0, row.shape[0])


@njit(parallel=True, **_jit)
def activation(x, act, out):
    for n in prange(x.shape[0]):
        _copy(out[n], x[n])
        _activate_row(out[n], act)


# Matrix products. The loops run over contiguous output columns so LLVM vectorises them; each
# pass over z folds in several rows of the weights (one load and store of z per several FMAs).
# Slicing the rows first lets numba index from 0, which LLVM needs to vectorise.

@njit(**_jit)
def _add_row_product(z, a, w, j0, j1):
    """z[j0:j1] += a @ w[:, j0:j1] for one row a, eight rows of w per pass."""
    n = a.shape[0]
    y = z[j0:j1]
    k = 0
    while k + 8 <= n:
        a0, a1, a2, a3, a4, a5, a6, a7 = a[k], a[k + 1], a[k + 2], a[k + 3], a[k + 4], a[k + 5], a[k + 6], a[k + 7]
        w0, w1, w2, w3 = w[k, j0:j1], w[k + 1, j0:j1], w[k + 2, j0:j1], w[k + 3, j0:j1]
        w4, w5, w6, w7 = w[k + 4, j0:j1], w[k + 5, j0:j1], w[k + 6, j0:j1], w[k + 7, j0:j1]
        for j in range(y.shape[0]):
            y[j] += ((a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j])
                     + ((a4 * w4[j] + a5 * w5[j]) + (a6 * w6[j] + a7 * w7[j])))
        k += 8
    for k in range(k, n):
        ak, wk = a[k], w[k, j0:j1]
        for j in range(y.shape[0]):
            y[j] += ak * wk[j]


@njit(**_jit)
def _add_rows4_product(z, a, r, w, j0, j1):
    """z[r:r+4, j0:j1] += a[r:r+4] @ w[:, j0:j1]: four rows of `a` share every load of `w`."""
    n = a.shape[1]
    y0, y1, y2, y3 = z[r, j0:j1], z[r + 1, j0:j1], z[r + 2, j0:j1], z[r + 3, j0:j1]
    k = 0
    while k + 4 <= n:
        w0, w1, w2, w3 = w[k, j0:j1], w[k + 1, j0:j1], w[k + 2, j0:j1], w[k + 3, j0:j1]
        p0, q0, s0, t0 = a[r, k], a[r, k + 1], a[r, k + 2], a[r, k + 3]
        p1, q1, s1, t1 = a[r + 1, k], a[r + 1, k + 1], a[r + 1, k + 2], a[r + 1, k + 3]
        p2, q2, s2, t2 = a[r + 2, k], a[r + 2, k + 1], a[r + 2, k + 2], a[r + 2, k + 3]
        p3, q3, s3, t3 = a[r + 3, k], a[r + 3, k + 1], a[r + 3, k + 2], a[r + 3, k + 3]
        for j in range(y0.shape[0]):
            u, v, e, f = w0[j], w1[j], w2[j], w3[j]
            y0[j] += (p0 * u + q0 * v) + (s0 * e + t0 * f)
            y1[j] += (p1 * u + q1 * v) + (s1 * e + t1 * f)
            y2[j] += (p2 * u + q2 * v) + (s2 * e + t2 * f)
            y3[j] += (p3 * u + q3 * v) + (s3 * e + t3 * f)
        k += 4
    for k in range(k, n):
        wk = w[k, j0:j1]
        p0, p1, p2, p3 = a[r, k], a[r + 1, k], a[r + 2, k], a[r + 3, k]
        for j in range(y0.shape[0]):
            u = wk[j]
            y0[j] += p0 * u
            y1[j] += p1 * u
            y2[j] += p2 * u
            y3[j] += p3 * u


@njit(**_jit)
def add_product(z, a, w, j0, j1):
    """z[:, j0:j1] += a @ w[:, j0:j1] (a [rows, n], w [n, width]), float32 with FMA."""
    rows, n = a.shape
    if rows >= _BLAS_ROWS and n >= _BLAS_INPUTS and a.strides[1] == 4 and w.strides[1] == 4 and z.strides[1] == 4:
        blas.add_product(z, a, w, j0, j1)
        return
    for p0 in range(j0, j1, _PANEL):
        p1 = min(p0 + _PANEL, j1)
        r = 0
        while r + 4 <= rows:
            _add_rows4_product(z, a, r, w, p0, p1)
            r += 4
        for r in range(r, rows):
            _add_row_product(z[r], a[r], w, p0, p1)


# int8 weights (a QuantizedMatrix): the rows multiplied in are quantized to int8 values in
# [-127, 127], multiplied with the packed weight panels a group of rows at a time and summed in
# int32 (int8.panel_product: vpdpbusd with VNNI, vpmaddwd elsewhere), then scaled back to float32
# column by column.

@njit(**_jit)
def quantize_rows(a, input_scale, q, row_scale):
    """q[:, :K] = a [rows, K] as 8-bit values, row_scale[i] their scale: `input_scale`
    when positive, else max |a[i]| / ROW_QMAX (1 for a zero row). As `quantized.quantize_rows`."""
    for i in range(a.shape[0]):
        row, out = a[i], q[i, :a.shape[1]]
        scale = np.float32(input_scale)
        if input_scale <= 0.0:
            top = largest_magnitude(row)
            scale = top / np.float32(ROW_QMAX) if top > 0.0 else np.float32(1.0)
        row_scale[i] = scale
        inverse, qmax = np.float32(1.0) / scale, np.float32(ROW_QMAX)
        for k in range(row.shape[0]):
            out[k] = np.int8(min(max(np.rint(row[k] * inverse), -qmax), qmax))


@njit(inline="always", **_jit)
def _panel_at(first, end, n, backwards):
    """The n-th of the panels first..end-1, counted from the last when `backwards`."""
    return end - 1 - n if backwards else first + n


@njit(**_jit)
def add_quantized_product(z, a, w, scratch, j0, j1, backwards):
    """z[:, j0:j1] += a @ w[:, j0:j1] for a QuantizedMatrix w; scratch from `_scratch`. The int32
    sums of the panels that columns j0..j1 touch land in scratch[1][:, panel columns]; `backwards`:
    the panels in reverse order (as `add_packed_product`)."""
    q, acc, row_scale = _borrowed(scratch[0]), _borrowed(scratch[1]), _borrowed(scratch[2])
    quantize_rows(a, w.input_scale, q, row_scale)
    scale = w.scale
    for i in range(a.shape[0]):
        total, q_row = acc[i], q[i]
        q_sum = 0
        for k in range(a.shape[1]):
            q_sum += q_row[k]
        first, end = j0 // PANEL, -(-j1 // PANEL)
        for n in range(end - first):
            panel = _panel_at(first, end, n, backwards)
            panel_product(total[panel * PANEL:], q_row, np.int32(q_sum), w.panels, panel)
        row, s = z[i, j0:j1], row_scale[i]
        sums, column_scale = total[j0:j1], scale[j0:j1]
        for j in range(row.shape[0]):
            row[j] += np.float32(sums[j]) * (s * column_scale[j])


# With AVX-512 four rows share each load from a panel, and the panels beat sgemm at every batch
# measured (8 to 256 rows, hidden 32 to 512); one row at a time, sgemm wins from 8 rows
# (bench/RESULTS.md, "Packed recurrent matrices").
_PACKED_MAX_ROWS = 1 << 62 if packed.ROWS_PER_PASS == 4 else _BLAS_ROWS


@njit(**_jit)
def add_packed_product(z, a, w, j0, j1, backwards):
    """z[:, j0:j1] += a @ w[:, j0:j1] for a PackedMatrix w: panel by panel (each panel read front to
    back, its sums in registers, `packed.ROWS_PER_PASS` rows sharing each load) under
    `_PACKED_MAX_ROWS` rows, else `add_product` on its row-major matrix.

    A time loop alternates `backwards` (the panels last to first) step by step: a step then starts
    on the panels the previous one read last, still in cache. The sums are the same either way
    (each panel holds its own columns)."""
    rows = a.shape[0]
    if rows >= _PACKED_MAX_ROWS or a.strides[1] != 4 or z.strides[1] != 4:
        add_product(z, a, w.matrix, j0, j1)
        return
    first_panel, end_panel = j0 // packed.PANEL, -(-j1 // packed.PANEL)
    for n in range(end_panel - first_panel):
        panel = _panel_at(first_panel, end_panel, n, backwards)
        start = panel * packed.PANEL
        lo, hi = max(j0 - start, 0), min(j1 - start, packed.PANEL)
        first = 0
        if packed.ROWS_PER_PASS == 4:
            while first + 4 <= rows:
                packed.panel_product_4(z, a, first, w.panels, panel, lo, hi)
                first += 4
        for first in range(first, rows):
            packed.panel_product_1(z, a, first, w.panels, panel, lo, hi)


def _product(z, a, w, scratch, j0, j1, backwards):
    """z[:, j0:j1] += a @ w[:, j0:j1] for float32 weights, a PackedMatrix or a QuantizedMatrix (numba
    picks by type); `backwards` as in `add_packed_product` (row-major weights ignore it)."""


def _scratch(w, other, rows, inputs, width):
    """Work arrays for `_product` with the weights `w` and `other`: empty when neither is int8."""


@overload(_product, jit_options=_jit, inline="always")
def _product_by_type(z, a, w, scratch, j0, j1, backwards):
    if isinstance(w, types.Array):
        return lambda z, a, w, scratch, j0, j1, backwards: add_product(z, a, w, j0, j1)
    if _is_packed(w):
        return lambda z, a, w, scratch, j0, j1, backwards: add_packed_product(z, a, w, j0, j1, backwards)
    return lambda z, a, w, scratch, j0, j1, backwards: add_quantized_product(z, a, w, scratch, j0, j1, backwards)


# A batch of under 8 rows runs on one thread; a large matrix (from 1 MiB: hidden 256 and up) is
# then split by columns instead, over the caller's numba threads. Each thread keeps its share of
# the panels, which stays in its own core's cache from step to step: LSTM(512)'s 4 MiB recurrent
# product at batch 1 89 -> 22 us on 2 cores (Intel Xeon, 2 MiB L2 each). A launch costs about
# 4 us, more than a whole step at hidden 128. Batches of 8 to 16 stepped in one call (`StepProgram`)
# split only matrices of 2 MiB or more: one that fits a core's L2 gains less from the split than
# from splitting rows layer by layer (bench/RESULTS.md, "Batches 8 to 64 in one call").
#
# The time loops reach the parallel code through its address, passed in at run time with the
# thread count (`column_split`): a compiled function that calls parallel code directly, or reads
# numba's thread count, cannot be cached, and every kernel that steps a cell would then compile
# again in each process.
_SPLIT_MIN_BYTES, _SPLIT_MIN_BYTES_MANY_ROWS, _SPLIT_MAX_ROWS = 1 << 20, 2 << 20, 16


@njit(**_jit)
def _splits(rows, matrix_bytes):
    """Whether a product of `rows` rows by a float32 matrix of `matrix_bytes` splits by columns:
    from 8 rows only where its panels serve them (with AVX-512; elsewhere sgemm takes them)."""
    if rows < _BLAS_ROWS:
        return matrix_bytes >= _SPLIT_MIN_BYTES
    return rows <= _SPLIT_MAX_ROWS and rows < _PACKED_MAX_ROWS and matrix_bytes >= _SPLIT_MIN_BYTES_MANY_ROWS


_p32 = types.CPointer(types.float32)


@functools.cache
def _split_packed_product():
    """The parallel product as a cached `cfunc`, compiled (or loaded) at its first use, not at
    import: loading parallel code starts numba's threading layer."""

    @cfunc(types.void(_p32, types.intp, _p32, types.intp, types.intp, _p32, _p32, types.intp, types.intp, types.intp,
                      types.intp, types.boolean, types.intp), parallel=True, **_jit)
    def split_packed_product(z, z_stride, a, a_stride, rows, matrix, panels, inputs, width, j0, j1, backwards, parts):
        """`add_packed_product` for z [rows, width] (rows `z_stride` floats apart) += a [rows, inputs]
        (rows `a_stride` apart) @ the PackedMatrix (matrix, panels), its panels of columns j0..j1
        shared out over `parts` threads."""
        z_rows = numba.carray(z, (rows, z_stride))[:, :width]
        a_rows = numba.carray(a, (rows, a_stride))[:, :inputs]
        w = PackedMatrix(numba.carray(matrix, (inputs, width)),
                         numba.carray(panels, (-(-width // packed.PANEL), inputs, packed.PANEL)))
        first, end = j0 // packed.PANEL, -(-j1 // packed.PANEL)
        for part in prange(parts):
            lo = max(j0, (first + (end - first) * part // parts) * packed.PANEL)
            hi = min(j1, (first + (end - first) * (part + 1) // parts) * packed.PANEL)
            if lo < hi:
                add_packed_product(z_rows, a_rows, w, lo, hi, backwards)
    return split_packed_product


def split_address(matrices: list, rows: int) -> int:
    """The address of the parallel product (`_split_packed_product`) when one of `matrices` is a
    float32 matrix that `rows` rows multiply split by columns (`_splits`); else 0."""
    if any(_splits(rows, w.shape[0] * w.shape[1] * 4) for w in matrices if isinstance(w, (np.ndarray, PackedMatrix))):
        return _split_packed_product().address
    return 0


_NO_SPLIT = (0, 1)


def column_split(matrices: list, rows: int) -> tuple[int, int]:
    """What `_step_product` takes to split a step's products by `matrices` over the calling
    thread's numba threads: (`split_address`, thread count), or _NO_SPLIT. (Read here: numba's
    thread count read inside compiled code would keep that code out of the cache.)"""
    address = split_address(matrices, rows)
    threads = numba.get_num_threads() if address else 1
    return (address, threads) if threads > 1 else _NO_SPLIT


@intrinsic
def _call_split(typingctx, address, z, a, w, j0, j1, backwards, parts):
    """Call `_split_packed_product` at `address` for z += a @ w (arrays with dense rows, w a PackedMatrix)."""
    def codegen(context, builder, signature, args):
        z_array, a_array = (cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i])
                            for i in (1, 2))
        matrix_type, panels_type = signature.args[3].types
        matrix = cgutils.create_struct_proxy(matrix_type)(context, builder, value=builder.extract_value(args[3], 0))
        panels = cgutils.create_struct_proxy(panels_type)(context, builder, value=builder.extract_value(args[3], 1))
        four = ir.Constant(ir.IntType(64), 4)
        intp = [context.cast(builder, args[i], signature.args[i], types.intp) for i in (4, 5, 7)]
        values = [z_array.data, builder.sdiv(builder.extract_value(z_array.strides, 0), four),
                  a_array.data, builder.sdiv(builder.extract_value(a_array.strides, 0), four),
                  builder.extract_value(z_array.shape, 0), matrix.data, panels.data,
                  builder.extract_value(matrix.shape, 0), builder.extract_value(matrix.shape, 1),
                  intp[0], intp[1], context.cast(builder, args[6], signature.args[6], types.boolean), intp[2]]
        function = ir.FunctionType(ir.VoidType(), [v.type for v in values])
        builder.call(builder.inttoptr(args[0], function.as_pointer()), values)
        return context.get_dummy_value()
    return types.void(address, z, a, w, j0, j1, backwards, parts), codegen


def _step_product(z, a, w, scratch, j0, j1, backwards, split):
    """`_product` in a cell's step; `split`: (address, threads) from `column_split` shares a large
    matrix's columns out over threads ((0, 1) inside parallel regions: numba nests none)."""


@overload(_step_product, jit_options=_jit, inline="always")
def _step_product_by_type(z, a, w, scratch, j0, j1, backwards, split):
    if not _is_packed(w):
        return lambda z, a, w, scratch, j0, j1, backwards, split: _product(z, a, w, scratch, j0, j1, backwards)

    def product(z, a, w, scratch, j0, j1, backwards, split):
        address, parts = split
        if (address != 0 and parts > 1 and _splits(a.shape[0], w.matrix.size * 4)
                and a.strides[1] == 4 and z.strides[1] == 4):
            _call_split(address, z, a, w, j0, j1, backwards, parts)
        else:
            add_packed_product(z, a, w, j0, j1, backwards)
    return product


@overload(_scratch, jit_options=_jit)
def _scratch_by_type(w, other, rows, inputs, width):
    if all(isinstance(t, types.Array) or _is_packed(t) for t in (w, other)):
        return lambda w, other, rows, inputs, width: (np.empty((0, 0), np.int8), np.empty((0, 0), np.int32),
                                                      np.empty(0, np.float32))
    # acc spans whole panels. The pad columns of q (to a whole group) may hold the other product's
    # values (they share q); the pad rows of the packed weights are zero, so they add nothing
    return lambda w, other, rows, inputs, width: (np.zeros((rows, -(-inputs // GROUP) * GROUP), np.int8),
                                                  np.empty((rows, -(-width // PANEL) * PANEL), np.int32),
                                                  np.empty(rows, np.float32))


ROW_SPLIT_MIN = _BLAS_ROWS  # from this many rows the layer kernels split rows over threads


def _row_blocks(rows: int) -> int:
    """Rows per parallel task: an even share per thread, whole blocks of four; 0: the rows run in one
    call (whose products may still split by columns, `column_split`)."""
    if rows < ROW_SPLIT_MIN:
        return 0
    threads = numba.get_num_threads()
    return 0 if threads == 1 else max(4, (-(-rows // threads) + 3) // 4 * 4)


@njit(**_jit)
def _dense_into(x, kernel, bias, act, out, scratch):
    """out = act(bias + x @ kernel) with the caller's `_scratch` work arrays."""
    x, kernel, bias, out = _borrowed(x), _borrowed(kernel), _borrowed(bias), _borrowed(out)
    for n in range(x.shape[0]):
        _copy(out[n], bias)
    _product(out, x, kernel, scratch, 0, out.shape[1], False)
    for n in range(x.shape[0]):
        _activate_row(out[n], act)


@njit(**_jit)
def _dense_rows(x, kernel, bias, act, out):
    _dense_into(x, kernel, bias, act, out, _scratch(kernel, kernel, x.shape[0], x.shape[1], out.shape[1]))


@njit(parallel=True, **_jit)
def _dense_parallel(x, kernel, bias, act, out, block):
    for i in prange((x.shape[0] + block - 1) // block):
        lo, hi = i * block, min((i + 1) * block, x.shape[0])
        _dense_rows(x[lo:hi], kernel, bias, act, out[lo:hi])


def dense(x, kernel, bias, act, out):
    block = _row_blocks(x.shape[0])
    with blas.single_threaded(x.shape[0] >= _BLAS_ROWS):
        if block:
            _dense_parallel(x, kernel, bias, act, out, block)
        else:
            _dense_rows(x, kernel, bias, act, out)


_LSTM, _GRU, _RNN = range(3)
_NONE = np.zeros((1, 0), np.float32)  # the cell state of cells that have none: c[0] is an empty row


@njit(**_jit)
def _clip(v, clip):
    return min(max(v, -clip), clip) if clip > 0.0 else v


@njit(**_jit)
def _lstm_update(z, h, c, act, rec_act, out_act):
    """The plain LSTM cell from its gate sums z [i f g o]: c and h updated in place."""
    wide_vectors()
    units = h.shape[0]
    gate_i, gate_f, cand, gate_o = z[:units], z[units:2 * units], z[2 * units:3 * units], z[3 * units:]
    if act == A.TANH and rec_act == A.SIGMOID and out_act == A.TANH:
        # Keras's default cell in four passes instead of six and without calls to `_activate`
        # (a call per row is not free): the update of 256 rows of 32 units 37 -> 27 us
        gates_if = z[:2 * units]
        for j in range(gates_if.shape[0]):
            gates_if[j] = A.sigmoid32(gates_if[j])
        for j in range(units):
            cand[j] = A.tanh32(cand[j])
        for j in range(units):
            gate_o[j] = A.sigmoid32(gate_o[j])
        for j in range(units):
            cell = gate_f[j] * c[j] + gate_i[j] * cand[j]
            c[j] = cell
            h[j] = gate_o[j] * A.tanh32(cell)
        return
    _activate(rec_act, z, 0, 2 * units)
    _activate(act, z, 2 * units, 3 * units)
    _activate(rec_act, z, 3 * units, 4 * units)
    for j in range(units):
        c[j] = gate_f[j] * c[j] + gate_i[j] * cand[j]
        cand[j] = c[j]
    _activate(out_act, cand, 0, units)
    for j in range(units):
        h[j] = gate_o[j] * cand[j]


@njit(**_jit)
def _lstm_update_general(z, h, c, act, rec_act, out_act, peephole, clip, input_forget):
    """The LSTM cell with ONNX's options: peepholes, clipped gate sums, coupled input-forget gate."""
    units = h.shape[0]
    peep = peephole.shape[0] > 0
    for j in range(units):
        zi, zf, zo = z[j], z[units + j], z[3 * units + j]
        if peep:
            zi += peephole[j] * c[j]
            zf += peephole[units + j] * c[j]
        gate_i = A.apply(rec_act, _clip(zi, clip))
        gate_f = 1.0 - gate_i if input_forget else A.apply(rec_act, _clip(zf, clip))
        cell_j = gate_f * c[j] + gate_i * A.apply(act, _clip(z[2 * units + j], clip))
        c[j] = cell_j
        if peep:
            zo += peephole[2 * units + j] * cell_j
        h[j] = A.apply(rec_act, _clip(zo, clip)) * A.apply(out_act, cell_j)


@njit(**_jit)
def _gru_update(xz, hz, h, act, rec_act, reset_after):
    """The GRU cell from its input sums xz and recurrent sums hz [update reset candidate]."""
    wide_vectors()
    units = h.shape[0]
    gates, cand, hz_cand = xz[:2 * units], xz[2 * units:], hz[2 * units:]
    if act == A.TANH and rec_act == A.SIGMOID:  # the default cell in two passes instead of five, as the LSTM's
        hz_gates = hz[:2 * units]
        for j in range(gates.shape[0]):
            gates[j] = A.sigmoid32(gates[j] + hz_gates[j])
        update, reset = gates[:units], gates[units:]
        for j in range(units):
            cand_j = A.tanh32(cand[j] + reset[j] * hz_cand[j] if reset_after else cand[j] + hz_cand[j])
            h[j] = update[j] * h[j] + (1.0 - update[j]) * cand_j
        return
    for j in range(2 * units):
        gates[j] += hz[j]
    _activate(rec_act, gates, 0, 2 * units)
    reset = gates[units:]
    for j in range(units):
        cand[j] += reset[j] * hz_cand[j] if reset_after else hz_cand[j]
    _activate(act, cand, 0, units)
    for j in range(units):
        h[j] = gates[j] * h[j] + (1.0 - gates[j]) * cand[j]


@njit(inline="always", **_jit)
def _cell_step(cell, x_t, live, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
               peephole, out_act, clip, input_forget, h, c, xz, hz, rh, scratch, backwards, split):
    """One step of a cell for rows x_t [rows, I] with states h [rows, units] (and an LSTM's c),
    updated in place where `live` [rows] is true (a masked row keeps its state, by Keras's rule).
    The caller flips `backwards` (the order of the weight panels) from step to step; `split`: see
    `_step_product`.

    The gate sums are one matrix product for all rows (bias + x_t @ kernel + h @ recurrent_kernel);
    xz [rows, gates * units] and, for a GRU, hz (the same shape) and rh ([rows, units] unless
    reset_after) are the caller's work arrays.
    """
    x_t, live, kernel, recurrent_kernel = _borrowed(x_t), _borrowed(live), _borrowed(kernel), _borrowed(recurrent_kernel)
    bias, recurrent_bias, peephole = _borrowed(bias), _borrowed(recurrent_bias), _borrowed(peephole)
    h, c, xz, hz, rh = _borrowed(h), _borrowed(c), _borrowed(xz), _borrowed(hz), _borrowed(rh)
    rows, units, width = x_t.shape[0], h.shape[1], bias.shape[0]
    for i in range(rows):
        _copy(xz[i], bias)
    _step_product(xz, x_t, kernel, scratch, 0, width, backwards, split)
    if cell == _GRU:
        for i in range(rows):
            _copy(hz[i], recurrent_bias)
        _step_product(hz, h, recurrent_kernel, scratch, 0, width if reset_after else 2 * units, backwards, split)
        if not reset_after:  # the candidate's recurrent product sees r * h
            for i in range(rows):  # in place: `a[i, :] = b + c` would allocate b + c per row and step
                r_i, x_r, h_r = rh[i], xz[i, units:2 * units], hz[i, units:2 * units]
                for j in range(units):
                    r_i[j] = x_r[j] + h_r[j]
                _activate(rec_act, r_i, 0, units)
                for j in range(units):
                    r_i[j] *= h[i, j]
            _step_product(hz, rh, recurrent_kernel, scratch, 2 * units, 3 * units, backwards, split)
    else:
        _step_product(xz, h, recurrent_kernel, scratch, 0, width, backwards, split)
    plain = peephole.shape[0] == 0 and clip <= 0.0 and not input_forget
    for i in range(rows):
        if not live[i]:
            continue
        if cell == _GRU:
            _gru_update(xz[i], hz[i], h[i], act, rec_act, reset_after)
        elif cell == _RNN:
            _activate(act, xz[i], 0, units)
            _copy(h[i], xz[i])
        elif plain:
            _lstm_update(xz[i], h[i], c[i], act, rec_act, out_act)
        else:
            _lstm_update_general(xz[i], h[i], c[i], act, rec_act, out_act, peephole, clip, input_forget)


@njit(**_jit)
def _sequence_rows(cell, lo, hi, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act,
                   reset_after, peephole, out_act, clip, input_forget, go_backwards, return_sequences,
                   zero_output_for_mask, h, c, out, split):
    """Run a cell over the sequences lo..hi of x [B, T, I], all rows together step by step
    (`split`: as in `_cell_step`)."""
    x, mask, h, c, out = _borrowed(x), _borrowed(mask), _borrowed(h), _borrowed(c), _borrowed(out)
    steps, rows, units = x.shape[1], hi - lo, h.shape[1]
    width = bias.shape[0]
    hb = h[lo:hi]
    cb = c[lo:hi]  # a cell without one gets _NONE: never indexed
    xz = np.empty((rows, width), np.float32)
    hz = np.empty((rows, width if cell == _GRU else 0), np.float32)
    rh = np.empty((rows, units if cell == _GRU and not reset_after else 0), np.float32)
    scratch = _scratch(kernel, recurrent_kernel, rows, max(x.shape[2], units), width)
    for s in range(steps):
        t = steps - 1 - s if go_backwards else s
        live = mask[lo:hi, t]
        _cell_step(cell, x[lo:hi, t], live, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act,
                   reset_after, peephole, out_act, clip, input_forget, hb, cb, xz, hz, rh, scratch, s % 2 == 1,
                   split)
        if return_sequences:
            for i in range(rows):
                if live[i] or not zero_output_for_mask:
                    _copy(out[lo + i, s], hb[i])
                else:
                    out[lo + i, s, :] = 0.0
    if not return_sequences:
        for i in range(rows):
            _copy(out[lo + i, 0], hb[i])


@njit(parallel=True, **_jit)
def _sequence_parallel(cell, x, mask, kernel, recurrent_kernel, bias, recurrent_bias, act, rec_act, reset_after,
                       peephole, out_act, clip, input_forget, go_backwards, return_sequences,
                       zero_output_for_mask, h, c, out, block):
    batch = x.shape[0]
    for i in prange((batch + block - 1) // block):
        _sequence_rows(cell, i * block, min((i + 1) * block, batch), x, mask, kernel, recurrent_kernel, bias,
                       recurrent_bias, act, rec_act, reset_after, peephole, out_act, clip, input_forget,
                       go_backwards, return_sequences, zero_output_for_mask, h, c, out, _NO_SPLIT)


def _sequence(cell, x, *args):
    """Rows split over threads when the batch is large enough to pay for it, else one call (whose
    products by large matrices split by columns)."""
    block = _row_blocks(x.shape[0])
    with blas.single_threaded(x.shape[0] >= _BLAS_ROWS):
        if block:
            _sequence_parallel(cell, x, *args, block)
        else:
            _sequence_rows(cell, 0, x.shape[0], x, *args, column_split(args[1:3], x.shape[0]))


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


# A stream's step for a small batch as one compiled call. Calling the layer kernels one by one costs
# about as much as the step's maths at hidden 128 (argument unboxing, scratch arrays, the runtime's
# Python per layer; bench/RESULTS.md, "Streaming"), so `StepProgram` lists the layers as rows of an
# int64 table and their arrays by address, and `StepProgram.run` runs the whole table in one call of
# three arguments. Every op calls the same helpers as the whole-sequence kernels, so a step's
# outputs are bit-identical to theirs on one thread (on more, from 8 rows, the layer kernels split
# rows into blocks, and a block of under 8 rows takes our loops where the program's rows take sgemm).

(_OP_DENSE, _OP_ACTIVATION, _OP_EMBEDDING, _OP_BATCH_NORM, _OP_LAYER_NORM, _OP_MERGE, _OP_MASKING, _OP_COMBINE_MASKS,
 _OP_CAUSAL_CONV, _OP_RECURRENT, _OP_RESTART) = range(11)
_OP_FIELDS = 37
MERGE_CONCATENATE = 3  # beside the elementwise MERGE_* codes
STEP_PROGRAM_MAX_MERGE = (_OP_FIELDS - 6) // 2  # inputs of a merge op: (index, width) pairs after 6 fields
# Batches past 64 always run layer by layer: their rows split over threads; from 8 rows the runtime
# picks per call (`runtime._program_pays`).
STEP_PROGRAM_MAX_BATCH = 64


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a void pointer, for numba.carray."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@njit(**_jit)
def _matrix(addresses, index, rows, cols):
    return numba.carray(_pointer(addresses[index]), (rows, cols), np.float32)


@njit(**_jit)
def _vector(addresses, index, length):
    return numba.carray(_pointer(addresses[index]), length, np.float32)


@njit(**_jit)
def _mask(addresses, index, length):
    return numba.carray(_pointer(addresses[index]), length, np.bool_)


@njit(**_jit)
def _float_at(p, field):
    """The float64 that table row p holds as bits in `field` (see `_bits`)."""
    return p[field:field + 1].view(np.float64)[0]


@njit(**_jit)
def _int8_matrix(addresses, p, field, scale_field, rows, cols):
    """The QuantizedMatrix of op row p: its packed panels at p[field] (`pack_panels` fixed their
    shape), its column scales at p[scale_field] and its input scale in the field after."""
    panels = numba.carray(_pointer(addresses[p[field]]), (-(-cols // PANEL), -(-rows // GROUP), GROUP * PANEL),
                          np.uint8)
    return QuantizedMatrix(panels, _vector(addresses, p[scale_field], cols), _float_at(p, scale_field + 1), rows)


@njit(**_jit)
def _packed_matrix(addresses, p, field, panels_field, rows, cols):
    """The PackedMatrix of op row p: its row-major data at p[field], its panels at p[panels_field]."""
    panels = numba.carray(_pointer(addresses[p[panels_field]]), (-(-cols // packed.PANEL), rows, packed.PANEL),
                          np.float32)
    return PackedMatrix(_matrix(addresses, p[field], rows, cols), panels)


@njit(**_jit)
def _op_scratch(p, field, addresses, batch):
    """The `_scratch` work arrays an op row holds from `field` on (see `StepProgram._scratch_fields`)."""
    return (numba.carray(_pointer(addresses[p[field]]), (batch, p[field + 1]), np.int8),
            numba.carray(_pointer(addresses[p[field + 2]]), (batch, p[field + 3]), np.int32),
            _vector(addresses, p[field + 4], batch))


@njit(**_jit)
def _recurrent_op(p, addresses, batch, kernel, recurrent_kernel):
    """A recurrent op row (fields as in `StepProgram.recurrent`) with its matrices ready."""
    cell, inputs, units, width = p[3], p[4], p[5], p[6]
    gru, reset_after = cell == _GRU, p[20] != 0
    live, h = _mask(addresses, p[33], batch), _matrix(addresses, p[32], batch, units)
    scratch = _op_scratch(p, 27, addresses, batch)
    _cell_step(cell, _matrix(addresses, p[2], batch, inputs), live, kernel, recurrent_kernel,
               _vector(addresses, p[9], width), _vector(addresses, p[10], width if gru else 0),
               p[17], p[18], reset_after, _vector(addresses, p[11], p[12]), p[19], _float_at(p, 22), p[21] != 0,
               h, _matrix(addresses, p[13], batch, units if cell == _LSTM else 0),
               _matrix(addresses, p[14], batch, width),
               _matrix(addresses, p[15], batch, width if gru else 0),
               _matrix(addresses, p[16], batch, units if gru and not reset_after else 0), scratch,
               p[34] != 0, (p[35], p[36]))
    p[34] ^= 1  # the panel order of the next step
    if p[1] != p[32]:  # zero_output_for_mask: a masked row's output is zeros, its state stays
        out = _matrix(addresses, p[1], batch, units)
        for i in range(batch):
            if live[i]:
                _copy(out[i], h[i])
            else:
                out[i, :] = 0.0


@njit(**_jit)
def _run_program(program, addresses, batch, first, end):
    """Run the ops in rows first..end-1 of a `StepProgram` table in order (row 0 is its header);
    each op row: [op, dst, src, fields...]."""
    program, addresses = _borrowed(program), _borrowed(addresses)
    for n in range(first, end):
        p = program[n]
        op, dst, src = p[0], p[1], p[2]
        if op == _OP_DENSE:  # inputs, units, kernel, bias, activation, int8 scale (-1: float32), input scale, scratch
            x, bias, out = _matrix(addresses, src, batch, p[3]), _vector(addresses, p[6], p[4]), _matrix(addresses, dst, batch, p[4])
            scratch = _op_scratch(p, 10, addresses, batch)
            if p[8] < 0:
                _dense_into(x, _matrix(addresses, p[5], p[3], p[4]), bias, p[7], out, scratch)
            else:
                _dense_into(x, _int8_matrix(addresses, p, 5, 8, p[3], p[4]), bias, p[7], out, scratch)
        elif op == _OP_ACTIVATION:  # width, activation
            x, out = _matrix(addresses, src, batch, p[3]), _matrix(addresses, dst, batch, p[3])
            for i in range(batch):
                _copy(out[i], x[i])
                _activate_row(out[i], p[4])
        elif op == _OP_EMBEDDING:  # table rows, width, table, mask of non-zero ids (-1: none)
            ids = numba.carray(_pointer(addresses[src]), batch, np.int64)
            table, out = _matrix(addresses, p[5], p[3], p[4]), _matrix(addresses, dst, batch, p[4])
            for i in range(batch):
                _copy(out[i], table[ids[i]])
            if p[6] >= 0:
                mask = _mask(addresses, p[6], batch)
                for i in range(batch):
                    mask[i] = ids[i] != 0
        elif op == _OP_MASKING:  # width, mask value (float64 bits), mask
            x, out, mask = _matrix(addresses, src, batch, p[3]), _matrix(addresses, dst, batch, p[3]), _mask(addresses, p[5], batch)
            value = _float_at(p, 4)
            for i in range(batch):
                keep = False
                for j in range(p[3]):
                    keep = keep or x[i, j] != value
                mask[i] = keep
                for j in range(p[3]):
                    out[i, j] = x[i, j] if keep else 0.0
        elif op == _OP_CAUSAL_CONV:  # inputs, outputs, taps, dilation, kernel, bias, activation, window, full
            inputs, taps, dilation = p[3], p[5], p[6]
            kept = dilation * (taps - 1)  # the steps before this one that the taps reach
            x, out = _matrix(addresses, src, batch, inputs), _matrix(addresses, dst, batch, p[4])
            kernel = numba.carray(_pointer(addresses[p[7]]), (taps, inputs, p[4]), np.float32)
            window = numba.carray(_pointer(addresses[p[10]]), (batch, kept, inputs), np.float32)
            full = numba.carray(_pointer(addresses[p[11]]), (batch, kept + 1, inputs), np.float32)
            for i in range(batch):  # as shift_in: the kept steps, then this one; keep the newest
                full[i, :kept] = window[i]
                full[i, kept] = x[i]
                window[i] = full[i, 1:]
                _conv_output(full[i], 0, kernel, _vector(addresses, p[8], p[4]), dilation, p[9], out[i])
        elif op == _OP_COMBINE_MASKS:  # all (1) or any (0), count, then the masks
            out = _mask(addresses, dst, batch)
            out[:] = _mask(addresses, p[5], batch)
            for k in range(1, p[4]):
                other = _mask(addresses, p[5 + k], batch)
                for i in range(batch):
                    out[i] = (out[i] and other[i]) if p[3] else (out[i] or other[i])
        elif op == _OP_BATCH_NORM:  # width, scale, offset
            x, out = _matrix(addresses, src, batch, p[3]), _matrix(addresses, dst, batch, p[3])
            for i in range(batch):
                _batch_norm_row(x[i], _vector(addresses, p[4], p[3]), _vector(addresses, p[5], p[3]), out[i])
        elif op == _OP_LAYER_NORM:  # width, gamma, beta, epsilon (float64 bits)
            x, out = _matrix(addresses, src, batch, p[3]), _matrix(addresses, dst, batch, p[3])
            for i in range(batch):
                _layer_norm_row(x[i], _vector(addresses, p[4], p[3]), _vector(addresses, p[5], p[3]),
                                _float_at(p, 6), out[i])
        elif op == _OP_MERGE:  # width, merge code, count, then (index, width) of each input
            out, code, count = _matrix(addresses, dst, batch, p[3]), p[4], p[5]
            if code == MERGE_CONCATENATE:
                column = 0
                for k in range(count):
                    width = p[7 + 2 * k]
                    out[:, column:column + width] = _matrix(addresses, p[6 + 2 * k], batch, width)
                    column += width
            else:
                flat = _vector(addresses, dst, batch * p[3])
                flat[:] = _vector(addresses, p[6], batch * p[3])
                for k in range(1, count):
                    _merge_in(flat, _vector(addresses, p[6 + 2 * k], batch * p[3]), code)
                if code == MERGE_AVERAGE:
                    flat /= count
        elif op == _OP_RESTART:  # floats, their initial values (-1: zeros)
            state = _vector(addresses, dst, p[3])
            if p[4] < 0:
                for j in range(p[3]):
                    state[j] = 0.0
            else:
                _copy(state, _vector(addresses, p[4], p[3]))
        else:  # recurrent: float32 (packed) or int8 matrices, each combination its own call
            inputs, units, width = p[4], p[5], p[6]
            if p[23] < 0 and p[25] < 0:
                _recurrent_op(p, addresses, batch, _packed_matrix(addresses, p, 7, 24, inputs, width),
                              _packed_matrix(addresses, p, 8, 26, units, width))
            elif p[23] < 0:
                _recurrent_op(p, addresses, batch, _packed_matrix(addresses, p, 7, 24, inputs, width),
                              _int8_matrix(addresses, p, 8, 25, units, width))
            elif p[25] < 0:
                _recurrent_op(p, addresses, batch, _int8_matrix(addresses, p, 7, 23, inputs, width),
                              _packed_matrix(addresses, p, 8, 26, units, width))
            else:
                _recurrent_op(p, addresses, batch, _int8_matrix(addresses, p, 7, 23, inputs, width),
                              _int8_matrix(addresses, p, 8, 25, units, width))


_WRONG_SHAPE = -2


@njit(**_jit)
def _step_floats(program, addresses, x):
    batch, width = program[0, 0], program[0, 1]
    if x.shape[0] != batch or x.shape[1] != width:
        return _WRONG_SHAPE
    step = _matrix(addresses, 0, batch, width)
    for i in range(batch):
        _copy(step[i], x[i])
    _run_program(program, addresses, batch, 1, program[0, 6])
    return -1


@njit(**_jit)
def _step_ids(program, addresses, ids):
    batch, limit = program[0, 0], program[0, 2]
    if ids.shape[0] != batch:
        return _WRONG_SHAPE
    for i in range(batch):  # checked before anything runs: a bad id leaves the state as it was
        if ids[i] < 0 or ids[i] >= limit:
            return i
    numba.carray(_pointer(addresses[0]), batch, np.int64)[:] = ids
    _run_program(program, addresses, batch, 1, program[0, 6])
    return -1


@njit(**_jit)
def _emit(program, addresses, out, s):
    """out[:, s] = the program's output (out [batch, steps or 1, width])."""
    result = _matrix(addresses, program[0, 3], out.shape[0], out.shape[2])
    for i in range(out.shape[0]):
        _copy(out[i, s], result[i])


@njit(**_jit)
def _after_step(program, addresses, out, every, t, steps):
    """What follows step t of a whole sequence: with `every`, the step's output into out [batch,
    steps, width]; after the last step the deferred ops, and without `every` the output into out[:, 0]."""
    if every:
        _emit(program, addresses, out, t)
    if t == steps - 1:
        _run_program(program, addresses, out.shape[0], program[0, 5], program[0, 6])
        if not every:
            _emit(program, addresses, out, 0)


@njit(**_jit)
def _sequence_floats(program, addresses, x, out, every):
    """`_step_floats` for every step of x [batch, T, width] in turn, the outputs into `out`
    (`_after_step`), except that deferred ops run only after the last step; the restart rows
    first."""
    program, addresses, x, out = _borrowed(program), _borrowed(addresses), _borrowed(x), _borrowed(out)
    batch, width, steps = program[0, 0], program[0, 1], x.shape[1]
    if x.shape[0] != batch or x.shape[2] != width:
        return _WRONG_SHAPE
    _run_program(program, addresses, batch, program[0, 6], program.shape[0])
    step = _matrix(addresses, 0, batch, width)
    for t in range(steps):
        for i in range(batch):
            _copy(step[i], x[i, t])
        _run_program(program, addresses, batch, 1, program[0, 5])
        _after_step(program, addresses, out, every, t, steps)
    return -1


@njit(**_jit)
def _sequence_ids(program, addresses, ids, out, every):
    """`_step_ids` for every step of ids [batch, T]; a bad id (its flat index is returned) stops
    the call before anything runs."""
    program, addresses, ids, out = _borrowed(program), _borrowed(addresses), _borrowed(ids), _borrowed(out)
    batch, limit, steps = program[0, 0], program[0, 2], ids.shape[1]
    if ids.shape[0] != batch:
        return _WRONG_SHAPE
    for i in range(batch):
        for t in range(steps):
            if ids[i, t] < 0 or ids[i, t] >= limit:
                return i * steps + t
    _run_program(program, addresses, batch, program[0, 6], program.shape[0])
    step = numba.carray(_pointer(addresses[0]), batch, np.int64)
    for t in range(steps):
        for i in range(batch):
            step[i] = ids[i, t]
        _run_program(program, addresses, batch, 1, program[0, 5])
        _after_step(program, addresses, out, every, t, steps)
    return -1


_CELLS = {"lstm": _LSTM, "gru": _GRU, "rnn": _RNN}
_ALL_ROWS = 1  # the program's all-true mask


def _row(fields: list) -> list:
    """An op row padded to the table's width."""
    if len(fields) > _OP_FIELDS:
        raise ValueError(f"an op row holds at most {_OP_FIELDS} fields, got {len(fields)}")
    return fields + [0] * (_OP_FIELDS - len(fields))


def _check(array: np.ndarray, shape: tuple, what: str, dtype=np.float32) -> None:
    """ValueError unless `array` is `dtype` of `shape`: the kernel reads exactly that."""
    if array.dtype != dtype or array.shape != tuple(shape):
        raise ValueError(f"{what} is {array.dtype} {array.shape}; the op reads {np.dtype(dtype)} {tuple(shape)}")


def _bits(value: float) -> int:
    """A float64 as the int64 of its bits: how a table row holds a float (read back with .view)."""
    return int(np.float64(value).view(np.int64))


class StepProgram:
    """A stream's step as one compiled call, built layer by layer (see `_run_program`).

    It holds every array its table points into (weights, the stream's states, work arrays and
    each layer's output), so the addresses stay valid while it lives, and checks each array's
    dtype and shape as it takes it. Each layer method adds one op and returns the index of that
    op's output [batch, width] (with its mask, for `embedding` and `masking`), which later ops take
    as `src`; `combine_masks` returns a mask's index.

    `run` takes one step; `run_sequence` whole sequences, stepping inside the call. Ops added
    while `deferred` is true run after every `run` step but only once, after the last step, in
    `run_sequence`: for the layers after a recurrent layer that returns only its last state, which
    no other op may read.
    """

    def __init__(self, batch: int, input_width: int, id_limit: int = 0):
        """input_width: features per step, or 0 when the input is token ids [batch] < id_limit."""
        self.batch = batch
        self._arrays = []
        self._rows = [_row([batch, input_width, id_limit])]  # the header
        self._deferred_rows, self._restart_rows = [], []
        self.deferred = False
        self._step, self._sequence = (_step_floats, _sequence_floats) if input_width else (_step_ids, _sequence_ids)
        self.input = self._hold(np.zeros((batch, input_width), np.float32) if input_width
                                else np.zeros(batch, np.int64))
        self._new_mask()  # index _ALL_ROWS: every row steps, for recurrent layers without a mask
        self._table = self._addresses = self.output = None
        self._calls_sgemm = batch >= _BLAS_ROWS  # `add_product` then calls OpenBLAS, held here at one thread
        # whether a step's products may split over threads (`_step_product`): callers then take
        # the thread count (`threads_now`) and, when over 1, hold numba's threading layer for
        # themselves (its ``workqueue`` layer aborts on concurrent use)
        self.splits_columns = False
        self._threads = 1  # the thread count their op rows hold (`threads_now`)

    def __reduce__(self):  # a copy would point into this program's arrays
        raise TypeError("a StepProgram cannot be copied or pickled; build one per stream")

    def __copy__(self):
        self.__reduce__()

    def __deepcopy__(self, memo):
        self.__reduce__()

    def _hold(self, array: np.ndarray) -> int:
        if not array.flags.c_contiguous:
            raise ValueError("a StepProgram points into C-contiguous arrays only")
        self._arrays.append(array)
        return len(self._arrays) - 1

    def _source(self, src: int, width: int | None, dtype=np.float32) -> int:
        """src, checked to be a [batch, width] value of `dtype` (width None: [batch], as token ids
        and masks are)."""
        _check(self._arrays[src], (self.batch,) if width is None else (self.batch, width), f"op input {src}", dtype)
        return src

    def _fixed(self, array: np.ndarray, shape: tuple, what: str, dtype=np.float32) -> int:
        """Hold `array` once it is checked to be `dtype` of `shape`."""
        _check(array, shape, what, dtype)
        return self._hold(array)

    def _weights(self, array: np.ndarray, shape: tuple | None = None, what: str = "a weight") -> int:
        """Hold float32 weights (no copy for the usual float32 ones), checked against `shape` if given."""
        array = np.ascontiguousarray(array, np.float32)
        return self._fixed(array, array.shape if shape is None else shape, what)

    def _new_mask(self) -> int:
        return self._hold(np.ones(self.batch, np.bool_))

    def _append(self, row: list) -> None:
        (self._deferred_rows if self.deferred else self._rows).append(row)

    def _add(self, op: int, width: int, src: int, *fields) -> int:
        dst = self._hold(np.zeros((self.batch, width), np.float32))
        self._append(_row([op, dst, src, *fields]))
        return dst

    def _product_matrix(self, w: np.ndarray | PackedMatrix | QuantizedMatrix, rows: int, cols: int,
                        packed_too: bool = False) -> tuple[int, int, int]:
        """The (data, scale, input scale) fields of a float32 [rows, cols] matrix (scale -1) or a
        QuantizedMatrix of that shape. With `packed_too` a float32 matrix comes as a PackedMatrix
        (packed here if need be), its panels in the third field."""
        if isinstance(w, QuantizedMatrix):
            panels = (-(-cols // PANEL), -(-rows // GROUP), GROUP * PANEL)  # as pack_panels makes them
            return (self._fixed(w.panels, panels, "an int8 matrix's panels", np.uint8),
                    self._weights(w.scale, (cols,), "an int8 matrix's scales"), _bits(w.input_scale))
        if not packed_too:
            return self._weights(w, (rows, cols), "a matrix"), -1, 0
        if not isinstance(w, PackedMatrix):
            w = PackedMatrix.from_matrix(w)
        panels = (-(-cols // packed.PANEL), rows, packed.PANEL)  # as packed.pack_panels makes them
        return self._weights(w.matrix, (rows, cols), "a matrix"), -1, self._fixed(w.panels, panels, "a matrix's panels")

    def _scratch_fields(self, int8: bool, inputs: int, width: int) -> list:
        """The work arrays of `_scratch` for int8 products of `inputs` rows into `width` sums, as
        op fields (index, columns) x 2 + index (empty ones for float32 products)."""
        q_cols, acc_cols = (-(-inputs // GROUP) * GROUP, -(-width // PANEL) * PANEL) if int8 else (0, 0)
        return [self._hold(np.zeros((self.batch, q_cols), np.int8)), q_cols,
                self._hold(np.zeros((self.batch, acc_cols), np.int32)), acc_cols,
                self._hold(np.zeros(self.batch, np.float32))]

    def dense(self, src: int, kernel: np.ndarray | QuantizedMatrix, bias: np.ndarray, act: int) -> int:
        rows, cols = kernel.shape
        data, scale, input_scale = self._product_matrix(kernel, rows, cols)
        return self._add(_OP_DENSE, cols, self._source(src, rows), rows, cols, data,
                         self._weights(bias, (cols,), "a bias"), act, scale, input_scale,
                         *self._scratch_fields(scale >= 0, rows, cols))

    def activation(self, src: int, width: int, act: int) -> int:
        return self._add(_OP_ACTIVATION, width, self._source(src, width), width, act)

    def embedding(self, src: int, table: np.ndarray, mask_zero: bool) -> tuple[int, int | None]:
        """(output, its mask: the rows whose id is not 0, or None without mask_zero)."""
        rows, cols = table.shape
        mask = self._new_mask() if mask_zero else None
        return self._add(_OP_EMBEDDING, cols, self._source(src, None, np.int64), rows, cols, self._weights(table),
                         -1 if mask is None else mask), mask

    def masking(self, src: int, width: int, value: float) -> tuple[int, int]:
        """(output, its mask): rows whose every feature equals `value` are masked and zeroed."""
        mask = self._new_mask()
        return self._add(_OP_MASKING, width, self._source(src, width), width, _bits(value), mask), mask

    def causal_conv(self, src: int, kernel: np.ndarray, bias: np.ndarray, dilation: int, act: int,
                    window: np.ndarray | None) -> int:
        """A causal, stride-1 Conv1D step; kernel [taps, inputs, outputs]; window: the stream's
        state [batch, dilation * (taps - 1), inputs] of the steps before, updated in place (None
        for a single tap)."""
        taps, inputs, outputs = kernel.shape
        kept = dilation * (taps - 1)
        window = np.zeros((self.batch, 0, inputs), np.float32) if window is None else window
        return self._add(_OP_CAUSAL_CONV, outputs, self._source(src, inputs), inputs, outputs, taps, dilation,
                         self._weights(kernel), self._weights(bias, (outputs,), "a bias"), act,
                         self._fixed(window, (self.batch, kept, inputs), "a conv window"),
                         self._hold(np.zeros((self.batch, kept + 1, inputs), np.float32)))

    def restart_from(self, state: np.ndarray, initial: np.ndarray | None) -> None:
        """Have `run_sequence` set the state array `state` (one the ops hold) to `initial`
        (broadcast to its shape; None: zeros) before its first step."""
        index = next((i for i, held in enumerate(self._arrays) if held is state), None)
        if index is None:
            raise ValueError("a restart names a state array that no op holds")
        start = -1 if initial is None else self._hold(
            np.ascontiguousarray(np.broadcast_to(np.asarray(initial, np.float32), state.shape)))
        self._restart_rows.append(_row([_OP_RESTART, index, 0, state.size, start]))

    def combine_masks(self, masks: list[int], all_of: bool) -> int:
        """A mask: the AND (all_of) or the OR of `masks`."""
        for mask in masks:
            self._source(mask, None, np.bool_)
        dst = self._new_mask()
        self._append(_row([_OP_COMBINE_MASKS, dst, masks[0], int(all_of), len(masks), *masks]))
        return dst

    def batch_norm(self, src: int, scale: np.ndarray, offset: np.ndarray) -> int:
        width = scale.shape[0]
        return self._add(_OP_BATCH_NORM, width, self._source(src, width), width, self._weights(scale, (width,)),
                         self._weights(offset, (width,), "an offset"))

    def layer_norm(self, src: int, gamma: np.ndarray, beta: np.ndarray, epsilon: float) -> int:
        width = gamma.shape[0]
        return self._add(_OP_LAYER_NORM, width, self._source(src, width), width, self._weights(gamma, (width,)),
                         self._weights(beta, (width,), "a beta"), _bits(epsilon))

    def merge(self, sources: list[int], code: int) -> int:
        """Elementwise (a MERGE_* code) or side by side (MERGE_CONCATENATE), of at most
        STEP_PROGRAM_MAX_MERGE inputs."""
        if not 1 <= len(sources) <= STEP_PROGRAM_MAX_MERGE:
            raise ValueError(f"a merge op takes 1 to {STEP_PROGRAM_MAX_MERGE} inputs, got {len(sources)}")
        widths = [self._arrays[src].shape[-1] for src in sources]
        if code != MERGE_CONCATENATE:
            widths = [widths[0]] * len(sources)
        for src, width in zip(sources, widths):
            self._source(src, width)
        width = sum(widths) if code == MERGE_CONCATENATE else widths[0]
        pairs = [field for pair in zip(sources, widths) for field in pair]
        return self._add(_OP_MERGE, width, sources[0], width, code, len(sources), *pairs)

    def recurrent(self, cell: str, src: int, w: dict, acts: tuple, reset_after: bool, input_forget: bool,
                  clip: float, h: np.ndarray, c: np.ndarray | None, mask: int | None = None,
                  zero_masked: bool = False) -> int:
        """A forward LSTM, GRU or simple RNN step; w: its `kernel_weights` (float32 arrays, the
        matrices possibly QuantizedMatrix or PackedMatrix), acts: (act, rec_act, out_act) codes, h and c: the
        stream's state arrays, updated in place where `mask` (None: every row) is true. The op's
        output is h itself, unless `zero_masked`: then zeros for masked rows."""
        code, (inputs, width), units = _CELLS[cell], w["kernel"].shape, h.shape[-1]
        if width != {"lstm": 4, "gru": 3, "rnn": 1}[cell] * units:
            raise ValueError(f"a {cell} of {units} units has gate sums of width {width}")
        state = self._fixed(h, (self.batch, units), "the state h")
        cell_state = state if c is None else self._fixed(c, (self.batch, units), "the state c")
        peephole = w.get("peephole", np.zeros(0, np.float32))
        if peephole.shape[0] not in (0, 3 * units):
            raise ValueError(f"a peephole of {peephole.shape[0]} values for {units} units")
        kernel = self._product_matrix(w["kernel"], inputs, width, packed_too=True)
        recurrent = self._product_matrix(w["recurrent_kernel"], units, width, packed_too=True)
        split = split_address([w["kernel"], w["recurrent_kernel"]], self.batch)
        work = [self._hold(np.zeros((self.batch, cols), np.float32))
                for cols in (width, width if cell == "gru" else 0, units if cell == "gru" and not reset_after else 0)]
        int8 = kernel[1] >= 0 or recurrent[1] >= 0  # int8 products need `_scratch`'s work arrays
        recurrent_bias = w["recurrent_bias"] if cell == "gru" else w["bias"]  # others read none of it
        fields = [code, inputs, units, width, kernel[0], recurrent[0], self._weights(w["bias"], (width,), "a bias"),
                  self._weights(recurrent_bias, (width,), "a recurrent bias"), self._weights(peephole),
                  peephole.shape[0], cell_state,  # a cell without c reads [batch, 0] of h there
                  *work, *acts, int(reset_after), int(input_forget), _bits(clip),
                  *kernel[1:], *recurrent[1:], *self._scratch_fields(int8, max(inputs, units), width)]
        dst = self._hold(np.zeros_like(h)) if zero_masked else state
        live = _ALL_ROWS if mask is None else self._source(mask, None, np.bool_)
        self._append(_row([_OP_RECURRENT, dst, self._source(src, inputs), *fields, state, live, 0, split, 1]))
        return dst

    def finish(self, output: int) -> None:
        """Fix the table; `output` is the op whose values `run` leaves in `self.output`."""
        # the header: where `_emit` reads, the first deferred row and the first restart row
        self._rows[0][3:7] = (output, self._arrays[output].shape[1], len(self._rows),
                              len(self._rows) + len(self._deferred_rows))
        self._table = np.array(self._rows + self._deferred_rows + self._restart_rows, np.int64)
        self._splitting_rows = np.flatnonzero((self._table[:, 0] == _OP_RECURRENT) & (self._table[:, 35] != 0))
        self.splits_columns = self._splitting_rows.size > 0
        self._addresses = np.array([a.ctypes.data for a in self._arrays], np.int64)
        self.output = self._arrays[output]

    def threads_now(self) -> int:
        """Take the calling thread's numba thread count for the products that split (see
        `splits_columns`; until called, they do not) and return it: a call of `run` or
        `run_sequence` may launch parallel code when it is over 1."""
        threads = numba.get_num_threads()
        if threads != self._threads:
            self._table[self._splitting_rows, 36] = self._threads = threads
        return threads

    def run(self, x: np.ndarray) -> int:
        """One step for x [batch, features] float32 (or [batch] int64 ids); the result is in
        `self.output`. Returns -1, or the first row whose token id is out of range (then nothing ran)."""
        if self._calls_sgemm:
            with blas.single_threaded(True):
                status = self._step(self._table, self._addresses, x)
        else:
            status = self._step(self._table, self._addresses, x)
        if status == _WRONG_SHAPE:
            raise ValueError(f"a step takes {self._arrays[0].shape}, got {x.shape}")
        return status

    def run_sequence(self, x: np.ndarray, every_step: bool) -> tuple[np.ndarray, int]:
        """Whole sequences x [batch, T, features] float32 (or [batch, T] int64 ids) stepped through
        in one call, from the states `restart_from` set (others as they are): (the output of every
        step [batch, T, width] or of the last [batch, width], -1), or (nothing, the flat index of
        the first token id out of range: then nothing ran)."""
        step_shape = self._arrays[0].shape
        if x.ndim != len(step_shape) + 1 or x.shape[1] == 0:
            raise ValueError(f"whole sequences of steps {step_shape} are [batch, steps, ...]; got {x.shape}")
        out = np.empty((self.batch, x.shape[1] if every_step else 1, self.output.shape[1]), np.float32)
        if self._calls_sgemm:
            with blas.single_threaded(True):
                status = self._sequence(self._table, self._addresses, x, out, every_step)
        else:  # no `with` at small batches: it costs about a tenth of a small model's whole call
            status = self._sequence(self._table, self._addresses, x, out, every_step)
        if status == _WRONG_SHAPE:
            raise ValueError(f"a step takes {step_shape}, got sequences {x.shape}")
        return (out if every_step else out[:, 0]), status


@njit(parallel=True, **_jit)
def embedding(ids, table, out):
    for b in prange(ids.shape[0]):
        for t in range(ids.shape[1]):
            _copy(out[b, t], table[ids[b, t]])


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
def _merge_in(out, x, op):
    for i in range(out.shape[0]):
        out[i] = out[i] * x[i] if op == MERGE_MULTIPLY else out[i] + x[i]


@njit(**_jit)
def merge(xs, op, out):
    out[:] = xs[0]
    for x in xs[1:]:
        _merge_in(out, x, op)
    if op == MERGE_AVERAGE:
        out /= len(xs)


@njit(inline="always", **_jit)  # called once per output step: inlined, as the loop body it was
def _conv_output(x, start, kernel, bias, dilation, act, row):
    """row = act(bias + the sum over taps k of x[start + k * dilation] @ kernel[k]) for one
    sequence x [T, I]; taps outside x are zeros (padding)."""
    _copy(row, bias)
    for k in range(kernel.shape[0]):
        t = start + k * dilation
        if t < 0 or t >= x.shape[0]:
            continue
        for i in range(x.shape[1]):
            v = x[t, i]
            for j in range(row.shape[0]):
                row[j] += v * kernel[k, i, j]
    _activate_row(row, act)


@njit(parallel=True, **_jit)
def conv1d(x, kernel, bias, strides, dilation, pad_left, act, out):
    for b in prange(x.shape[0]):
        for s in range(out.shape[1]):
            _conv_output(x[b], s * strides - pad_left, kernel, bias, dilation, act, out[b, s])


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


@njit(inline="always", **_jit)  # once per row: inlined into the row loops
def _batch_norm_row(x, scale, offset, out):
    for j in range(x.shape[0]):
        out[j] = x[j] * scale[j] + offset[j]


@njit(parallel=True, **_jit)
def batch_norm(x, scale, offset, out):
    for n in prange(x.shape[0]):
        _batch_norm_row(x[n], scale, offset, out[n])


@njit(inline="always", **_jit)  # once per row: inlined into the row loops
def _layer_norm_row(x, gamma, beta, epsilon, out):
    width = x.shape[0]
    mean = 0.0
    for j in range(width):
        mean += x[j]
    mean /= width
    var = 0.0
    for j in range(width):
        var += (x[j] - mean) ** 2
    inv = 1.0 / math.sqrt(var / width + epsilon)
    for j in range(width):
        out[j] = (x[j] - mean) * inv * gamma[j] + beta[j]


@njit(parallel=True, **_jit)
def layer_norm(x, gamma, beta, epsilon, out):
    for n in prange(x.shape[0]):
        _layer_norm_row(x[n], gamma, beta, epsilon, out[n])
