"""An int8 weight matrix as the kernels take it, and its plain-numpy product (the oracle).

The scheme (see README, "Quantization"): weights are symmetric int8 with one scale per output
column (stored as float16, used as float32); the rows multiplied into them (a step's input or recurrent state) are quantized
symmetrically to int8 per row and per call (scale = max |row| / 127), or with a fixed scale found
on calibration data; products accumulate in int32 and come back to float32 as
``acc * (row_scale * column_scale)``. Everything after the product (bias, gates, cell state)
stays float32.
"""

from typing import NamedTuple

import numpy as np

QMAX = 127


class QuantizedMatrix(NamedTuple):
    """int8 `values` [K, N] ≈ float weights / `scale` [N]; rows multiplied in are quantized with
    `input_scale`, or per row and call when it is 0. numba kernels take it as a named tuple; in
    numpy, ``a @ matrix`` is the quantized product."""

    values: np.ndarray
    scale: np.ndarray
    input_scale: float

    __array_ufunc__ = None  # numpy then leaves ``array @ matrix`` to __rmatmul__

    @property
    def shape(self) -> tuple:
        return self.values.shape

    def __rmatmul__(self, a: np.ndarray) -> np.ndarray:
        q, row_scale = quantize_rows(np.asarray(a, np.float32), self.input_scale)
        acc = q.astype(np.int32) @ self.values.astype(np.int32)
        return acc.astype(np.float32) * (row_scale[:, None] * self.scale)


def symmetric_scale(top: np.ndarray) -> np.ndarray:
    """The symmetric int8 scale of values whose largest magnitude is `top`: top / 127, and 1 for zeros."""
    top = np.asarray(top, np.float32)
    return np.where(top > 0, top / np.float32(QMAX), np.float32(1.0)).astype(np.float32)


def row_scales(a: np.ndarray) -> np.ndarray:
    """Per-row symmetric int8 scales: max |row| / 127, and 1 for an all-zero row."""
    return symmetric_scale(np.abs(a).max(axis=-1))


def quantize_rows(a: np.ndarray, input_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale per row) of a float32 [rows, K]: by `input_scale` when it is
    positive, else per row. Rounds half to even and saturates at ±127, as the numba kernels do."""
    scale = (np.full(a.shape[0], input_scale, np.float32) if input_scale > 0 else row_scales(a))
    q = np.clip(np.rint(a / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    return q, scale
