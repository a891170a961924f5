"""An int8 weight matrix as the kernels take it, and its plain-numpy product (the oracle).

The scheme (see README, "Quantization"): weights are symmetric int8 with one scale per output
column (stored as float16, used as float32); the rows multiplied into them (a step's input or
recurrent state) are quantized symmetrically to 12-bit integers (|q| <= 2047, held in int16) per
row and per call (scale = max |row| / 2047), or with a fixed scale found on calibration data;
products accumulate in int32 and come back to float32 as ``acc * (row_scale * column_scale)``.
Everything after the product (bias, gates, cell state) stays float32. 12-bit rows cost nothing
over 8-bit ones in the kernel (both multiply in 16-bit lanes) and halve the error.
"""

from typing import NamedTuple

import numpy as np

from .. import aligned

QMAX = 127  # int8 weights
ROW_QMAX = 2047  # the rows multiplied in: 12-bit
# A pair of products is at most 2 * 2047 * 127; int32 sums stay exact over this many input rows:
MAX_INPUT_ROWS = 2 * ((2**31 - 1) // (2 * ROW_QMAX * QMAX))
PANEL = 64  # output columns per packed panel of int8 weights: four 512-bit vectors of int32 sums


def pack_panels(values: np.ndarray) -> np.ndarray:
    """int8 [K, N] -> int8 [ceil(N / PANEL), ceil(K / 2), 2 * PANEL], zero-padded: panel b holds
    columns b*PANEL.. with the weights of rows 2p and 2p+1 side by side for each column, so the
    int8 kernel reads each panel front to back; 64-byte aligned, so no vector load straddles lines."""
    rows, cols = values.shape
    padded = np.zeros((rows + rows % 2, -(-cols // PANEL) * PANEL), np.int8)
    padded[:rows, :cols] = values
    pairs = padded.reshape(padded.shape[0] // 2, 2, -1, PANEL)  # [p, row of the pair, panel, column]
    return aligned.copy(pairs.transpose(2, 0, 3, 1)).reshape(pairs.shape[2], pairs.shape[0], 2 * PANEL)


def unpack_panels(panels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The int8 [rows, cols] matrix that `pack_panels` packed."""
    count, pairs, _ = panels.shape
    values = panels.reshape(count, pairs, PANEL, 2).transpose(1, 3, 0, 2).reshape(2 * pairs, count * PANEL)
    return values[:rows, :cols]


class QuantizedMatrix(NamedTuple):
    """int8 weights [rows, N] ≈ float weights / `scale` [N], packed by `pack_panels`; rows
    multiplied in are quantized with `input_scale`, or per row and call when it is 0. numba kernels
    take it as a named tuple; in numpy, ``a @ matrix`` is the quantized product."""

    panels: np.ndarray
    scale: np.ndarray
    input_scale: float
    rows: int

    __array_ufunc__ = None  # numpy then leaves ``array @ matrix`` to __rmatmul__

    @classmethod
    def from_values(cls, values: np.ndarray, scale: np.ndarray, input_scale: float = 0.0) -> "QuantizedMatrix":
        """From int8 `values` [K, N] and a float32 `scale` per column."""
        return cls(pack_panels(values), np.ascontiguousarray(scale, np.float32), float(input_scale), values.shape[0])

    @property
    def shape(self) -> tuple:
        return (self.rows, self.scale.shape[0])

    @property
    def values(self) -> np.ndarray:
        return unpack_panels(self.panels, *self.shape)

    def __rmatmul__(self, a: np.ndarray) -> np.ndarray:
        q, row_scale = quantize_rows(np.asarray(a, np.float32), self.input_scale)
        acc = q.astype(np.int32) @ self.values.astype(np.int32)
        return acc.astype(np.float32) * (row_scale[:, None] * self.scale)


def symmetric_scale(top: np.ndarray, qmax: int = QMAX) -> np.ndarray:
    """The symmetric scale of values whose largest magnitude is `top`: top / qmax, and 1 for zeros."""
    top = np.asarray(top, np.float32)
    return np.where(top > 0, top / np.float32(qmax), np.float32(1.0)).astype(np.float32)


def row_scales(a: np.ndarray) -> np.ndarray:
    """Per-row symmetric 12-bit scales: max |row| / 2047, and 1 for an all-zero row."""
    return symmetric_scale(np.abs(a).max(axis=-1), ROW_QMAX)


def quantize_rows(a: np.ndarray, input_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(int16 values in [-2047, 2047], float32 scale per row) of a float32 [rows, K]: by
    `input_scale` when it is positive, else per row. Rounds half to even and saturates, as the
    numba kernels do."""
    scale = (np.full(a.shape[0], input_scale, np.float32) if input_scale > 0 else row_scales(a))
    q = np.clip(np.rint(a / scale[:, None]), -ROW_QMAX, ROW_QMAX).astype(np.int16)
    return q, scale
