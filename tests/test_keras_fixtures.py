"""Every Keras fixture in models/ converts and matches the outputs Keras produced (tools/make_models.py)."""

import numpy as np
import pytest

import edgelstm
from edgelstm.errors import UnsupportedError

from .conftest import MODELS, manifest

ATOL = 1e-5
FIXTURES = [f for f in manifest() if not f.get("expect_error")]
REFUSED = [f for f in manifest() if f.get("expect_error")]


def _load(fixture, tmp_path, backend):
    path = tmp_path / (fixture["name"] + ".elstm")
    edgelstm.convert(MODELS / fixture["file"], path)
    return edgelstm.load(path, backend=backend)


def _io(fixture):
    return np.load(MODELS / fixture["input"]), np.load(MODELS / fixture["output"])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f["name"])
def test_fixture_matches_framework(fixture, backend, tmp_path):
    model = _load(fixture, tmp_path, backend)
    x, expected = _io(fixture)
    fixed = model.input_shape[0]
    if fixed is not None and x.shape[1] > fixed:  # a stateful model fed in chunks: the stream's job
        stream = model.stream(batch=x.shape[0])
        got = np.stack([stream.step(x[:, t]) for t in range(x.shape[1])], axis=1)
    else:
        got = model.predict(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", [f for f in FIXTURES if f["streamable"]], ids=lambda f: f["name"])
def test_streaming_equals_whole_sequence(fixture, tmp_path):
    model = _load(fixture, tmp_path, "cpu")
    x, expected = _io(fixture)
    stream = model.stream(batch=x.shape[0])
    steps = [stream.step(x[:, t]) for t in range(x.shape[1])]
    if expected.ndim == steps[0].ndim + 1:  # a sequence output: step t gives output t
        np.testing.assert_allclose(np.stack(steps, axis=1), expected, atol=ATOL, rtol=0)
    else:  # one output per sequence: step t gives the output for the prefix up to t
        np.testing.assert_allclose(steps[-1], expected, atol=ATOL, rtol=0)
        if model.input_shape[0] is None:
            np.testing.assert_allclose(steps[2], model.predict(x[:, :3]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", REFUSED, ids=lambda f: f["name"])
def test_unsupported_models_are_refused_by_name(fixture, tmp_path):
    with pytest.raises(UnsupportedError, match=fixture["expect_error"]) as error:
        edgelstm.convert(MODELS / fixture["file"], tmp_path / "out.elstm")
    assert "supported" in str(error.value)
    assert not (tmp_path / "out.elstm").exists()


@pytest.mark.parametrize("name, cut", [("lstm_basic.keras", 0.5), ("k2_lstm_basic.h5", 0.5),
                                       ("lstm_basic.keras", 0.98), ("k2_lstm_basic.h5", 0.9)])
def test_truncated_keras_files_are_refused(name, cut, tmp_path):
    data = (MODELS / name).read_bytes()
    damaged = tmp_path / name
    damaged.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(edgelstm.FormatError):
        edgelstm.convert(damaged, tmp_path / "out.elstm")
    assert not (tmp_path / "out.elstm").exists()


def test_garbage_is_refused_naming_supported_kinds(tmp_path):
    garbage = tmp_path / "model.h5"
    garbage.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(edgelstm.FormatError, match="supported: .elstm"):
        edgelstm.convert(garbage, tmp_path / "out.elstm")


def test_gru_without_reset_after_key_follows_its_bias(tmp_path):
    """Keras before 2.1 wrote no reset_after; a 1-D bias means the reset gate acts before the product."""
    import json
    import shutil

    import h5py

    path = tmp_path / "old_gru.h5"
    shutil.copy(MODELS / "k2_gru_reset_after_false.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            layer["config"].pop("reset_after", None)
        f.attrs["model_config"] = json.dumps(config)
    x = np.load(MODELS / "k2_gru_reset_after_false.input.npy")
    expected = np.load(MODELS / "k2_gru_reset_after_false.output.npy")
    np.testing.assert_allclose(edgelstm.load(path).predict(x), expected, atol=ATOL, rtol=0)
