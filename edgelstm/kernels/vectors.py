"""512-bit vectors kept whole.

LLVM's x86 backend prefers 256-bit vectors on Intel's AVX-512 cores (the first of them lowered
their clock for wide instructions): its loop vectoriser picks 256 bits, and vector types wider
than that are split in two. A function marked here keeps 512-bit vectors: the int8 and float32
panel products, written as 512-bit vector IR, and the cell updates' activation loops, which the
vectoriser then widens (LSTM(128) update 0.29-0.35 -> 0.21 us a step on an Intel Xeon). Without
AVX-512 the marks change nothing: a 512-bit vector is two 256-bit ones.
"""

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen
from numba.extending import intrinsic


def target_has(feature: str) -> bool:
    """Whether numba compiles for a CPU with `feature` (an LLVM name: "avx512f", "avx512vnni"): by
    NUMBA_CPU_FEATURES when set (NUMBA_CPU_NAME=generic, for a portable cache, sets none), else by
    the host's features as numba takes them (NUMBA_ENABLE_AVX=0 turns the AVX ones off)."""
    features = numba.config.CPU_FEATURES
    if features is None:
        features = codegen.get_host_cpu_features()
    return f"+{feature}" in features.split(",")


def splat(builder, value, lanes: int):
    """A vector of `lanes` copies of the scalar `value` (insert into lane 0, shuffle to all)."""
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                                                [0] * lanes))


def keep_512_bit_vectors(builder) -> None:
    """Mark the function being built (string attributes, which llvmlite's `add` does not list)."""
    for attribute in ('"min-legal-vector-width"="512"', '"prefer-vector-width"="512"'):
        set.add(builder.function.attributes, attribute)


@intrinsic
def wide_vectors(typingctx):
    """Called from a jitted function: mark that function with `keep_512_bit_vectors`."""
    def codegen(context, builder, signature, args):
        keep_512_bit_vectors(builder)
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def largest_magnitude(typingctx, row):
    """max |row[k]| of a float32 vector, 0 for an empty one, NaN when any value is NaN.

    Compared as integers (a float's magnitude bits order as its magnitude) the loop vectorises;
    as floats LLVM keeps it scalar, one `vmaxss` after another (512 values 0.48 -> 0.07 us).
    """
    if not (isinstance(row, types.Array) and row.ndim == 1 and row.dtype == types.float32):
        return None

    def codegen(context, builder, signature, args):
        array = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0])
        i32 = ir.IntType(32)
        length = builder.extract_value(array.shape, 0)
        stride = builder.extract_value(array.strides, 0)
        top = cgutils.alloca_once_value(builder, ir.Constant(i32, 0))

        def fold_in(address):
            magnitude = builder.and_(builder.load(address), ir.Constant(i32, 0x7FFFFFFF))
            larger = builder.icmp_signed(">", magnitude, builder.load(top))
            builder.store(builder.select(larger, magnitude, builder.load(top)), top)

        with builder.if_else(builder.icmp_signed("==", stride, ir.Constant(stride.type, 4))) as (dense, strided):
            with dense:  # the common case, as its own loop: LLVM vectorises only this one
                values = builder.bitcast(array.data, i32.as_pointer())
                with cgutils.for_range(builder, length) as loop:
                    fold_in(builder.gep(values, [loop.index]))
            with strided:
                start = builder.bitcast(array.data, ir.IntType(8).as_pointer())
                with cgutils.for_range(builder, length) as loop:
                    fold_in(builder.bitcast(builder.gep(start, [builder.mul(loop.index, stride)]), i32.as_pointer()))
        return builder.bitcast(builder.load(top), ir.FloatType())

    return types.float32(row), codegen
