"""Arrays that start on a 64-byte boundary (a cache line; a 512-bit vector).

The kernels read weights with vector loads; from an address that is not a multiple of the vector
width, a load that straddles two cache lines costs two. Measured on an Intel Xeon (bench/RESULTS.md,
"Aligned weights"): the int8 product 20-25% slower from panels 16 bytes off a line, a batch-1
LSTM(64) 15% slower from weights 48 bytes off. `.elstm` files place every tensor on this boundary
(`artifact`), and whatever the runtime makes at load time is allocated here.
"""

import numpy as np

ALIGNMENT = 64


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised array of `shape` and `dtype` whose data starts on an ALIGNMENT boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    return array.ctypes.data % ALIGNMENT == 0


def copy(array: np.ndarray) -> np.ndarray:
    """`array` as a new C-contiguous, aligned array."""
    out = empty(array.shape, array.dtype)
    out[...] = array
    return out
