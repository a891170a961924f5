"""What the bench scripts share: engines timed side by side, and the sections they write into
bench/RESULTS.md, each between its own markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelstm import benchmark


def best_p50(calls: dict, min_time: float, rounds: int, slow: tuple = ()) -> dict[str, float]:
    """Median call time (s) per engine, the lowest of `rounds` interleaved rounds of `min_time`
    seconds each: a noisy spell on a shared machine then hits every engine alike. Engines named in
    `slow` get at least one timed call a round (others five)."""
    medians = {name: [] for name in calls}
    for round_ in range(rounds):
        for name, call in calls.items():
            warmup = 0 if round_ else 1 if name in slow else 2
            times = benchmark.time_calls(call, min_time, min_runs=1 if name in slow else 5, warmup=warmup)
            medians[name].append(float(np.median(times)))
    return {name: min(values) for name, values in medians.items()}


def write_section(path: Path, name: str, lines: list[str], heading: str) -> None:
    """Put `lines` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in `path`, replacing what
    was there; a section not there yet goes at the end, under `heading` (markdown, may be empty)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + (heading + "\n\n" if heading else "") + block + "\n"
    path.write_text(text)
