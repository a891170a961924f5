"""Float32 weight matrices packed into column panels, for the products of a few rows.

A step of a small batch multiplies each recurrent matrix by one row per sequence. Read row by row
(`cpu._add_row_product`) that is eight weight-row streams plus the sums, loaded and stored on every
pass. Packed into panels of 64 columns — panel b holds columns 64b.. of every row, row after row —
each panel is read front to back as one stream while its 64 sums stay in four 512-bit registers.
Measured on an Intel Xeon with 64-byte-aligned weights (bench/RESULTS.md, "Packed recurrent
matrices"): 128 x 512 2.3 -> 1.5 us for one row. With AVX-512, four rows share each weight load
and beat sgemm at 8 to 256 rows; elsewhere rows go one at a time, and from 8 rows sgemm on the
row-major matrix is faster, so a PackedMatrix keeps both.
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import aligned
from .vectors import keep_512_bit_vectors, splat, target_has

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
    from `pack_panels`); numba kernels take it as a named tuple."""

    matrix: np.ndarray
    panels: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.matrix.shape

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "PackedMatrix":
        matrix = np.ascontiguousarray(matrix, np.float32)
        return cls(matrix, pack_panels(matrix))


def _panel_product_of_rows(count: int):
    """The intrinsic for `count` rows at a time: each weight vector loaded once feeds every row."""

    @intrinsic
    def panel_product(typingctx, out, a, first, panels, panel, lo, hi):
        """out[first + i, PANEL * panel:][lo:hi] += (a[first + i] @ panel `panel` of `panels`)[lo:hi]
        for the `count` rows i from `first`; out [rows, N] and a [rows, K] with dense rows,
        0 <= lo < hi <= PANEL."""
        if not (isinstance(out, types.Array) and out.dtype == types.float32 and out.ndim == 2
                and isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2
                and isinstance(panels, types.Array) and panels.dtype == types.float32 and panels.ndim == 3
                and all(isinstance(t, types.Integer) for t in (first, panel, lo, hi))):
            return None

        def codegen(context, builder, signature, args):
            keep_512_bit_vectors(builder)
            out_array, a_array, panels_array = (cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i])
                                                for i in (0, 1, 3))
            first, panel_index, lo, hi = (context.cast(builder, args[i], signature.args[i], types.intp) for i in (2, 4, 5, 6))
            f32, i8, i64 = ir.FloatType(), ir.IntType(8), ir.IntType(64)
            vector = ir.VectorType(f32, _LANES)

            def row_pointer(array, row):  # rows by their byte stride; the caller checked the columns are dense
                stride = builder.extract_value(array.strides, 0)
                start = builder.bitcast(array.data, i8.as_pointer())
                return builder.bitcast(builder.gep(start, [builder.mul(builder.add(first, ir.Constant(i64, row)), stride)]),
                                       f32.as_pointer())

            rows = builder.extract_value(panels_array.shape, 1)
            weights = builder.gep(panels_array.data, [builder.mul(panel_index, builder.mul(rows, ir.Constant(i64, PANEL)))])
            inputs = [row_pointer(a_array, r) for r in range(count)]
            outputs = [builder.gep(row_pointer(out_array, r), [builder.mul(panel_index, ir.Constant(i64, PANEL))])
                       for r in range(count)]
            sums = [[cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * _LANES)) for _ in range(_VECTORS)]
                    for _ in range(count)]
            contract = ("contract",)
            with cgutils.for_range(builder, rows) as loop:
                row = builder.gep(weights, [builder.mul(loop.index, ir.Constant(i64, PANEL))])
                chunks = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, v * _LANES)]), vector.as_pointer()),
                                       align=4) for v in range(_VECTORS)]
                for r in range(count):
                    scalar = builder.load(builder.gep(inputs[r], [loop.index]))
                    spread = splat(builder, scalar, _LANES)
                    for chunk, slot in zip(chunks, sums[r]):
                        product = builder.fmul(spread, chunk, flags=contract)
                        builder.store(builder.fadd(product, builder.load(slot), flags=contract), slot)
            whole = builder.and_(builder.icmp_signed("==", lo, ir.Constant(i64, 0)),
                                 builder.icmp_signed("==", hi, ir.Constant(i64, PANEL)))
            spill = cgutils.alloca_once(builder, f32, size=PANEL)
            with builder.if_else(whole) as (whole_panel, part_of_panel):
                with whole_panel:
                    for target_row, row_sums in zip(outputs, sums):
                        for v, slot in enumerate(row_sums):
                            target = builder.bitcast(builder.gep(target_row, [ir.Constant(i64, v * _LANES)]),
                                                     vector.as_pointer())
                            builder.store(builder.fadd(builder.load(target, align=4), builder.load(slot)), target, align=4)
                with part_of_panel:
                    for target_row, row_sums in zip(outputs, sums):
                        for v, slot in enumerate(row_sums):
                            builder.store(builder.load(slot), builder.bitcast(
                                builder.gep(spill, [ir.Constant(i64, v * _LANES)]), vector.as_pointer()), align=4)
                        with cgutils.for_range_slice(builder, lo, hi, ir.Constant(i64, 1)) as (j, _):
                            target = builder.gep(target_row, [j])
                            builder.store(builder.fadd(builder.load(target), builder.load(builder.gep(spill, [j]))), target)
            return context.get_dummy_value()

        return types.void(out, a, first, panels, panel, lo, hi), codegen

    return panel_product


panel_product_1 = _panel_product_of_rows(1)
# Four rows keep 16 vectors of sums in registers: AVX-512 has 32; with 16 (AVX2) or NEON's 128-bit
# ones they would spill, so there rows go one at a time.
ROWS_PER_PASS = 4 if target_has("avx512f") else 1
panel_product_4 = _panel_product_of_rows(4)
