"""Scale-out (issue 10): scoring a million windows with `edgelstm.scale` on each engine.

    python bench/scale.py [--windows 1000000] [--workers N]

An LSTM(64) + Dense(1) with random weights (seeded) scores every window of T=50 steps (stride 1)
of one long series of 8 features (a .npy in a temporary folder, 32 MB for a million windows). The
single-process figure is the local engine with one worker thread; then the local engine, a Dask
`LocalCluster` and a local Ray cluster with N workers each, started before the clock (their
start-up is reported apart). Outputs are compared bit for bit. The client's peak memory is taken
in a new process scoring a quarter of the windows and then all of them on the Dask cluster.
Writes a table into bench/RESULTS.md between its scale markers.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgelstm import artifact, benchmark, scale
from edgelstm.ir import Graph, Layer
from results import write_section  # bench/ is this script's folder

HERE = Path(__file__).resolve().parent
HIDDEN, STEPS, FEATURES = 64, 50, 8

CLIENT = """
import resource, sys
from edgelstm import scale
scale.score(sys.argv[1], sys.argv[2], sys.argv[3], engine="dask", address=sys.argv[4], window={steps})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def lstm_model(path: Path) -> None:
    """Input(50, 8) -> LSTM(64) -> Dense(1), weights from seed 0 at Keras-like scales."""
    rng = np.random.default_rng(0)
    attrs = {"units": HIDDEN, "return_sequences": False, "go_backwards": False, "stateful": False,
             "zero_output_for_mask": False, "activation": "tanh", "recurrent_activation": "sigmoid",
             "output_activation": "tanh", "clip": 0.0, "input_forget": False}
    weights = {"kernel": rng.normal(0, 0.2, (FEATURES, 4 * HIDDEN)),
               "recurrent_kernel": rng.normal(0, HIDDEN ** -0.5, (HIDDEN, 4 * HIDDEN)),
               "bias": rng.normal(0, 0.1, 4 * HIDDEN)}
    layers = [Layer("x", "input", [], {"shape": [STEPS, FEATURES], "dtype": "float32"}),
              Layer("lstm", "lstm", ["x"], attrs, {k: v.astype(np.float32) for k, v in weights.items()}),
              Layer("head", "dense", ["lstm"], {"activation": "linear"},
                    {"kernel": rng.normal(0, 0.3, (HIDDEN, 1)).astype(np.float32), "bias": np.zeros(1, np.float32)})]
    artifact.write(Graph(layers, "head"), path)


def client_peak(model: Path, series: Path, out: Path, address: str) -> int:
    run = subprocess.run([sys.executable, "-c", CLIENT.format(steps=STEPS), str(model), str(series), str(out), address],
                         capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--results", default=HERE / "RESULTS.md", type=Path)
    args = parser.parse_args()
    import distributed
    import ray

    n = args.workers
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lstm_model(tmp / "model.elstm")
        series = np.random.default_rng(1).normal(size=(args.windows + STEPS - 1, FEATURES)).astype(np.float32)
        np.save(tmp / "series.npy", series)
        np.save(tmp / "quarter.npy", series[:args.windows // 4 + STEPS - 1])
        del series

        def timed(name: str, **options) -> scale.Summary:
            summary = scale.score(tmp / "model.elstm", tmp / "series.npy", tmp / f"{name}.npy", window=STEPS, **options)
            print(f"{name}: {summary.sequences / summary.seconds:,.0f} windows/s ({summary.seconds:.1f} s)", flush=True)
            return summary

        timed("warm-up", workers=1)  # fills the numba cache for this model
        os.remove(tmp / "warm-up.npy")
        runs = {"single": timed("single", workers=1), "local": timed("local", workers=n)}
        started = time.perf_counter()
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.ERROR) as cluster:
            dask_start = time.perf_counter() - started
            runs["dask-cold"] = timed("dask-cold", engine="dask", address=cluster.scheduler_address)
            runs["dask"] = timed("dask", engine="dask", address=cluster.scheduler_address)
            peaks = [client_peak(tmp / "model.elstm", tmp / name, tmp / f"client-{name}", cluster.scheduler_address)
                     for name in ("quarter.npy", "series.npy")]
        started = time.perf_counter()
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        ray_start = time.perf_counter() - started
        runs["ray-cold"] = timed("ray-cold", engine="ray")
        runs["ray"] = timed("ray", engine="ray")
        ray.shutdown()
        reference = np.load(tmp / "single.npy")
        identical = all(np.array_equal(np.load(tmp / f"{name}.npy"), reference)
                        for name in ("local", "dask-cold", "dask", "ray-cold", "ray"))

    single = runs["single"].sequences / runs["single"].seconds
    rows = [f"Machine: {benchmark.cpu_name()}, {os.cpu_count()} cores; {args.windows:,} windows of {STEPS} steps × "
            f"{FEATURES} features (stride 1, one .npy series), LSTM({HIDDEN}) + Dense(1), parts of 8,192 windows; "
            f"N = {n} workers. Outputs of all engines bit-identical: {'yes' if identical else 'NO'}.", "",
            "| engine | workers | seconds | windows/s | ÷ single process | target 0.8 × N |", "|---|---|---|---|---|---|"]
    for name, label in [("single", "local, single process, one thread"), ("local", "local (threads)"),
                        ("dask-cold", f"Dask LocalCluster, new workers (start-up {dask_start:.1f} s not counted)"),
                        ("dask", "Dask LocalCluster, second run (workers have the model loaded)"),
                        ("ray-cold", f"Ray, local, new workers (start-up {ray_start:.1f} s, not counted)"),
                        ("ray", "Ray, local, second run")]:
        s = runs[name]
        rate = s.sequences / s.seconds
        target = "" if name == "single" else ("met" if rate >= 0.8 * n * single else "not met")
        rows.append(f"| {label} | {s.workers} | {s.seconds:.1f} | {rate:,.0f} | {rate / single:.2f} | {target} |")
    rows += ["", f"Client peak memory (a new process driving the Dask cluster): {peaks[0] / 2**20:.0f} MiB for "
             f"{args.windows // 4:,} windows, {peaks[1] / 2**20:.0f} MiB for {args.windows:,}."]
    print("\n".join(rows))
    write_section(args.results, "scale", rows, "## Scale-out (issue 10)\n\nWritten by `bench/scale.py`.")


if __name__ == "__main__":
    main()
