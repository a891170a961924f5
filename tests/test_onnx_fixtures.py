"""Every ONNX fixture (tools/make_onnx_models.py, tools/make_tf_twins.py) converts and matches the
outputs ONNX Runtime produced; refused models and damaged files give clear errors."""

import json
import shutil

import numpy as np
import pytest

import edgelstm
from edgelstm.crosscheck import to_source_output
from edgelstm.errors import FormatError, UnsupportedError

from .conftest import MODELS

ATOL = 1e-5


def _manifest(folder):
    path = MODELS / folder / "manifest.json"
    return [dict(f, folder=folder) for f in json.loads(path.read_text())] if path.exists() else []


ALL = _manifest("onnx") + _manifest("tf2onnx")
FIXTURES = [f for f in ALL if not f.get("expect_error")]
REFUSED = [f for f in ALL if f.get("expect_error")]


def _path(fixture, key):
    return MODELS / fixture["folder"] / fixture[key]


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f"{f['folder']}/{f['name']}")
def test_onnx_fixture_matches_onnx_runtime(fixture, tmp_path):
    out = tmp_path / "model.elstm"
    edgelstm.convert(_path(fixture, "file"), out)
    x, expected = np.load(_path(fixture, "input")), np.load(_path(fixture, "output"))
    model = edgelstm.load(out)
    layout = model.graph.metadata.get("source_layout")  # the ONNX input may be time-major
    ours = x if layout is None else np.transpose(x, [layout["input"].index(a) for a in ("B", "T", "F")[:x.ndim]])
    got = to_source_output(model, model.predict(ours))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", REFUSED, ids=lambda f: f"{f['folder']}/{f['name']}")
def test_refused_onnx_models_name_the_problem(fixture, tmp_path):
    with pytest.raises((UnsupportedError, FormatError), match=fixture["expect_error"]):
        edgelstm.convert(_path(fixture, "file"), tmp_path / "out.elstm")
    assert not (tmp_path / "out.elstm").exists()


def test_missing_external_data_is_named(tmp_path):
    dynamo = [f for f in FIXTURES if (MODELS / f["folder"] / (f["file"] + ".data")).exists()]
    if not dynamo:
        pytest.skip("no fixture with external data")
    shutil.copy(_path(dynamo[0], "file"), tmp_path / "m.onnx")
    with pytest.raises(FormatError, match="external data"):
        edgelstm.convert(tmp_path / "m.onnx", tmp_path / "out.elstm")


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if f.get("keras_model")], ids=lambda f: f["name"])
def test_onnx_twin_gives_the_same_ir_as_its_keras_model(fixture):
    """One runtime: the tf2onnx export of a Keras model imports to the Keras importer's IR."""
    ours = edgelstm.import_model(_path(fixture, "file"))
    keras = edgelstm.import_model(next(MODELS.glob(fixture["keras_model"] + ".keras")))
    assert [l.kind for l in ours.layers] == [l.kind for l in keras.layers]
    for a, b in zip(ours.layers, keras.layers):
        # A sequence length the export left open (None) may be fixed in the Keras model.
        assert all(p == q or None in (p, q) for p, q in zip(a.shape, b.shape)) and len(a.shape) == len(b.shape)
        assert sorted(a.weights) == sorted(b.weights)
        for name in a.weights:
            np.testing.assert_allclose(a.weights[name], b.weights[name], atol=1e-6)
        # Mask handling differs by design and only matters for masked inputs, which ONNX models lack.
        attrs = {k: v for k, v in a.attrs.items() if k not in ("mask_combine", "zero_output_for_mask", "shape")}
        assert attrs == {k: b.attrs[k] for k in attrs}


def test_split_without_sizes_follows_the_onnx_rule():
    from edgelstm.importers.onnx import _split_sizes

    assert _split_sizes(5, 2) == [3, 2] and _split_sizes(6, 3) == [2, 2, 2] and _split_sizes(7, 3) == [3, 3, 1]
