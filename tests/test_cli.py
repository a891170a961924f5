"""The edgelstm command through click's runner, and once as a real process."""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgelstm.cli import main

from .conftest import MODELS

EXAMPLE = MODELS / "sensor_forecast.keras"


@pytest.fixture
def runner():
    return CliRunner()


def test_convert_inspect_run(runner, tmp_path):
    out = tmp_path / "forecast.elstm"
    result = runner.invoke(main, ["convert", str(EXAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Converted" in result.output and out.exists()

    result = runner.invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "lstm" in result.output and "parameters" in result.output and "float32" in result.output

    result = runner.invoke(main, ["inspect", "--json", str(out)])
    assert '"kind": "lstm"' in result.output

    y_path = tmp_path / "y.npy"
    x_path = MODELS / "sensor_forecast.input.npy"
    for backend in ("cpu", "reference"):
        result = runner.invoke(main, ["run", str(out), "--input", str(x_path), "--output", str(y_path),
                                      "--backend", backend, "--batch-size", "3"])
        assert result.exit_code == 0, result.output
        np.testing.assert_allclose(np.load(y_path), np.load(MODELS / "sensor_forecast.output.npy"), atol=1e-5)

    result = runner.invoke(main, ["run", str(out), "--input", str(x_path)])
    assert result.exit_code == 0 and result.output.startswith("[[")


def test_errors_are_one_line_without_traceback(runner, tmp_path):
    bad = tmp_path / "bad.elstm"
    bad.write_bytes(b"\x00" * 100)
    result = runner.invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output

    result = runner.invoke(main, ["convert", str(MODELS / "neg_lambda.keras"), "-o", str(tmp_path / "x.elstm")])
    assert result.exit_code == 1 and "Lambda" in result.output and not (tmp_path / "x.elstm").exists()

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 5, 3), np.float32))
    result = runner.invoke(main, ["run", str(EXAMPLE), "--input", str(wrong)])
    assert result.exit_code == 1 and "expected ('batch', 50, 1)" in result.output


def test_unwritable_output_is_named(runner, tmp_path):
    target = tmp_path / "missing" / "y.npy"
    result = runner.invoke(main, ["run", str(EXAMPLE), "-i", str(MODELS / "sensor_forecast.input.npy"),
                                  "-o", str(target)])
    assert result.exit_code == 1 and f"No such file or directory: {target}" in result.output


def test_usage_errors_exit_2(runner):
    assert runner.invoke(main, ["run"]).exit_code == 2
    assert runner.invoke(main, ["frobnicate"]).exit_code == 2


def test_debug_shows_the_traceback(runner, tmp_path):
    bad = tmp_path / "bad.elstm"
    bad.write_bytes(b"nonsense")
    result = runner.invoke(main, ["--debug", "inspect", str(bad)])
    assert result.exit_code == 1 and result.exception is not None


def test_real_process(tmp_path):
    out = tmp_path / "forecast.elstm"
    done = subprocess.run([sys.executable, "-m", "edgelstm", "convert", str(EXAMPLE), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "edgelstm", "run", str(out), "-i", str(tmp_path / "missing.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "does not exist" in done.stderr
