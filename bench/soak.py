"""Soak test (by hand, not in CI): a million `Stream.step` calls and 10,000 batch predicts from
two threads on the shipped sensor forecaster, with the process's resident memory sampled as it
goes. Prints the samples and whether memory grew beyond noise.

    python bench/soak.py [--steps 1000000] [--predicts 10000]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

import edgelstm
from edgelstm import benchmark

MODELS = Path(__file__).resolve().parent.parent / "models"


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--predicts", type=int, default=10_000)
    args = parser.parse_args()
    model = edgelstm.load(MODELS / "sensor_forecast.keras")
    x = np.load(MODELS / "sensor_forecast.input.npy")
    expected = model.predict(x)
    samples = []

    def sample(label: str) -> None:
        samples.append((label, rss_mib()))
        print(f"{label:>28}: {samples[-1][1]:7.1f} MiB", flush=True)

    sample("after loading")
    stream = model.stream(batch=1)
    frame = np.zeros((1, x.shape[2]), np.float32)
    start = time.perf_counter()
    for i in range(args.steps):
        frame[0, 0] = np.sin(i * 0.01)
        stream.step(frame)
        if i % 50 == 49:
            stream.reset()
        if (i + 1) % (args.steps // 5) == 0:
            sample(f"{i + 1:,} stream steps")
    step_us = (time.perf_counter() - start) / args.steps * 1e6

    errors = []

    def worker(count: int) -> None:
        for _ in range(count):
            if not np.array_equal(model.predict(x), expected):
                errors.append("a threaded predict differed from the serial one")
                return

    per_thread = args.predicts // 2
    start = time.perf_counter()
    for round_ in range(5):
        threads = [threading.Thread(target=worker, args=(per_thread // 5,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sample(f"{(round_ + 1) * 2 * (per_thread // 5):,} predicts, 2 threads")
    predict_ms = (time.perf_counter() - start) / args.predicts * 1e3

    settled = samples[1][1]  # after the first stream block: caches and buffers exist by then
    growth = max(m for _, m in samples[1:]) - settled
    print(f"\n{benchmark.cpu_name()}: {args.steps:,} steps at {step_us:.1f} µs each; {args.predicts:,} predicts of "
          f"batch {x.shape[0]} from 2 threads at {predict_ms:.2f} ms each (wall, both threads)")
    print(f"memory: {settled:.1f} MiB after the first block, at most {growth:+.1f} MiB more after that; "
          f"{'threaded outputs identical' if not errors else errors[0]}")


if __name__ == "__main__":
    main()
