"""Float32 weight matrices packed into column panels, for the products of a few rows.

A step of a small batch multiplies each recurrent matrix by one row per sequence. Read row by row
(`cpu._add_row_product`) that is eight weight-row streams plus the sums, loaded and stored on every
pass. Packed into panels of 64 columns — panel b holds columns 64b.. of every row, row after row —
each panel is read front to back as one stream while its 64 sums stay in four 512-bit registers.
Measured on an Intel Xeon with 64-byte-aligned weights (bench/RESULTS.md, "Packed recurrent
matrices"): 128 x 512 2.3 -> 1.5 us, 256 x 1024 9.2 -> 6.0 us, and ahead at 2 to 7 rows too.
From 8 rows sgemm on the row-major matrix is faster, so a PackedMatrix keeps both.
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import aligned
from .int8 import keep_512_bit_vectors

PANEL = 64  # columns per panel: four 512-bit vectors of float32 sums
_LANES = 16
_VECTORS = PANEL // _LANES


def pack_panels(matrix: np.ndarray) -> np.ndarray:
    """float32 [K, N] -> float32 [ceil(N / PANEL), K, PANEL], zero-padded, 64-byte aligned."""
    rows, cols = matrix.shape
    padded = np.zeros((rows, -(-cols // PANEL) * PANEL), np.float32)
    padded[:, :cols] = matrix
    return aligned.copy(padded.reshape(rows, -1, PANEL).transpose(1, 0, 2))


class PackedMatrix(NamedTuple):
    """A float32 matrix [K, N] both row-major (`matrix`: sgemm's operand) and in panels (`panels`,
    from `pack_panels`). numba kernels take it as a named tuple; in numpy, ``a @ packed`` is
    ``a @ packed.matrix``."""

    matrix: np.ndarray
    panels: np.ndarray

    __array_ufunc__ = None  # numpy then leaves ``array @ packed`` to __rmatmul__

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "PackedMatrix":
        matrix = np.ascontiguousarray(matrix, np.float32)
        return cls(matrix, pack_panels(matrix))

    @property
    def shape(self) -> tuple:
        return self.matrix.shape

    def __rmatmul__(self, a: np.ndarray) -> np.ndarray:
        return a @ self.matrix


@intrinsic
def panel_product(typingctx, out, a, panels, panel, lo, hi):
    """out[lo:hi] += (a @ panel `panel` of `panels`)[lo:hi], for a row a [K] and out a row of sums
    from the panel's first column (0 <= lo < hi <= PANEL; out holds at least hi values)."""
    if not (isinstance(out, types.Array) and out.dtype == types.float32 and isinstance(a, types.Array)
            and a.dtype == types.float32 and isinstance(panels, types.Array) and panels.dtype == types.float32
            and panels.ndim == 3 and all(isinstance(t, types.Integer) for t in (panel, lo, hi))):
        return None

    def codegen(context, builder, signature, args):
        keep_512_bit_vectors(builder)
        out_array, a_array, panels_array = (cgutils.create_struct_proxy(t)(context, builder, value=v)
                                            for t, v in zip(signature.args[:3], args[:3]))
        panel_index, lo, hi = (context.cast(builder, v, t, types.intp) for v, t in zip(args[3:], signature.args[3:]))
        f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        vector = ir.VectorType(f32, _LANES)
        rows = builder.extract_value(panels_array.shape, 1)
        weights = builder.gep(panels_array.data, [builder.mul(panel_index, builder.mul(rows, ir.Constant(i64, PANEL)))])
        sums = [cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * _LANES)) for _ in range(_VECTORS)]
        contract = ("contract",)
        with cgutils.for_range(builder, rows) as loop:
            scalar = builder.load(builder.gep(a_array.data, [loop.index]))
            spread = builder.shuffle_vector(builder.insert_element(ir.Constant(vector, None), scalar, ir.Constant(i32, 0)),
                                            ir.Constant(vector, None), ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES))
            row = builder.gep(weights, [builder.mul(loop.index, ir.Constant(i64, PANEL))])
            for v, slot in enumerate(sums):
                chunk = builder.bitcast(builder.gep(row, [ir.Constant(i64, v * _LANES)]), vector.as_pointer())
                product = builder.fmul(spread, builder.load(chunk, align=4), flags=contract)
                builder.store(builder.fadd(product, builder.load(slot), flags=contract), slot)
        whole = builder.and_(builder.icmp_signed("==", lo, ir.Constant(i64, 0)),
                             builder.icmp_signed("==", hi, ir.Constant(i64, PANEL)))
        with builder.if_else(whole) as (whole_panel, part_of_panel):
            with whole_panel:
                for v, slot in enumerate(sums):
                    target = builder.bitcast(builder.gep(out_array.data, [ir.Constant(i64, v * _LANES)]), vector.as_pointer())
                    builder.store(builder.fadd(builder.load(target, align=4), builder.load(slot)), target, align=4)
            with part_of_panel:
                spill = cgutils.alloca_once(builder, f32, size=PANEL)
                for v, slot in enumerate(sums):
                    builder.store(builder.load(slot), builder.bitcast(builder.gep(spill, [ir.Constant(i64, v * _LANES)]),
                                                                      vector.as_pointer()), align=4)
                with cgutils.for_range_slice(builder, lo, hi, ir.Constant(i64, 1)) as (j, _):
                    target = builder.gep(out_array.data, [j])
                    builder.store(builder.fadd(builder.load(target), builder.load(builder.gep(spill, [j]))), target)
        return context.get_dummy_value()

    return types.void(out, a, panels, panel, lo, hi), codegen
