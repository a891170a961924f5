"""`edgelstm bench` and the benchmark library: the figures exist, are sane and agree with each other."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgelstm import benchmark, convert, load
from edgelstm.cli import main

from .conftest import MODELS

TFLITE = MODELS / "tflite" / "sensor_forecast_f32.tflite"
ONNX = MODELS / "tf2onnx" / "sensor_forecast.onnx"


@pytest.fixture(scope="module")
def forecast(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "forecast.elstm"
    convert(MODELS / "sensor_forecast.keras", path)
    return path


def test_bench_times_ours_and_peers_on_the_same_input(forecast, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["bench", str(forecast), "--batch", "3", "--threads", "1", "--min-time", "0.05",
                                       "--compare", f"tflite:{TFLITE}", "--compare", f"onnx:{ONNX}",
                                       "--no-memory", "--no-cold-start", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    names = [e["engine"] for e in report["engines"]]
    assert names == ["edgelstm", f"litert ({TFLITE.name})", f"onnxruntime ({ONNX.name})"]
    for engine in report["engines"]:
        latency = engine["latency"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] and latency["runs"] >= 5
        assert engine["throughput"] == pytest.approx(3 / latency["p50"])
    assert all(e["max_abs_diff"] < 1e-5 for e in report["engines"][1:])  # the peers ran the same input
    assert set(report["ratios"]) == set(names[1:])
    assert report["batch"] == 3 and report["seq_len"] == 50 and report["threads"] == 1
    assert report["stream_step"]["p50"] > 0
    assert "edgelstm / onnxruntime" in result.output and "Stream.step" in result.output


def test_cold_start_and_peak_memory_come_from_fresh_processes(forecast, tmp_path):
    model = load(forecast)
    x_path = tmp_path / "x.npy"
    np.save(x_path, benchmark.bench_input(model, 2, None))
    seconds = benchmark.cold_start(str(forecast), str(x_path))
    assert 0 < seconds < 60
    ours = benchmark.peak_memory("elstm", str(forecast), str(x_path), 1)
    theirs = benchmark.peak_memory("onnx", str(ONNX), str(x_path), 1)
    assert ours > 10 * 2**20 and theirs > 10 * 2**20  # a Python process with numpy is tens of MiB
    assert ours != theirs


def test_bench_input_follows_the_model(forecast):
    model = load(forecast)
    assert benchmark.bench_input(model, 4, None).shape == (4, 50, 1)
    assert benchmark.bench_input(model, 4, 50).dtype == np.float32
    with pytest.raises(Exception, match="exactly 50 steps"):
        benchmark.bench_input(model, 1, 20)
    text_model = load(MODELS / "text_classifier.keras")
    ids = benchmark.bench_input(text_model, 2, None if text_model.input_shape[0] else 12)
    assert ids.dtype == np.int64 and ids.min() >= 1


@pytest.mark.parametrize("value, message", [("tflite", "use tflite:PATH"), ("pt:model.pt", "use tflite:PATH"),
                                            ("onnx:/no/such.onnx", "is not a file")])
def test_bench_refuses_bad_peers(forecast, value, message):
    result = CliRunner().invoke(main, ["bench", str(forecast), "--compare", value])
    assert result.exit_code == 2 and message in result.output


def test_bench_refuses_thread_counts_numba_cannot_give(forecast):
    result = CliRunner().invoke(main, ["bench", str(forecast), "--threads", "4096", "--no-memory",
                                       "--no-cold-start"])
    assert result.exit_code == 1 and "--threads must be between 1 and" in result.output
