"""The fuzzing harness: hypothesis strategies that mutate valid model files, and the property
every reader must keep: a file is either a model that runs or an `EdgeLSTMError`, never another
exception. test_fuzz.py runs a bounded number of examples; set EDGELSTM_FUZZ_EXAMPLES for a long
run by hand (README, "Reliability")."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

import edgelstm
from edgelstm import artifact
from edgelstm.errors import EdgeLSTMError

EXAMPLES = int(os.environ.get("EDGELSTM_FUZZ_EXAMPLES", "150"))
os.environ.setdefault("EDGELSTM_READ_TIMEOUT", "10")  # a looping HDF5 read costs 10 s, not 60

# JSON values that break assumptions: wrong types, huge, negative, empty, nested
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**40, "", "lstm", "F32", "I8", "sigmoid", "softmax", "input", "../x"]),
    st.lists(st.integers(-3, 2**20), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def byte_mutations(draw, original: bytes) -> bytes:
    """1-8 flips, overwrites, insertions, deletions or a truncation of `original`."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


def _split_elstm(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def _join_elstm(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _paths(value, prefix=()):
    """Every (path, leaf) inside nested dicts and lists."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))
    yield prefix, value


@st.composite
def elstm_header_mutations(draw, original: bytes) -> bytes:
    """A valid .elstm whose graph JSON or tensor table has 1-3 values replaced by odd ones: the
    digest still matches, so these reach the graph checks and the runtime."""
    header, body = _split_elstm(original)
    graph = json.loads(header["__metadata__"]["graph"])
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["graph", "tensors"]))
        tree = graph if target == "graph" else {k: v for k, v in header.items() if k != "__metadata__"}
        path, _ = draw(st.sampled_from([p for p in _paths(tree) if p[0]]))
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(ODD_VALUES)
        if target == "tensors":
            header.update(tree)
    header["__metadata__"]["graph"] = json.dumps(graph)
    return _join_elstm(header, body)


def probe_input(model: edgelstm.Model) -> np.ndarray:
    shape = (2,) + tuple(3 if d is None else min(d, 64) for d in model.input_shape)
    if model.input_dtype.kind == "i":
        return np.zeros(shape, np.int64)
    return np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def read_and_run(data: bytes, suffix: str) -> str:
    """Read bytes as a model file of `suffix` and run it; 'ok' or 'refused', anything else raises."""
    try:
        if suffix == artifact.SUFFIX:
            graph = artifact.read(data)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"model{suffix}"
                path.write_bytes(data)
                graph = edgelstm.import_model(path)
        model = edgelstm.Model(graph)
        if all(d is None or d <= 4096 for d in model.input_shape):
            model.predict(probe_input(model))
        return "ok"
    except EdgeLSTMError:
        return "refused"
