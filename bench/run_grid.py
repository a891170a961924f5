"""The benchmark grid: edgelstm against LiteRT (WHILE-loop and fused exports), ONNX Runtime and
the numpy reference, over cell x hidden x steps x batch x threads; writes the grid's table and
summary into bench/RESULTS.md (between its grid markers) and a plot of latency against hidden size.

    pip install -e '.[test,bench]'      # edgelstm with LiteRT, ONNX Runtime, onnx, matplotlib
    python bench/run_grid.py --tf-python /path/to/tf-venv/bin/python

Models come from seeds at bench time (`make_grid_models.py` runs under the TensorFlow
interpreter given by --tf-python) and are cached in bench/.models, which git ignores. The ONNX
models are written here from the converted weights, so all engines run the same numbers; every
peer's output is checked against ours before it is timed. Options narrow the grid
(``--hidden 32,128 --steps 50 --batch 1``); defaults are the whole grid, which takes a while.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np

import edgelstm
from edgelstm import benchmark, crosscheck
from results import best_p50, write_section  # bench/ is this script's folder

HERE = Path(__file__).resolve().parent
FEATURES = 8
ENGINES = ("edgelstm", "litert-while", "litert-fused", "onnxruntime", "numpy-reference")
PEERS = ("litert-while", "litert-fused", "onnxruntime")
ROUNDS = 3


def onnx_model(graph: edgelstm.Graph, path: Path) -> None:
    """The graph (input -> LSTM/GRU -> Dense) as an ONNX model with symbolic batch and time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cell, dense = graph.layers[1], graph.layers[2]
    w, units = cell.weights, cell.attrs["units"]
    if cell.kind == "lstm":  # Keras gate order i f c o -> ONNX i o f c
        order = [0, 3, 1, 2]
        recurrent_bias = np.zeros_like(w["bias"])
    else:  # GRU with reset_after: Keras z r h = ONNX z r h, linear_before_reset=1
        order = [0, 1, 2]
        recurrent_bias = w["recurrent_bias"]

    def gates(matrix):  # [in, G*H] -> [1, G*H, in] in ONNX's gate order
        blocks = np.split(matrix, len(order), axis=-1)
        return np.concatenate([blocks[i] for i in order], axis=-1).T[None].astype(np.float32)
    bias = np.concatenate([gates(w["bias"][None])[0, :, 0], gates(recurrent_bias[None])[0, :, 0]])[None]
    extra = {"linear_before_reset": 1} if cell.kind == "gru" else {}
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node(cell.kind.upper(), ["x_tbf", "W", "R", "B"], ["", "h_last"], hidden_size=units, **extra),
        helper.make_node("Squeeze", ["h_last", "axis0"], ["h"]),
        helper.make_node("Gemm", ["h", "dense_kernel", "dense_bias"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(a, n) for n, a in [
        ("W", gates(w["kernel"])), ("R", gates(w["recurrent_kernel"])), ("B", bias.astype(np.float32)),
        ("axis0", np.array([0], np.int64)), ("dense_kernel", dense.weights["kernel"]),
        ("dense_bias", dense.weights["bias"])]]
    model = helper.make_model(helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], initializers),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_models(args, cells) -> None:
    def exported(c, h, t, b):
        stem = args.models / f"{c}_h{h}_t{t}_b{b}"
        return stem.with_suffix(".while.tflite").exists() and (b != 1 or stem.with_suffix(".while.dynint8.tflite").exists())

    specs = [dict(cell=c, hidden=h, features=FEATURES, steps=t, batch=b)
             for c, h, t, b in cells if not exported(c, h, t, b)]
    if specs:
        spec_file = args.models / "spec.json"
        args.models.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(specs))
        print(f"building {len(specs)} LiteRT exports with {args.tf_python} ...", flush=True)
        subprocess.run([args.tf_python, str(HERE / "make_grid_models.py"), str(args.models), str(spec_file)],
                       check=True, stdout=subprocess.DEVNULL)
    for cell, hidden in sorted({(c, h) for c, h, _, _ in cells}):
        stem = args.models / f"{cell}_h{hidden}"
        if not stem.with_suffix(".elstm").exists():
            graph = edgelstm.convert(stem.with_suffix(".keras"), stem.with_suffix(".elstm"))
            onnx_model(graph, stem.with_suffix(".onnx"))


def measure(args, cell, hidden, steps, batch, threads) -> dict:
    """p50 latency (s) of every engine on one grid point (the lowest of ROUNDS interleaved rounds);
    engines that cannot run it are absent."""
    benchmark.set_threads(threads)
    stem = args.models / f"{cell}_h{hidden}"
    model = edgelstm.load(stem.with_suffix(".elstm"))
    x = np.random.default_rng(0).normal(size=(batch, steps, FEATURES)).astype(np.float32)
    ours = model.predict(x)
    runners = {
        "edgelstm": lambda: model.predict(x),
        "onnxruntime": crosscheck.onnx_runner(stem.with_suffix(".onnx"), threads),
    }
    for export in ("while", "fused"):
        path = args.models / f"{cell}_h{hidden}_t{steps}_b{batch}.{export}.tflite"
        if path.exists():
            runners[f"litert-{export}"] = crosscheck.tflite_runner(path, x, threads)
    if not args.no_reference:
        reference = edgelstm.Model(model.graph, backend="reference")
        runners["numpy-reference"] = lambda: reference.predict(x)
    calls = {}
    for name, run in runners.items():
        if name in PEERS:
            outputs = list(run(x).values())
            error = float(np.abs(outputs[0] - ours).max())
            if error > 1e-4:
                raise SystemExit(f"{name} disagrees with edgelstm on {cell} h{hidden} t{steps} b{batch}: {error:.3g}")
            calls[name] = (lambda run=run: run(x))
        else:
            calls[name] = run
    return best_p50(calls, args.min_time / ROUNDS, ROUNDS, slow=("numpy-reference",))


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:,.0f} µs" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


def best_peer_ratio(row: dict) -> float | None:
    peers = [row[p] for p in PEERS if p in row]
    return row["edgelstm"] / min(peers) if peers else None


def summary(rows: list[dict], all_threads: int) -> list[str]:
    """The issue's targets, read off the grid."""
    def find(**key):
        return [r for r in rows if all(r[k] == v for k, v in key.items())]
    lines = []
    for row in find(cell="lstm", hidden=128, steps=50, batch=1, threads=1):
        lines.append(f"- LSTM(128) x 50 steps, batch 1, one thread: edgelstm {_fmt(row['edgelstm'])}, "
                     f"{best_peer_ratio(row):.2f}x the best peer (target <= 0.5)")
    for batch, target in ((1, 0.7), (256, 1.0)):
        ratios = [(best_peer_ratio(r), r) for r in find(steps=50, batch=batch, threads=1) if best_peer_ratio(r)]
        if ratios:
            worst, row = max(ratios, key=lambda pair: pair[0])
            lines.append(f"- batch {batch}, 50 steps, one thread, hidden 32-512: worst ratio to the best peer "
                         f"{worst:.2f} ({row['cell'].upper()}({row['hidden']})) (target <= {target})")
    for single in find(batch=256, threads=1):
        multi = find(cell=single["cell"], hidden=single["hidden"], steps=single["steps"], batch=256,
                     threads=all_threads)
        if multi and all_threads > 1:
            lines.append(f"- {single['cell'].upper()}({single['hidden']}) x {single['steps']}, batch 256: "
                         f"{all_threads} threads give {single['edgelstm'] / multi[0]['edgelstm']:.2f}x the "
                         "single-thread throughput (target >= 1.7 on 2 cores)")
    return lines


def write_results(rows: list[dict], path: Path, all_threads: int) -> None:
    head = ["cell", "hidden", "steps", "batch", "threads", *ENGINES, "ours / best peer"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ratio = best_peer_ratio(r)
        table.append("| " + " | ".join([r["cell"].upper(), str(r["hidden"]), str(r["steps"]), str(r["batch"]),
                                        str(r["threads"]), *(_fmt(r.get(e)) for e in ENGINES),
                                        "-" if ratio is None else f"{ratio:.2f}"]) + " |")
    write_section(path, "grid", [f"Machine: {benchmark.cpu_name()}, {os.cpu_count()} cores; numba "
                                 f"{numba.__version__}, numpy {np.__version__}. p50 latency of one call on the batch, "
                                 f"engines interleaved, the quietest of {ROUNDS} rounds.",
                                 "", *summary(rows, all_threads), "", *table], "")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({r["cell"] for r in rows})
    figure, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4.5), squeeze=False)
    for axis, cell in zip(axes[0], cells):
        picked = [r for r in rows if r["cell"] == cell and r["batch"] == 1 and r["threads"] == 1
                  and r["steps"] == max(x["steps"] for x in rows if x["steps"] <= 50)]
        for color, engine in enumerate(ENGINES):
            points = sorted((r["hidden"], r[engine]) for r in picked if engine in r)
            if points:
                axis.plot(*zip(*[(h, t * 1e6) for h, t in points]), marker="o", label=engine, color=f"C{color}")
        axis.set(xscale="log", yscale="log", xlabel="hidden units", ylabel="latency (µs)",
                 title=f"{cell.upper()}, batch 1, {picked[0]['steps'] if picked else '?'} steps, 1 thread")
        axis.set_xticks([r["hidden"] for r in picked], [str(r["hidden"]) for r in picked])
        axis.minorticks_off()
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(benchmark.cpu_name())
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--cells", default="lstm,gru", type=lambda t: t.split(","))
    parser.add_argument("--hidden", default=[32, 64, 128, 256, 512], type=ints)
    parser.add_argument("--steps", default=[1, 50, 200], type=ints)
    parser.add_argument("--batch", default=[1, 16, 256], type=ints)
    parser.add_argument("--threads", default="1,all", help="comma list of thread counts; 'all' is every core")
    parser.add_argument("--min-time", default=0.3, type=float, help="seconds of timed calls per engine and point")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) numpy reference")
    parser.add_argument("--tf-python", default=sys.executable, help="a Python with TensorFlow and tf_keras")
    parser.add_argument("--models", default=HERE / ".models", type=Path)
    parser.add_argument("--results", default=HERE / "RESULTS.md", type=Path)
    parser.add_argument("--plot", default=HERE / "latency_vs_hidden.png", type=Path)
    args = parser.parse_args()
    all_threads = numba.config.NUMBA_NUM_THREADS
    thread_counts = [all_threads if t == "all" else int(t) for t in args.threads.split(",")]
    grid = [(c, h, t, b) for c in args.cells for h in args.hidden for t in args.steps for b in args.batch]
    make_models(args, grid)
    rows = []
    for cell, hidden, steps, batch in grid:
        for threads in sorted(set(thread_counts)):
            row = dict(cell=cell, hidden=hidden, steps=steps, batch=batch, threads=threads)
            row.update(measure(args, cell, hidden, steps, batch, threads))
            rows.append(row)
            ratio = best_peer_ratio(row)
            print(f"{cell} h{hidden} t{steps} b{batch} x{threads}: " + ", ".join(
                f"{e} {_fmt(row.get(e))}" for e in ENGINES if e in row)
                + (f" -> {ratio:.2f}" if ratio else ""), flush=True)
    (args.models / "grid.json").write_text(json.dumps(rows, indent=1))
    write_results(rows, args.results, all_threads)
    plot(rows, args.plot)
    print(f"wrote {args.results} and {args.plot}")


if __name__ == "__main__":
    main()
