"""Streaming cost: one `Stream.step` against the per-step share of a whole sequence.

For LSTM and GRU of hidden 32..512 + Dense(1) over 50 steps of 8 features (weights from seeds),
batch 1 and 4 (and their int8 twins at batch 1), one thread, it measures the p50 of `predict` on a whole sequence and of one
`Stream.step` — as it runs (one compiled call, `cpu.StepProgram`) and with the layers run one by
one (the path before it) — and writes the table between the ``streaming`` markers of
bench/RESULTS.md. The issue-5 target: a step costs at most 2 × (sequence latency / steps).

    python bench/streaming.py [--hidden 32,64,128,256,512] [--batch 1,4] [--min-time 0.5]
"""

import argparse
import platform
from pathlib import Path

import numba
import numpy as np

import edgelstm
from edgelstm.benchmark import Latency, cpu_name, time_calls
from edgelstm.ir import Graph, Layer
from edgelstm.passes.quantize import quantize

from results import write_section

HERE = Path(__file__).resolve().parent
STEPS, FEATURES = 50, 8
ROUNDS = 3  # the three timings interleaved, best of three rounds: this machine is shared and noisy


def graph(cell: str, hidden: int) -> Graph:
    """Input(None, 8) -> cell(hidden) -> Dense(1), weights from seed `hidden` at Keras-like scales."""
    rng = np.random.default_rng(hidden)
    gates = 4 if cell == "lstm" else 3
    attrs = {"units": hidden, "return_sequences": False, "go_backwards": False, "stateful": False,
             "zero_output_for_mask": False, "activation": "tanh", "recurrent_activation": "sigmoid"}
    weights = {"kernel": rng.normal(0, 0.2, (FEATURES, gates * hidden)),
               "recurrent_kernel": rng.normal(0, hidden ** -0.5, (hidden, gates * hidden)),
               "bias": rng.normal(0, 0.1, gates * hidden)}
    if cell == "lstm":
        attrs.update(output_activation="tanh", clip=0.0, input_forget=False)
    else:
        attrs.update(reset_after=True)
        weights["recurrent_bias"] = rng.normal(0, 0.1, gates * hidden)
    return Graph([Layer("x", "input", [], {"shape": [None, FEATURES], "dtype": "float32"}),
                  Layer("rnn", cell, ["x"], attrs, {k: v.astype(np.float32) for k, v in weights.items()}),
                  Layer("head", "dense", ["rnn"], {"activation": "linear"},
                        {"kernel": rng.normal(0, 0.3, (hidden, 1)).astype(np.float32),
                         "bias": np.zeros(1, np.float32)})], "head")


def step_latency(model: edgelstm.Model, x: np.ndarray, one_call: bool, min_time: float) -> float:
    """p50 of `Stream.step` through x's steps over and over; `one_call` False runs the layers one by one."""
    stream = model.stream(batch=x.shape[0])
    assert stream._program is not None
    if not one_call:
        stream._program = None
    steps = [np.ascontiguousarray(x[:, t]) for t in range(STEPS)]

    def sequence():
        stream.reset()
        for x_t in steps:
            stream.step(x_t)
    return Latency.of(time_calls(sequence, min_time, min_runs=20)).p50 / STEPS


def measure(cell: str, hidden: int, batch: int, min_time: float, int8: bool = False) -> dict:
    model = edgelstm.Model(quantize(graph(cell, hidden)) if int8 else graph(cell, hidden), "cpu")
    x = np.random.default_rng(0).normal(size=(batch, STEPS, FEATURES)).astype(np.float32)
    rounds = [(Latency.of(time_calls(lambda: model.predict(x), min_time / ROUNDS, min_runs=20)).p50,
               step_latency(model, x, False, min_time / ROUNDS), step_latency(model, x, True, min_time / ROUNDS))
              for _ in range(ROUNDS)]
    sequence, layers, step = (min(values) for values in zip(*rounds))  # the quietest round of each
    return {"model": f"{cell.upper()}({hidden})" + (" int8" if int8 else ""), "batch": batch, "sequence": sequence,
            "layers": layers, "step": step, "ratio": step / (sequence / STEPS)}


def table(rows: list[dict]) -> list[str]:
    lines = [f"Machine: {cpu_name()} ({platform.machine()}); one thread; {STEPS} steps of {FEATURES} features. "
             "A step's time is the p50 of a whole sequence fed step by step, divided by its steps; "
             f"each figure the best of {ROUNDS} interleaved rounds. "
             "Target: step ≤ 2 × (sequence / steps).", "",
             "| model | batch | whole sequence | per step of it | `Stream.step`, layer by layer | `Stream.step`, one call "
             "| one call / per-step share |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['sequence'] * 1e6:,.0f} µs | "
                     f"{r['sequence'] / STEPS * 1e6:.2f} µs | {r['layers'] * 1e6:.2f} µs | {r['step'] * 1e6:.2f} µs | "
                     f"{r['ratio']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="32,64,128,256,512")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--results", default=HERE / "RESULTS.md", type=Path)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    numba.set_num_threads(1)
    hidden = [int(h) for h in args.hidden.split(",")]
    rows = [measure(cell, h, int(b), args.min_time) for cell in ("lstm", "gru")
            for h in hidden for b in args.batch.split(",")]
    rows += [measure(cell, h, 1, args.min_time, int8=True) for cell in ("lstm", "gru") for h in hidden]
    lines = table(rows)
    print("\n".join(lines))
    if not args.no_write:
        write_section(args.results, "streaming", lines, "## Streaming (issue 5)")


if __name__ == "__main__":
    main()
