"""The int8 product's inner loop, written as LLVM vector IR for numba.

A row q of 8-bit values times a panel of packed weights (`quantized.pack_panels`: w + 128 as
unsigned bytes, GROUP rows side by side per column), read front to back with the panel's 64 int32
sums in four 512-bit vectors. With AVX-512 VNNI each group of four rows is one ``vpdpbusd`` per 16
columns: 64 byte products summed into 16 lanes, the weights loaded straight into it. Elsewhere two
rows at a time are written as "widen to 32 bits, multiply, add even and odd lanes", the pattern
LLVM's x86 backend lowers to ``vpmaddwd`` (and AArch64's to ``smull``/``smlal`` pairs). Either way
the sums start at ``-128 * sum(q)``, which takes the weights' bias back out.

The function holding the loop is marked to keep its 512-bit vectors whole (`vectors`). Measured on
an AVX-512 VNNI Xeon (bench/RESULTS.md, "int8"), one row: 128 x 512 1.03 -> 0.67 us and
512 x 2048 12.7 -> 7.1 us from 12-bit rows with ``vpdpwssd`` (pairs) to 8-bit rows with ``vpdpbusd``.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .quantized import GROUP, PANEL, WEIGHT_BIAS
from .vectors import keep_512_bit_vectors, splat

_LANES = 16  # int32 sums per vector: 512 bits
_VECTORS = PANEL // _LANES


def _vnni_group(builder, sums, row, q_group):
    """sums[v] += the four-byte dot products of a group's weights (16 columns per vector) with q_group."""
    i32 = ir.IntType(32)
    lanes = ir.VectorType(i32, _LANES)
    dot = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(lanes, [lanes] * 3))
    q_lanes = splat(builder, q_group, _LANES)
    for v, slot in enumerate(sums):
        chunk = builder.bitcast(builder.gep(row, [ir.Constant(ir.IntType(64), v * GROUP * _LANES)]), lanes.as_pointer())
        builder.store(builder.call(dot, [builder.load(slot), builder.load(chunk, align=1), q_lanes]), slot)


def _pair_group(builder, sums, row, q_group):
    """sums[v] += the two-byte dot products of a group's weights (16 columns per vector) with q_group."""
    i8, i32 = ir.IntType(8), ir.IntType(32)
    wide, narrow = ir.VectorType(i32, 2 * _LANES), ir.VectorType(i8, 2 * _LANES)
    q_wide = builder.sext(builder.bitcast(splat(builder, q_group, _LANES), narrow), wide)
    even = ir.Constant(ir.VectorType(i32, _LANES), [2 * k for k in range(_LANES)])
    odd = ir.Constant(ir.VectorType(i32, _LANES), [2 * k + 1 for k in range(_LANES)])
    for v, slot in enumerate(sums):
        chunk = builder.bitcast(builder.gep(row, [ir.Constant(ir.IntType(64), v * GROUP * _LANES)]), narrow.as_pointer())
        product = builder.mul(builder.zext(builder.load(chunk, align=1), wide), q_wide)
        madd = builder.add(builder.shuffle_vector(product, product, even), builder.shuffle_vector(product, product, odd))
        builder.store(builder.add(builder.load(slot), madd), slot)


@intrinsic
def panel_product(typingctx, acc, q, q_sum, panels, panel):
    """acc[:PANEL] = the int32 product of row q (int8 in [-127, 127], zero-padded to a multiple of
    GROUP, `q_sum` the sum of its values) with panel `panel` of `panels` (uint8 [panels, groups,
    GROUP * PANEL] from `pack_panels`)."""
    if not (isinstance(acc, types.Array) and acc.dtype == types.int32 and isinstance(q, types.Array)
            and q.dtype == types.int8 and isinstance(q_sum, types.Integer) and isinstance(panels, types.Array)
            and panels.dtype == types.uint8 and panels.ndim == 3 and isinstance(panel, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        keep_512_bit_vectors(builder)
        acc_arg, q_arg, q_sum_arg, panels_arg, panel_arg = args
        acc_array = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=acc_arg)
        q_array = cgutils.create_struct_proxy(signature.args[1])(context, builder, value=q_arg)
        panels_array = cgutils.create_struct_proxy(signature.args[3])(context, builder, value=panels_arg)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        sums_type, group_type = ir.VectorType(i32, _LANES), ir.IntType(8 * GROUP)

        groups = builder.extract_value(panels_array.shape, 1)
        index = context.cast(builder, panel_arg, signature.args[4], types.intp)
        start = builder.mul(index, builder.mul(groups, ir.Constant(i64, GROUP * PANEL)))
        weights = builder.gep(panels_array.data, [start])
        q_groups = builder.bitcast(q_array.data, group_type.as_pointer())  # a group's values as one integer
        bias = builder.mul(context.cast(builder, q_sum_arg, signature.args[2], types.int32),
                           ir.Constant(i32, -WEIGHT_BIAS))
        start_sums = splat(builder, bias, _LANES)
        sums = [cgutils.alloca_once_value(builder, ir.Constant(sums_type, None)) for _ in range(_VECTORS)]
        for slot in sums:
            builder.store(start_sums, slot)
        add_group = _vnni_group if GROUP == 4 else _pair_group
        with cgutils.for_range(builder, groups) as loop:
            row = builder.gep(weights, [builder.mul(loop.index, ir.Constant(i64, GROUP * PANEL))])
            add_group(builder, sums, row, builder.load(builder.gep(q_groups, [loop.index]), align=1))
        for v, slot in enumerate(sums):
            target = builder.bitcast(builder.gep(acc_array.data, [ir.Constant(i64, v * _LANES)]), sums_type.as_pointer())
            builder.store(builder.load(slot), target, align=4)
        return context.get_dummy_value()

    return types.void(acc, q, q_sum, panels, panel), codegen
