"""int8 against float32, ours and the peers' (LiteRT dynamic range, ONNX Runtime quantize_dynamic):
file size, batch-1 latency on one thread and the output error, for the grid's models (LSTM and GRU,
hidden 32-512, 50 steps of 8 features), the trained task models in models/tasks (task metric too)
and the shipped examples; writes tables into bench/RESULTS.md between its int8 markers.

    python bench/quantization.py --tf-python /work/tfvenv/bin/python

The grid's Keras models and LiteRT exports are made (and cached in bench/.models) as run_grid.py
makes them, under the TensorFlow interpreter given by --tf-python. LiteRT's int8 twin is the
WHILE-loop export converted with Optimize.DEFAULT (hybrid int8 matmuls, float activations); ONNX
Runtime's is `quantize_dynamic` of the grid's ONNX model (DynamicQuantizeLSTM for LSTM; it has no
quantized GRU, so its GRU "int8" runs float).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import edgelstm
from edgelstm import benchmark, crosscheck
from edgelstm.passes.quantize import compare

from results import best_p50, write_section  # noqa: E402  (bench/ is this script's folder)
from run_grid import FEATURES, make_models  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
TASKS = MODELS / "tasks"
EXAMPLES = ("sensor_forecast", "text_classifier", "lstm_autoencoder")
HIDDEN = (32, 64, 128, 256, 512)
STEPS = 50
ROUNDS = 2  # engines interleaved, each figure the better of two rounds


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def tflite_call(path: Path, x: np.ndarray):
    run = crosscheck.tflite_runner(path, x, threads=1)
    return lambda: run(x)


def grid_row(stem: Path, min_time: float) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path, onnx_int8 = stem.with_suffix(".int8.elstm"), stem.with_suffix(".int8.onnx")
    edgelstm.convert(stem.with_suffix(".elstm"), int8_path, quantize="int8")
    if not onnx_int8.exists():
        quantize_dynamic(str(stem.with_suffix(".onnx")), str(onnx_int8), weight_type=QuantType.QInt8)
    x = np.random.default_rng(0).normal(size=(1, STEPS, FEATURES)).astype(np.float32)
    float_model, int8_model = edgelstm.load(stem.with_suffix(".elstm")), edgelstm.load(int8_path)
    error = compare(float_model.graph, int8_model.graph,
                    np.random.default_rng(1).normal(size=(16, STEPS, FEATURES)).astype(np.float32), "random")
    calls = {"f32": lambda: float_model.predict(x), "int8": lambda: int8_model.predict(x)}
    for name, path in (("ort", stem.with_suffix(".onnx")), ("ort8", onnx_int8)):
        run = crosscheck.onnx_runner(path, 1)
        calls[name] = lambda run=run: run(x)
    calls["litert8"] = tflite_call(Path(f"{stem}_t{STEPS}_b1.while.dynint8.tflite"), x)
    t = best_p50(calls, min_time, ROUNDS)
    best_peer = min(t["ort8"], t["litert8"])
    f32_bytes, int8_bytes = stem.with_suffix(".elstm").stat().st_size, int8_path.stat().st_size
    cell, hidden = stem.name.split("_h")
    return (f"| {cell.upper()}({hidden}) | {f32_bytes / 1024:,.1f} KiB | {int8_bytes / 1024:,.1f} KiB | "
            f"{int8_bytes / f32_bytes:.3f} | {_us(t['f32'])} | {_us(t['int8'])} | {t['int8'] / t['f32']:.2f} | "
            f"{_us(t['ort'])} | {_us(t['ort8'])} | {_us(t['litert8'])} | {t['int8'] / best_peer:.2f} | "
            f"{100 * error.relative_rmse:.2f}% |")


def task_metric(entry: dict, output: np.ndarray, targets: np.ndarray) -> float:
    if entry["metric"] == "accuracy":
        return float(np.mean(output.argmax(axis=-1) == targets))
    return float(np.mean((output - targets) ** 2))


def task_row(entry: dict, tmp: Path, min_time: float) -> str:
    x, targets = np.load(TASKS / entry["test_x"]), np.load(TASKS / entry["test_y"])
    paths = {"f32": tmp / f"{entry['name']}.elstm", "int8": tmp / f"{entry['name']}.int8.elstm",
             "int8 calibrated": tmp / f"{entry['name']}.int8c.elstm"}
    edgelstm.convert(TASKS / entry["file"], paths["f32"])
    edgelstm.convert(TASKS / entry["file"], paths["int8"], quantize="int8", eval_data=x)
    edgelstm.convert(TASKS / entry["file"], paths["int8 calibrated"], quantize="int8",
                     calibration=np.load(TASKS / entry["calibration"]), eval_data=x)
    models = {name: edgelstm.load(path) for name, path in paths.items()}
    metric = {name: task_metric(entry, model.predict(x), targets) for name, model in models.items()}
    metric["litert8"] = task_metric(entry, np.load(TASKS / entry["tflite_dynint8_output"]), targets)
    one = x[:1]
    t = best_p50({"f32": lambda: models["f32"].predict(one), "int8": lambda: models["int8"].predict(one),
                  "litert": tflite_call(TASKS / entry["tflite_f32"], one),
                  "litert8": tflite_call(TASKS / entry["tflite_dynint8"], one)}, min_time, ROUNDS)
    fmt = (lambda v: f"{100 * v:.1f}%") if entry["metric"] == "accuracy" else (lambda v: f"{v:.4f}")
    sizes = (paths["f32"].stat().st_size, paths["int8"].stat().st_size, (TASKS / entry["tflite_dynint8"]).stat().st_size)
    return (f"| {entry['name']} ({entry['metric']}) | {fmt(metric['f32'])} | {fmt(metric['int8'])} | "
            f"{fmt(metric['int8 calibrated'])} | {fmt(metric['litert8'])} | {fmt(entry['baseline_metric'])} | "
            f"{sizes[0] / 1024:.0f} / {sizes[1] / 1024:.0f} / {sizes[2] / 1024:.0f} KiB | "
            f"{_us(t['f32'])} / {_us(t['int8'])} | {_us(t['litert'])} / {_us(t['litert8'])} |")


def example_row(name: str, tmp: Path) -> str:
    x = np.load(MODELS / f"{name}.input.npy")
    graph = edgelstm.convert(MODELS / f"{name}.keras", tmp / f"{name}.int8.elstm", quantize="int8", eval_data=x)
    info = graph.metadata["quantization"]
    size = (tmp / f"{name}.int8.elstm").stat().st_size
    return (f"| {name} | {info['float32_bytes'] / 1024:.1f} KiB | {size / 1024:.1f} KiB | "
            f"{100 * info['error']['relative_rmse']:.2f}% | {info['error']['max_abs']:.2g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=HERE / ".models", type=Path)
    parser.add_argument("--min-time", default=0.5, type=float)
    parser.add_argument("--results", default=HERE / "RESULTS.md", type=Path)
    parser.add_argument("--tf-python", default=sys.executable, help="a Python with TensorFlow and tf_keras")
    args = parser.parse_args()
    make_models(args, [(cell, hidden, STEPS, 1) for cell in ("lstm", "gru") for hidden in HIDDEN])
    benchmark.set_threads(1)
    lines = [f"Machine: {benchmark.cpu_name()}; one thread, batch 1, {STEPS} steps of {FEATURES} features. "
             "Ratios within a row come from one run (engines interleaved, best of two rounds).", "",
             "| model | float32 file | int8 file | size ratio | ours float32 | ours int8 | int8 / float32 | "
             "ORT float32 | ORT int8 | LiteRT int8 | ours int8 / best int8 peer | int8 relative RMSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in ("lstm", "gru"):
        for hidden in HIDDEN:
            lines.append(grid_row(args.models / f"{cell}_h{hidden}", args.min_time))
            print(lines[-1], flush=True)
    lines += ["", "Trained task models (`tools/make_task_models.py`), on their test rows; latency of one sequence:", "",
              "| task model (metric) | float32 | ours int8 | ours int8, calibrated | LiteRT int8 | baseline | "
              "file: ours f32 / ours int8 / LiteRT int8 | ours f32 / int8 | LiteRT f32 / int8 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for entry in json.loads((TASKS / "manifest.json").read_text()):
        lines.append(task_row(entry, args.models, args.min_time))
        print(lines[-1], flush=True)
    lines += ["", "| shipped example | float32 file | int8 file | int8 relative RMSE | max abs error |", "|---|---|---|---|---|"]
    lines += [example_row(name, args.models) for name in EXAMPLES]
    write_section(args.results, "int8", lines, "## int8 (issue 6)")
    print("\n".join(lines[-6:]))


if __name__ == "__main__":
    main()
