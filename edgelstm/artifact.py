"""The ``.elstm`` file: the IR on disk.

The container is safetensors (https://huggingface.co/docs/safetensors): an 8-byte little-endian
header length, a JSON header that maps each tensor name (``layer/weight``) to its dtype, shape and
byte range, then the raw little-endian tensor bytes. The header's ``__metadata__`` string map
holds the format name and version, the graph as JSON (`Graph.to_json`) and a SHA-256 of the
tensor bytes. So a file is safe to open from anywhere (no pickle, no code), any safetensors reader
can list its tensors, and the tensors are memory-mapped, not copied.

From format version 2 every tensor starts on a 64-byte boundary of the file (so of the mapped
memory: `aligned`): the header is padded with spaces, and the gaps between tensors are held by
int8 padding tensors named ``__pad__/N``, since safetensors allows no holes. Readers skip them;
version-1 files (packed to 8 bytes) still read.

Every read checks the header against the file's real length, every tensor's byte range, the
digest and the graph, and raises `FormatError` on the first problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np

from . import aligned
from .errors import FormatError
from .ir import Graph, validate

FORMAT_NAME = "elstm"
FORMAT_VERSION = 2  # 2: tensors on 64-byte boundaries, with padding tensors between them
_PAD_PREFIX = "__pad__/"
_PAD_NAME = re.compile(r"__pad__/[0-9]+")  # no layer weight is named by digits alone
SUFFIX = ".elstm"
MAX_HEADER_BYTES = 64 << 20

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I32": np.dtype("<i4"), "I8": np.dtype("i1")}
_CODES = {v: k for k, v in _DTYPES.items()}


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside `path`, then rename it over `path`.

    An interrupted write leaves `path` as it was and no partial file behind.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def to_bytes(graph: Graph) -> bytes:
    """Serialise a graph to the bytes of an ``.elstm`` file."""
    validate(graph)
    tensors = [(f"{layer.name}/{name}", np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("<")))
               for layer in graph.layers for name, w in sorted(layer.weights.items())]
    padded, offset = [], 0
    for name, array in tensors:
        gap = -offset % aligned.ALIGNMENT
        if gap:
            padded.append((f"{_PAD_PREFIX}{len(padded)}", np.zeros(gap, np.int8)))
        padded.append((name, array))
        offset += gap + array.nbytes
    header: dict = {}
    offset = 0
    digest = hashlib.sha256()
    for name, array in padded:
        if array.dtype not in _CODES:
            raise FormatError(f"tensor '{name}' has dtype {array.dtype}, which the format cannot store")
        header[name] = {"dtype": _CODES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        digest.update(array.tobytes())
    header["__metadata__"] = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "graph": graph.to_json(),
        "sha256": digest.hexdigest(),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % aligned.ALIGNMENT)  # the data section starts aligned too
    return b"".join([struct.pack("<Q", len(head)), head] + [a.tobytes() for _, a in padded])


def write(graph: Graph, path: str | os.PathLike) -> int:
    """Write `graph` to `path` atomically; return the file size in bytes."""
    data = to_bytes(graph)
    atomic_write(path, lambda f: f.write(data))
    return len(data)


def read(source: str | os.PathLike | bytes) -> Graph:
    """Read and check an ``.elstm`` file (a path, memory-mapped; or the file's bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = source if isinstance(source, (bytes, bytearray)) else bytes(source)  # any memoryview, contiguous
        private = aligned.copy(np.frombuffer(raw, np.uint8))  # aligned as a mapped file is
        private.flags.writeable = False
        return _parse(memoryview(private), "the model bytes")
    path = Path(source)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise FormatError(f"{path} is empty, not an .elstm model")
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _parse(memoryview(buffer), str(path))


def _parse_header(raw: bytes | memoryview, size: int, where: str) -> dict:
    if len(raw) < size:
        raise FormatError(f"{where} is truncated: the header needs {size} bytes, the file has {len(raw)}")
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError(f"{where} is not an .elstm model (its header is not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{where} is not an .elstm model (no '{FORMAT_NAME}' format tag)")
    version = meta.get("format_version")
    if not (isinstance(version, str) and version.isdigit() and int(version) >= 1):
        raise FormatError(f"{where} has an unreadable format version {version!r}")
    version = int(version)
    if version > FORMAT_VERSION:
        raise FormatError(f"{where} has format version {version}, newer than this edgelstm reads "
                          f"({FORMAT_VERSION}); upgrade edgelstm")
    return header


def _parse(buffer: memoryview, where: str) -> Graph:
    if len(buffer) < 8:
        raise FormatError(f"{where} is too short to be an .elstm model ({len(buffer)} bytes)")
    (size,) = struct.unpack("<Q", buffer[:8])
    if size > min(MAX_HEADER_BYTES, len(buffer) - 8):
        if size <= MAX_HEADER_BYTES:
            raise FormatError(f"{where} is truncated: the header needs {size} bytes, the file has {len(buffer) - 8}")
        raise FormatError(f"{where} is not an .elstm model (header size {size} is implausible)")
    header = _parse_header(buffer[8:8 + size], size, where)
    meta = header.pop("__metadata__")
    data = buffer[8 + size:]
    spans, tensors = [], {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(info["shape"])
            start, end = info["data_offsets"]
            if not all(type(v) is int and 0 <= v < 1 << 48 for v in (*shape, start, end)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{where}: tensor '{name}' has a malformed header entry") from None
        if end - start != math.prod(shape) * dtype.itemsize:
            raise FormatError(f"{where}: tensor '{name}' has shape {shape} but {end - start} bytes")
        if start < 0 or end > len(data):
            raise FormatError(f"{where} is truncated: tensor '{name}' ends at byte {end} of a "
                              f"{len(data)}-byte data section")
        spans.append((start, end, name))
        tensors[name] = (dtype, shape, start)
    spans.sort()
    covered = 0
    for start, end, name in spans:
        if start != covered:
            raise FormatError(f"{where}: tensor '{name}' overlaps another or leaves a gap")
        covered = end
    if covered != len(data):
        raise FormatError(f"{where}: {len(data) - covered} bytes follow the last tensor (corrupt or appended file)")
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise FormatError(f"{where} is corrupt: the tensor bytes do not match the digest in its header")
    arrays = {
        name: np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start).reshape(shape)
        for name, (dtype, shape, start) in tensors.items() if not _PAD_NAME.fullmatch(name)
    }
    for name, (dtype, shape, _) in tensors.items():
        if _PAD_NAME.fullmatch(name) and (dtype != np.int8 or len(shape) != 1 or shape[0] >= aligned.ALIGNMENT):
            raise FormatError(f"{where}: padding tensor '{name}' is not int8 bytes fewer than {aligned.ALIGNMENT}")
    graph_json = meta.get("graph")
    if not isinstance(graph_json, str):
        raise FormatError(f"{where} has no model graph")
    return Graph.from_json(graph_json, arrays)
