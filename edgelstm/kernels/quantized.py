"""An int8 weight matrix as the kernels take it, and its plain-numpy product (the oracle).

The scheme (see README, "Quantization"): weights are symmetric int8 with one scale per output
column (stored as float16, used as float32); the rows multiplied into them (a step's input or
recurrent state) are quantized symmetrically to 8 bits (|q| <= 127) per row and per call
(scale = max |row| / 127), or with a fixed scale found on calibration data; products accumulate in
int32 and come back to float32 as ``acc * (row_scale * column_scale)``. Everything after the
product (bias, gates, cell state) stays float32.

8-bit rows are what x86's VNNI multiplies four at a time per 32-bit lane (``vpdpbusd``: unsigned
bytes times signed bytes), so the packed weights hold ``w + 128`` (unsigned) and the kernels take
``128 * sum(q)`` off each row's sums: the same integers as ``q @ w``.
"""

from typing import NamedTuple

import numpy as np

from .. import aligned
from .vectors import target_has

QMAX = 127  # int8 weights
ROW_QMAX = 127  # the rows multiplied in: 8-bit, symmetric
# Sums wrap in int32 and the bias of the unsigned weights cancels exactly, so only the true
# product must fit: at most this many input rows.
MAX_INPUT_ROWS = (2**31 - 1) // (ROW_QMAX * QMAX)
PANEL = 64  # output columns per packed panel of int8 weights: four 512-bit vectors of int32 sums
# Input rows whose weights sit side by side for each column: VNNI sums four byte products into a
# 32-bit lane; without it `vpmaddwd` (or NEON's smlal pairs) sums two.
GROUP = 4 if target_has("avx512vnni") else 2
WEIGHT_BIAS = 128  # packed weights are w + 128: unsigned bytes


def pack_panels(values: np.ndarray) -> np.ndarray:
    """int8 [K, N] -> uint8 [ceil(N / PANEL), ceil(K / GROUP), GROUP * PANEL]: panel b holds
    columns b*PANEL.. with the weights (+ 128) of GROUP consecutive rows side by side for each
    column, so the int8 kernel reads each panel front to back; padding is 0 (it meets zero-padded
    rows, or columns nobody reads); 64-byte aligned, so no vector load straddles lines."""
    rows, cols = values.shape
    padded = np.zeros((-(-rows // GROUP) * GROUP, -(-cols // PANEL) * PANEL), np.uint8)
    padded[:rows, :cols] = values.astype(np.int16) + WEIGHT_BIAS
    groups = padded.reshape(padded.shape[0] // GROUP, GROUP, -1, PANEL)  # [group, row in it, panel, column]
    return aligned.copy(groups.transpose(2, 0, 3, 1)).reshape(groups.shape[2], groups.shape[0], GROUP * PANEL)


def unpack_panels(panels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The int8 [rows, cols] matrix that `pack_panels` packed."""
    count, groups, _ = panels.shape
    values = panels.reshape(count, groups, PANEL, GROUP).transpose(1, 3, 0, 2).reshape(GROUP * groups, count * PANEL)
    return (values[:rows, :cols].astype(np.int16) - WEIGHT_BIAS).astype(np.int8)


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
    """Per-row symmetric 8-bit scales: max |row| / 127, and 1 for an all-zero row."""
    return symmetric_scale(np.abs(a).max(axis=-1), ROW_QMAX)


def quantize_rows(a: np.ndarray, input_scale: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values in [-127, 127], float32 scale per row) of a float32 [rows, K]: by
    `input_scale` when it is positive, else per row. Rounds half to even and saturates, as the
    numba kernels do."""
    scale = (np.full(a.shape[0], input_scale, np.float32) if input_scale > 0 else row_scales(a))
    inverse = np.float32(1.0) / scale  # multiplied, as the kernels do (a division per value is slower)
    q = np.clip(np.rint(a * inverse[:, None]), -ROW_QMAX, ROW_QMAX).astype(np.int8)
    return q, scale
