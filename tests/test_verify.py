"""Cross-checking against LiteRT and ONNX Runtime: every .tflite twin (tools/make_tf_twins.py)
verifies against its converted Keras model; a deliberately mismatched pair fails."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgelstm
from edgelstm import crosscheck
from edgelstm.cli import main
from edgelstm.passes.quantize import ErrorReport

from .conftest import MODELS

TWINS = json.loads((MODELS / "tflite" / "manifest.json").read_text())


def _tolerance(twin):
    """float32 twins must agree to float precision; dynamic-range int8 ones to their recorded error."""
    return 1e-5 if twin["quantization"] == "float32" else max(2 * twin["max_abs_error_vs_keras"], 1e-3)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elstm")
    paths = {}
    for name in {t["keras_model"] for t in TWINS}:
        source = next(MODELS.glob(f"{name}.keras"))
        paths[name] = folder / f"{name}.elstm"
        edgelstm.convert(source, paths[name])
    return paths


@pytest.mark.parametrize("twin", TWINS, ids=lambda t: t["name"])
def test_tflite_twin_verifies(twin, converted):
    model = edgelstm.load(converted[twin["keras_model"]])
    x = np.load(MODELS / "tflite" / twin["input"])
    rows = crosscheck.verify(model, MODELS / "tflite" / twin["file"], x, atol=_tolerance(twin), rtol=0)
    assert len(rows) == 1
    assert rows[0].passed != twin["expect_mismatch"], rows


def test_verify_cli_passes_and_fails(converted):
    runner = CliRunner()
    good = next(t for t in TWINS if t["name"] == "sensor_forecast_f32")
    bad = next(t for t in TWINS if t["expect_mismatch"])
    for twin, code in ((good, 0), (bad, 1)):
        result = runner.invoke(main, ["verify", str(converted["sensor_forecast"]), "--tflite",
                                      str(MODELS / "tflite" / twin["file"]), "-i",
                                      str(MODELS / "tflite" / twin["input"])])
        assert result.exit_code == code, result.output
        assert ("OK: 1 of 1" if code == 0 else "FAIL: 0 of 1") in result.output
        assert "max abs error" in result.output


@pytest.mark.parametrize("batch", [1, 3, 11])
def test_frozen_batch_tflite_runs_in_chunks(batch, converted):
    """LiteRT's LSTM exports have a frozen batch (8 here): other batches are split and padded."""
    x = np.random.default_rng(batch).normal(size=(batch, 50, 1)).astype(np.float32)
    for name in ("sensor_forecast_f32", "sensor_forecast_fused_f32"):
        rows = crosscheck.verify(edgelstm.load(converted["sensor_forecast"]), MODELS / "tflite" / f"{name}.tflite",
                                 x, atol=1e-5, rtol=0)
        assert rows[0].shape == (batch, 1) and rows[0].passed


def test_verify_against_onnx_runtime(tmp_path):
    fixture = next(f for f in json.loads((MODELS / "onnx" / "manifest.json").read_text())
                   if f["name"] == "lstm_last_script")
    edgelstm.convert(MODELS / "onnx" / fixture["file"], tmp_path / "m.elstm")
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "m.elstm"), "--onnx",
                                       str(MODELS / "onnx" / fixture["file"]), "-i",
                                       str(MODELS / "onnx" / fixture["input"])])
    assert result.exit_code == 0, result.output


TASKS = json.loads((MODELS / "tasks" / "manifest.json").read_text())


@pytest.mark.parametrize("entry", TASKS, ids=lambda e: e["name"])
def test_int8_task_models_verify_against_litert_dynamic_range_at_the_stated_tolerance(entry, tmp_path):
    """Converted with --eval on the test rows, verified on them against LiteRT's float32 and
    dynamic-range int8 twins at the default tolerance the conversion report states."""
    folder = MODELS / "tasks"
    x = np.load(folder / entry["test_x"])
    graph = edgelstm.convert(folder / entry["file"], tmp_path / "int8.elstm", quantize="int8", eval_data=x)
    model = edgelstm.load(tmp_path / "int8.elstm")
    atol, why = crosscheck.default_atol(model)
    assert atol == ErrorReport(**graph.metadata["quantization"]["error"]).verify_atol and "4x" in why
    for twin in (entry["tflite_dynint8"], entry["tflite_f32"]):
        (row,) = crosscheck.verify(model, folder / twin, x)
        assert row.passed, (twin, row)
    np.testing.assert_allclose(np.load(folder / entry["tflite_dynint8_output"]), model.predict(x), atol=atol)


def test_int8_example_verifies_against_its_dynamic_range_twins_and_a_mismatch_still_fails(tmp_path):
    graph = edgelstm.convert(MODELS / "sensor_forecast.keras", tmp_path / "int8.elstm", quantize="int8")
    error = graph.metadata["quantization"]["error"]
    assert error["data"].startswith("random inputs")
    runner = CliRunner()
    for twin in TWINS:
        if twin["keras_model"] != "sensor_forecast":
            continue
        result = runner.invoke(main, ["verify", str(tmp_path / "int8.elstm"), "--tflite",
                                      str(MODELS / "tflite" / twin["file"]), "-i", str(MODELS / "tflite" / twin["input"])])
        assert result.exit_code == (1 if twin["expect_mismatch"] else 0), (twin["name"], result.output)
        assert "tolerance: atol=" in result.output and f"{error['max_abs']:.3g}" in result.output


def test_float_models_verify_at_float_precision_by_default(converted):
    assert crosscheck.default_atol(edgelstm.load(converted["sensor_forecast"])) == (1e-5, "float32 precision")


@pytest.mark.parametrize("max_abs, atol", [(0.0794, 0.32), (0.0061, 0.025), (0.0028, 0.012), (0.05, 0.2), (0.0, 1e-5)])
def test_verify_tolerance_is_four_times_the_error_rounded_up(max_abs, atol):
    report = ErrorReport(data="x", max_abs=max_abs, relative_rmse=0.0, per_output=[])
    assert report.verify_atol == pytest.approx(atol) and report.verify_atol >= 4 * max_abs


def test_verify_needs_exactly_one_reference(converted):
    result = CliRunner().invoke(main, ["verify", str(converted["sensor_forecast"]), "-i",
                                       str(MODELS / "sensor_forecast.input.npy")])
    assert result.exit_code == 2 and "exactly one of --tflite and --onnx" in result.output


def test_quantized_tensors_go_through_scale_and_zero_point():
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.array([[-1.0, 0.0, 0.5, 100.0]], np.float32)
    q = crosscheck._quantize(x, detail)
    assert q.dtype == np.int8 and q.tolist() == [[-23, -3, 7, 127]]
    np.testing.assert_allclose(crosscheck._dequantize(q, detail), [[-1.0, 0.0, 0.5, 6.5]], atol=1e-6)
    plain = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert crosscheck._quantize(x, plain).dtype == np.float32 and crosscheck._dequantize(x, plain) is x


def test_convert_and_inspect_onnx_through_the_cli(tmp_path):
    runner = CliRunner()
    source = MODELS / "onnx" / "lstm_bidir2_seq_dynamo.onnx"
    result = runner.invoke(main, ["convert", str(source), "-o", str(tmp_path / "m.elstm")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["inspect", str(tmp_path / "m.elstm")])
    assert result.exit_code == 0 and "source_format: onnx" in result.output
    result = runner.invoke(main, ["convert", str(MODELS / "onnx" / "neg_loop.onnx"), "-o", str(tmp_path / "x.elstm")])
    assert result.exit_code == 1 and "Loop" in result.output and "Traceback" not in result.output
