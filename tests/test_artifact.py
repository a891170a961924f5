"""The .elstm container: round trips, memory mapping, and refusal of damaged files."""

import hashlib
import json
import struct

import numpy as np
import pytest

import edgelstm
from edgelstm import artifact, runtime
from edgelstm.errors import FormatError

from .conftest import small_graph


def test_round_trip_keeps_graph_and_weights(elstm_file):
    original = small_graph()
    loaded = artifact.read(elstm_file)
    assert [(l.name, l.kind, l.inputs, l.attrs) for l in loaded.layers] == \
           [(l.name, l.kind, l.inputs, l.attrs) for l in original.layers]
    for a, b in zip(loaded.layers, original.layers):
        assert a.weights.keys() == b.weights.keys()
        for name in a.weights:
            np.testing.assert_array_equal(a.weights[name], b.weights[name])
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(edgelstm.load(elstm_file).predict(x),
                                  edgelstm.Model(original).predict(x))


def test_weights_are_memory_mapped_read_only(elstm_file):
    weights = artifact.read(elstm_file).layer("lstm").weights["kernel"]
    assert not weights.flags.writeable and not weights.flags.owndata


def test_file_is_safetensors_with_tensors_on_64_byte_boundaries(elstm_file):
    data = elstm_file.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    assert (8 + size) % 64 == 0
    meta = header.pop("__metadata__")
    assert meta["format"] == "elstm" and meta["format_version"] == "2"
    spans = sorted(info["data_offsets"] for info in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no holes
    assert len(spans) > 7  # small_graph's seven tensors, and padding between them
    for name, info in header.items():
        if name.startswith("__pad__/"):
            assert info["dtype"] == "I8" and 0 < info["shape"][0] < 64
        else:
            assert info["data_offsets"][0] % 64 == 0


def test_loaded_weights_are_aligned_from_a_file_and_from_bytes(elstm_file):
    for source in (elstm_file, elstm_file.read_bytes()):
        for layer in artifact.read(source).layers:
            assert all(w.ctypes.data % 64 == 0 for w in layer.weights.values())


def _as_version_1(path):
    """The file as format version 1 wrote it: no padding, tensors packed end to end."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + size]), data[8 + size:]
    meta = header.pop("__metadata__")
    tensors = [(name, body[slice(*info["data_offsets"])]) for name, info in header.items()
               if not name.startswith("__pad__/")]
    offset, chunks = 0, []
    for name, raw in tensors:
        header[name]["data_offsets"] = [offset, offset + len(raw)]
        offset += len(raw)
        chunks.append(raw)
    header = {name: info for name, info in header.items() if not name.startswith("__pad__/")}
    meta.update(format_version="1", sha256=hashlib.sha256(b"".join(chunks)).hexdigest())
    header["__metadata__"] = meta
    head = json.dumps(header).encode()
    head += b" " * (-(8 + len(head)) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(chunks))


def test_version_1_files_still_read_and_run_from_aligned_copies(elstm_file):
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    expected = edgelstm.load(elstm_file).predict(x)
    _as_version_1(elstm_file)
    assert b'"format_version": "1"' in elstm_file.read_bytes()
    model = edgelstm.load(elstm_file)
    np.testing.assert_array_equal(model.predict(x), expected)
    weights = [w for op in model._ops for w in runtime.kernel_weights(op[0]).values() if w.size]
    assert weights and all(w.ctypes.data % 64 == 0 for w in weights)


def test_a_padding_tensor_that_is_not_padding_is_refused(elstm_file):
    def as_floats(header):  # a pad of 4k bytes relabelled as k float32: consistent, but not padding
        pad = next(name for name, info in header.items() if name.startswith("__pad__/") and info["shape"][0] % 4 == 0)
        header[pad].update(dtype="F32", shape=[header[pad]["shape"][0] // 4])
    _rewrite_header(elstm_file, as_floats)
    with pytest.raises(FormatError, match="padding tensor"):
        edgelstm.load(elstm_file)


def test_load_from_bytes(elstm_file):
    model = edgelstm.load(elstm_file.read_bytes())
    assert model.output_shape == (2,)


def test_load_from_a_strided_memoryview(elstm_file):
    data = np.frombuffer(elstm_file.read_bytes(), np.uint8)
    spread = np.repeat(data, 2)[::2]  # the same bytes, every other one of a larger buffer
    assert artifact.read(memoryview(spread)).output == small_graph().output


def test_a_layer_named_like_the_padding_round_trips():
    graph = small_graph()
    old = graph.layers[1].name
    graph.layers[1].name = "__pad__"
    for layer in graph.layers:
        layer.inputs = ["__pad__" if name == old else name for name in layer.inputs]
    loaded = artifact.read(artifact.to_bytes(graph))
    np.testing.assert_array_equal(loaded.layer("__pad__").weights["kernel"], graph.layers[1].weights["kernel"])


def _damage(path, edit):
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(data)))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d[:-10], "truncated"),
    (lambda d: d[:40], "truncated"),
    (lambda d: d[:5], "too short"),
    (lambda d: d + b"junk", "follow the last tensor"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "corrupt"),
    (lambda d: b"\xff" * 8 + d[8:], "implausible"),
    (lambda d: b"GIF89a this is not a model", "not an .elstm model"),
    (lambda d: b"", "empty"),
])
def test_damaged_files_are_refused(elstm_file, edit, message):
    _damage(elstm_file, edit)
    with pytest.raises(FormatError, match=message):
        edgelstm.load(elstm_file)


def _rewrite_header(path, change):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    change(header)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + size:])


def test_newer_format_version_is_refused_with_advice(elstm_file):
    _rewrite_header(elstm_file, lambda h: h["__metadata__"].update(format_version="3"))
    with pytest.raises(FormatError, match="newer than this edgelstm reads.*upgrade"):
        edgelstm.load(elstm_file)


def test_inconsistent_graph_is_refused(elstm_file):
    def break_units(header):
        graph = json.loads(header["__metadata__"]["graph"])
        graph["layers"][1]["attrs"]["units"] = 6
        header["__metadata__"]["graph"] = json.dumps(graph)
    _rewrite_header(elstm_file, break_units)
    with pytest.raises(FormatError, match="layer 'lstm'.*shape"):
        edgelstm.load(elstm_file)


def test_tensor_shape_lie_is_refused(elstm_file):
    _rewrite_header(elstm_file, lambda h: h["lstm/kernel"].update(shape=[3, 21]))
    with pytest.raises(FormatError, match="lstm/kernel"):
        edgelstm.load(elstm_file)


def test_write_is_atomic(tmp_path):
    target = tmp_path / "model.elstm"
    target.write_bytes(b"previous")

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifact.atomic_write(target, fail)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.elstm"]


def _edit_graph(path, change):
    def edit(header):
        graph = json.loads(header["__metadata__"]["graph"])
        change(graph)
        header["__metadata__"]["graph"] = json.dumps(graph)
    _rewrite_header(path, edit)


def _set_attr(index, key, value):
    return lambda g: g["layers"][index]["attrs"].__setitem__(key, value)


@pytest.mark.parametrize("change", [
    _set_attr(1, "units", "5"), _set_attr(1, "units", 5.0), _set_attr(1, "units", -5), _set_attr(1, "units", 1e999),
    _set_attr(1, "return_sequences", "false"), _set_attr(1, "activation", "exp"), _set_attr(0, "shape", 5),
    _set_attr(0, "shape", [None, "3"]), _set_attr(3, "activation", None),
    lambda g: g["layers"][1]["attrs"].pop("go_backwards"),
    lambda g: g["layers"][2].__setitem__("inputs", [["lstm"]]),
    lambda g: g["layers"][2].__setitem__("inputs", ["lstm", "lstm"]),
    lambda g: g["layers"][2].__setitem__("kind", "transformer"),
    lambda g: g["layers"][3].__setitem__("weights", ["kernel"]),
    lambda g: g.__setitem__("output", "nowhere"),
    lambda g: g.__setitem__("layers", [[[[]]]]),
])
def test_crafted_graphs_are_refused(elstm_file, change):
    _edit_graph(elstm_file, change)
    with pytest.raises(FormatError):
        edgelstm.load(elstm_file)


@pytest.mark.parametrize("change", [
    lambda h: h["__metadata__"].update(format_version=["1"]),
    lambda h: h["__metadata__"].update(format_version="-1"),
    lambda h: h["__metadata__"].update(graph="[" * 100000),
    lambda h: h["lstm/kernel"].update(shape=[2 ** 62, 4, 1]),
    lambda h: h["lstm/kernel"].update(data_offsets=[-8, 232]),
])
def test_crafted_headers_are_refused(elstm_file, change):
    _rewrite_header(elstm_file, change)
    with pytest.raises(FormatError):
        edgelstm.load(elstm_file)


def test_deeply_nested_header_is_refused(tmp_path):
    head = b"[" * 200000
    path = tmp_path / "deep.elstm"
    path.write_bytes(struct.pack("<Q", len(head)) + head)
    with pytest.raises(FormatError):
        edgelstm.load(path)


def test_written_files_get_the_usual_permissions(elstm_file):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert elstm_file.stat().st_mode & 0o777 == 0o666 & ~umask
