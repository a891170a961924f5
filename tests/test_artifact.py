"""The .elstm container: round trips, memory mapping, and refusal of damaged files."""

import json
import struct

import numpy as np
import pytest

import edgelstm
from edgelstm import artifact
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


def test_file_is_safetensors_with_aligned_tensors(elstm_file):
    data = elstm_file.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    assert (8 + size) % 8 == 0
    meta = header.pop("__metadata__")
    assert meta["format"] == "elstm" and meta["format_version"] == "1"
    for info in header.values():
        assert info["data_offsets"][0] % 4 == 0


def test_load_from_bytes(elstm_file):
    model = edgelstm.load(elstm_file.read_bytes())
    assert model.output_shape == (2,)


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
    _rewrite_header(elstm_file, lambda h: h["__metadata__"].update(format_version="2"))
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
