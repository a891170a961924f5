"""int8 against float32, ours and ONNX Runtime's: file size, batch-1 latency on one thread, and the
output error, for the grid's models (LSTM and GRU, hidden 32-512, 50 steps of 8 features) and the
shipped examples; writes a table into bench/RESULTS.md between its int8 markers.

    python bench/run_grid.py --steps 50 --batch 1 ...   # makes the grid's models first
    python bench/quantization.py

ONNX Runtime's int8 twin is `onnxruntime.quantization.quantize_dynamic` of the grid's ONNX model
(DynamicQuantizeLSTM for LSTM; it has no quantized GRU, so GRU rows show its float time there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import edgelstm
from edgelstm import benchmark, crosscheck
from edgelstm.passes.quantize import compare

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent / "models"
START, END = "<!-- int8:start -->", "<!-- int8:end -->"
EXAMPLES = ("sensor_forecast", "text_classifier", "lstm_autoencoder")


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def grid_row(stem: Path, min_time: float) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path, onnx_int8 = stem.with_suffix(".int8.elstm"), stem.with_suffix(".int8.onnx")
    edgelstm.convert(stem.with_suffix(".elstm"), int8_path, quantize="int8")
    if not onnx_int8.exists():
        quantize_dynamic(str(stem.with_suffix(".onnx")), str(onnx_int8), weight_type=QuantType.QInt8)
    x = np.random.default_rng(0).normal(size=(1, 50, 8)).astype(np.float32)
    float_model, int8_model = edgelstm.load(stem.with_suffix(".elstm")), edgelstm.load(int8_path)
    error = compare(float_model.graph, int8_model.graph,
                    np.random.default_rng(1).normal(size=(16, 50, 8)).astype(np.float32), "random")
    calls = {"f32": lambda: float_model.predict(x), "int8": lambda: int8_model.predict(x)}
    for name, path in (("ort", stem.with_suffix(".onnx")), ("ort8", onnx_int8)):
        run = crosscheck.onnx_runner(path, 1)
        calls[name] = lambda run=run: run(x)
    p50 = {}
    for _ in range(2):  # interleaved rounds: drift on a shared machine hits every engine alike
        for name, call in calls.items():
            p50.setdefault(name, []).append(float(np.median(benchmark.time_calls(call, min_time))))
    t = {name: min(v) for name, v in p50.items()}
    f32_bytes, int8_bytes = stem.with_suffix(".elstm").stat().st_size, int8_path.stat().st_size
    cell, hidden = stem.name.split("_h")
    return (f"| {cell.upper()}({hidden}) | {f32_bytes / 1024:,.1f} KiB | {int8_bytes / 1024:,.1f} KiB | "
            f"{int8_bytes / f32_bytes:.3f} | {_us(t['f32'])} | {_us(t['int8'])} | {t['int8'] / t['f32']:.2f} | "
            f"{_us(t['ort'])} | {_us(t['ort8'])} | {t['int8'] / t['ort8']:.2f} | {100 * error.relative_rmse:.2f}% |")


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
    args = parser.parse_args()
    benchmark.set_threads(1)
    lines = [START, f"Machine: {benchmark.cpu_name()}; one thread, batch 1, 50 steps of 8 features. "
             "Ratios within a row come from one run (engines interleaved, best of two rounds).", "",
             "| model | float32 file | int8 file | size ratio | ours float32 | ours int8 | int8 / float32 | "
             "ORT float32 | ORT int8 | ours int8 / ORT int8 | int8 relative RMSE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in ("lstm", "gru"):
        for hidden in (32, 64, 128, 256, 512):
            stem = args.models / f"{cell}_h{hidden}"
            if stem.with_suffix(".elstm").exists():
                lines.append(grid_row(stem, args.min_time))
                print(lines[-1], flush=True)
    lines += ["", "| shipped example | float32 file | int8 file | int8 relative RMSE | max abs error |", "|---|---|---|---|---|"]
    lines += [example_row(name, args.models) for name in EXAMPLES]
    lines.append(END)
    text = args.results.read_text()
    if START in text:
        text = text[:text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## int8 (issue 6)\n\n" + "\n".join(lines) + "\n"
    args.results.write_text(text)
    print("\n".join(lines[-6:]))


if __name__ == "__main__":
    main()
