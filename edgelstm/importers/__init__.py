"""Importers: each reads one foreign format into the IR. They alone know foreign layouts."""

from __future__ import annotations

import os
from pathlib import Path

from .. import artifact
from ..errors import FormatError
from ..ir import Graph

_ZIP = b"PK\x03\x04"
_HDF5 = b"\x89HDF\r\n\x1a\n"
SUPPORTED = ".elstm (edgelstm), .keras (Keras 3), .h5 (Keras 2 or 3 legacy HDF5), .onnx (opset 13+)"


def raised_in(exc: BaseException, package: str) -> bool:
    """Whether `exc` came from inside `package` (h5py, onnx): on a corrupt file those libraries raise
    KeyError, TypeError, RuntimeError... wherever they read, which then means a bad file, not a bug."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == package


def import_file(source: str | os.PathLike) -> Graph:
    """Read `source` into the IR, choosing the importer by the file's content and name."""
    path = Path(source)
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == artifact.SUFFIX:
        return artifact.read(path)
    if magic.startswith(_ZIP) or magic == _HDF5:
        from . import keras
        from .isolated import run_isolated

        keras._h5py()  # import it here, not in the forked child: another thread may hold its import lock
        return run_isolated(keras.import_keras, path)  # HDF5 can hang on a hostile file: see isolated.py
    if path.suffix == ".onnx":
        from . import onnx

        return onnx.import_onnx(path)
    raise FormatError(f"{path} is not a model file edgelstm reads; supported: {SUPPORTED}")
