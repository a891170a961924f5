"""numpy's own OpenBLAS `sgemm`, callable from numba kernels, with its threads held at one.

For a batch of 8 or more sequences a step's product is a real matrix product, where OpenBLAS's
packed, register-tiled kernel runs 1.2-2.4x faster than anything numba's loops vectorise to.
numpy's wheels ship OpenBLAS with 64-bit integers (`scipy_cblas_sgemm64_`, or `cblas_sgemm64_`
before numpy 2); it is found next to numpy, so nothing new is installed.

Kernels call it by the fixed symbol name `edgelstm_sgemm`, which llvmlite resolves when the code
is linked; cached code therefore stays valid across processes. Where numpy has no such library
(macOS Accelerate, MKL builds) the symbol names a numba `cfunc` with the same contract, so the
kernels are the same either way and only slower.
"""

import ctypes
import glob
import os
import threading
from contextlib import nullcontext

import llvmlite.binding as llvm
import numpy as np
from numba import carray, cfunc, njit, types

_ROW_MAJOR, _NO_TRANS = 101, 111

_SIGNATURE = types.void(types.intc, types.intc, types.intc, types.int64, types.int64, types.int64, types.float32,
                        types.voidptr, types.int64, types.voidptr, types.int64, types.float32, types.voidptr,
                        types.int64)

_sgemm = types.ExternalFunction("edgelstm_sgemm", _SIGNATURE)  # cblas_sgemm's arguments, row-major only


@njit(cache=True, error_model="numpy")
def add_product(z, a, w, j0, j1):
    """z[:, j0:j1] += a @ w[:, j0:j1] by sgemm; rows of all three must be contiguous (checked by the caller)."""
    _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, a.shape[0], j1 - j0, a.shape[1], np.float32(1.0), a.ctypes.data,
           a.strides[0] // 4, w[:, j0:].ctypes.data, w.strides[0] // 4, np.float32(1.0), z[:, j0:].ctypes.data,
           z.strides[0] // 4)


@cfunc(_SIGNATURE, cache=True, error_model="numpy")
def _portable_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    a_rows = carray(a, (m, lda), np.float32)
    b_rows = carray(b, (k, ldb), np.float32)
    c_rows = carray(c, (m, ldc), np.float32)
    for i in range(m):
        row = c_rows[i, :n]
        for j in range(n):
            row[j] *= beta
        for p in range(k):
            scaled = alpha * a_rows[i, p]
            w = b_rows[p, :n]
            for j in range(n):
                row[j] += scaled * w[j]


def _find_openblas():
    """(sgemm address, set_num_threads, get_num_threads) of numpy's OpenBLAS, or None."""
    here = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*"))
                       + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            try:
                gemm = getattr(lib, prefix + "cblas_sgemm64_")
                set_threads = getattr(lib, prefix + "openblas_set_num_threads64_")
                get_threads = getattr(lib, prefix + "openblas_get_num_threads64_")
            except AttributeError:
                continue
            set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
            get_threads.argtypes, get_threads.restype = [], ctypes.c_int
            return ctypes.cast(gemm, ctypes.c_void_p).value, set_threads, get_threads
    return None


_openblas = _find_openblas()
HAVE_OPENBLAS = _openblas is not None
llvm.add_symbol("edgelstm_sgemm", _openblas[0] if HAVE_OPENBLAS else _portable_sgemm.address)


class _OneThread:
    """Holds OpenBLAS at one thread while any kernel is inside; the last one out restores the count."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._before = 1

    def __enter__(self):
        _, set_threads, get_threads = _openblas
        with self._lock:
            if self._inside == 0:
                self._before = get_threads()
                set_threads(1)
            self._inside += 1

    def __exit__(self, *exc):
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                set_threads = _openblas[1]
                set_threads(self._before)


_one_thread, _no_change = _OneThread(), nullcontext()


def single_threaded(calls_sgemm):
    """A context that holds OpenBLAS at one thread while a kernel that `calls_sgemm` runs: our
    kernels split rows over numba's threads themselves."""
    return _one_thread if HAVE_OPENBLAS and calls_sgemm else _no_change
