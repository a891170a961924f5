"""The int8 product's inner loop, written as LLVM vector IR for numba.

numba's loop vectoriser turns int8 x int16 products into 32-bit multiplies (vpmovsxbd + vpmulld on
x86): eight multiply-adds per instruction pair. Written as "sign-extend both to 32 bits, multiply,
add even and odd lanes", the same sums are the pattern LLVM's x86 backend lowers to one
``vpmaddwd`` (sixteen multiply-adds) and its AArch64 backend to ``smull``/``smlal`` pairs. The
weights come packed by `quantized.pack_panels` so that the loop reads them sequentially. With
AVX-512 VNNI the sum and the accumulation become one ``vpdpwssd``.

The vectors are 512 bits wide (sixteen int32 sums), and the function holding the loop is marked
to keep them whole (`vectors`). Measured on an AVX-512 VNNI Xeon (bench/RESULTS.md): 512 x 2048
weights 22 -> 13-16 us, 128 x 512 1.5 -> 1.0-1.25 us.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .quantized import PANEL
from .vectors import keep_512_bit_vectors

_LANES = 16  # int32 sums per vector: 512 bits
_VECTORS = PANEL // _LANES


@intrinsic
def panel_product(typingctx, acc, q, panels, panel):
    """acc[:PANEL] = the int32 product of row q (int16, an even length 2P, values in [-2047, 2047]) with
    panel `panel` of `panels` (int8 [panels, P, 2 * PANEL] from `pack_panels`)."""
    if not (isinstance(acc, types.Array) and acc.dtype == types.int32 and isinstance(q, types.Array)
            and q.dtype == types.int16 and isinstance(panels, types.Array) and panels.dtype == types.int8
            and panels.ndim == 3 and isinstance(panel, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        keep_512_bit_vectors(builder)
        acc_arg, q_arg, panels_arg, panel_arg = args
        acc_array = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=acc_arg)
        q_array = cgutils.create_struct_proxy(signature.args[1])(context, builder, value=q_arg)
        panels_array = cgutils.create_struct_proxy(signature.args[2])(context, builder, value=panels_arg)
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        sums_type, pair_type = ir.VectorType(i32, _LANES), ir.VectorType(i16, 2 * _LANES)
        wide, narrow = ir.VectorType(i32, 2 * _LANES), ir.VectorType(i8, 2 * _LANES)

        pairs = builder.extract_value(panels_array.shape, 1)
        index = context.cast(builder, panel_arg, signature.args[3], types.intp)
        start = builder.mul(index, builder.mul(pairs, ir.Constant(i64, 2 * PANEL)))
        weights = builder.gep(panels_array.data, [start])
        q_pairs = builder.bitcast(q_array.data, i32.as_pointer())  # (q[2p], q[2p+1]) as one i32
        even = ir.Constant(sums_type, [2 * k for k in range(_LANES)])
        odd = ir.Constant(sums_type, [2 * k + 1 for k in range(_LANES)])
        broadcast = ir.Constant(sums_type, [0] * _LANES)
        sums = [cgutils.alloca_once_value(builder, ir.Constant(sums_type, None)) for _ in range(_VECTORS)]
        for slot in sums:
            builder.store(ir.Constant(sums_type, [0] * _LANES), slot)
        with cgutils.for_range(builder, pairs) as loop:
            pair = builder.insert_element(ir.Constant(sums_type, None), builder.load(builder.gep(q_pairs, [loop.index])),
                                          ir.Constant(i32, 0))
            pair = builder.shuffle_vector(pair, pair, broadcast)
            pair = builder.sext(builder.bitcast(pair, pair_type), wide)
            row = builder.gep(weights, [builder.mul(loop.index, ir.Constant(i64, 2 * PANEL))])
            for v, slot in enumerate(sums):
                chunk = builder.bitcast(builder.gep(row, [ir.Constant(i64, v * 2 * _LANES)]), narrow.as_pointer())
                product = builder.mul(builder.sext(builder.load(chunk, align=1), wide), pair)
                madd = builder.add(builder.shuffle_vector(product, product, even),
                                   builder.shuffle_vector(product, product, odd))
                builder.store(builder.add(builder.load(slot), madd), slot)
        for v, slot in enumerate(sums):
            target = builder.bitcast(builder.gep(acc_array.data, [ir.Constant(i64, v * _LANES)]), sums_type.as_pointer())
            builder.store(builder.load(slot), target, align=4)
        return context.get_dummy_value()

    return types.void(acc, q, panels, panel), codegen
