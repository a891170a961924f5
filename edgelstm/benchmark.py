"""Measuring a model: warm latency, throughput, size and peak memory, ours beside LiteRT and
ONNX Runtime on the same input in the same process; and for ours the streaming step and the
cold start of a new process.

Latency is the wall time of one call on the whole batch, taken many times after warm-up runs;
percentiles, not means, because shared machines are noisy. Peak memory is the peak resident
size of a fresh process that loads that one engine and runs it once (a process's peak cannot be
taken apart per engine). Compare figures only within one run: ratios travel, absolute numbers
do not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import crosscheck, load
from .errors import InputError, ShapeError

PEER_KINDS = crosscheck.REFERENCE_KINDS  # tflite (LiteRT), onnx (ONNX Runtime)
_ENGINE_NAMES = {"tflite": "litert", "onnx": "onnxruntime"}


@dataclasses.dataclass
class Latency:
    """Wall times of repeated calls, in seconds."""

    p50: float
    p90: float
    p99: float
    runs: int

    @classmethod
    def of(cls, times: list[float]) -> "Latency":
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), len(times))


@dataclasses.dataclass
class EngineResult:
    """One engine's figures on the benchmark input."""

    engine: str
    path: str
    latency: Latency
    throughput: float  # sequences per second at the p50 latency
    file_size: int
    peak_memory: int | None  # bytes; None when not measured
    max_abs_diff: float | None = None  # a peer's output against ours


@dataclasses.dataclass
class Report:
    """Everything `run` measured; `to_dict` gives the JSON form."""

    cpu: str
    threads: int
    batch: int
    seq_len: int
    engines: list[EngineResult]
    stream_step: Latency | None = None
    cold_start: float | None = None  # seconds from a new process to its first result (cache warm)
    first_compile: float | None = None  # the same with an empty numba cache
    backend: str = "cpu"  # the backend ours ran on, with the GPU's name for cuda

    def ratios(self) -> dict[str, float]:
        """Our p50 latency over each peer's."""
        ours = self.engines[0].latency.p50
        return {e.engine: ours / e.latency.p50 for e in self.engines[1:]}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"ratios": self.ratios()}


def cpu_name() -> str:
    """The CPU's model name (what `lscpu` prints), or the platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(fn: Callable[[], object], min_time: float, min_runs: int = 5, warmup: int = 2,
               tick: Callable[[], None] | None = None) -> list[float]:
    """Wall times of `fn()` after `warmup` calls: at least `min_runs` of them and `min_time` seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if tick:
            tick()
    return times


def set_threads(threads: int | None) -> int:
    """Make numba's parallel kernels use `threads` threads (None: all it started with)."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is not None and not 1 <= threads <= limit:
        raise InputError(f"--threads must be between 1 and {limit} on this machine, got {threads}")
    numba.set_num_threads(threads or limit)
    return threads or limit


def bench_input(model, batch: int, seq_len: int | None, seed: int = 0) -> np.ndarray:
    """A random input the model takes: [batch, seq_len, features] floats or [batch, seq_len] token ids."""
    steps = model.input_shape[0]
    if seq_len is not None and steps is not None and seq_len != steps:
        raise ShapeError(f"the model takes sequences of exactly {steps} steps; --seq-len {seq_len} differs")
    steps = steps or seq_len
    if steps is None:
        raise ShapeError("the model takes sequences of any length: give --seq-len")
    rng = np.random.default_rng(seed)
    if model.input_dtype.kind == "i":
        vocab = next(layer.weights["embeddings"].shape[0] for layer in model.graph.layers
                     if layer.kind == "embedding")
        return rng.integers(1, vocab, (batch, steps)).astype(np.int64)
    return rng.normal(0.0, 1.0, (batch, steps) + tuple(model.input_shape[1:])).astype(np.float32)


def _peer_runner(kind: str, path: str, x: np.ndarray, threads: int):
    if kind == "tflite":
        return crosscheck.tflite_runner(path, x, threads)
    return crosscheck.onnx_runner(path, threads)


# What a fresh process runs to measure one engine's memory: only that engine's own imports.
_PROBES = {
    "elstm": """
from edgelstm import load
from edgelstm.benchmark import set_threads
set_threads(THREADS)
load(PATH, backend=BACKEND).predict(x)
""",
    "onnx": """
import onnxruntime
options = onnxruntime.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
session = onnxruntime.InferenceSession(PATH, options, providers=["CPUExecutionProvider"])
session.run(None, {session.get_inputs()[0].name: x})
""",
    "tflite": """
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
interpreter = Interpreter(model_path=PATH, num_threads=THREADS)
(detail,) = interpreter.get_input_details()
interpreter.allocate_tensors()
interpreter.set_tensor(detail["index"], np.resize(x, detail["shape"]).astype(detail["dtype"]))
interpreter.invoke()
""",
}
# The peak resident size of this process image: VmHWM on Linux (ru_maxrss there also counts the
# parent's memory from before exec), ru_maxrss elsewhere (bytes on macOS, KiB on other systems).
_PEAK = """
import resource, sys
try:
    peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(peak)
"""


def peak_memory(kind: str, path: str, input_path: str, threads: int, backend: str = "auto") -> int | None:
    """Peak resident bytes of a fresh process that runs one engine once (None where that fails)."""
    code = (f"import numpy as np\nx = np.load({input_path!r})\n"
            f"PATH, THREADS, BACKEND = {str(path)!r}, {threads}, {backend!r}\n"
            + _PROBES[kind] + _PEAK)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.strip() else None


def cold_start(model_path: str, input_path: str, cache_dir: str | None = None, backend: str = "auto") -> float:
    """Seconds for ``edgelstm run`` in a new process, from its start to its result on disk.

    `cache_dir` sets ``NUMBA_CACHE_DIR`` (an empty one measures the first-ever compile).
    """
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "edgelstm", "run", model_path, "-i", input_path,
                   "-o", os.path.join(tmp, "y.npy"), "--backend", backend]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise InputError(f"edgelstm run failed in a new process: {done.stderr.strip()}")
    return elapsed


def stream_step_latency(model, x: np.ndarray, min_time: float) -> Latency:
    """Wall time of one `Stream.step` on the batch, stepping through x's sequence over and over."""
    stream = model.stream(batch=x.shape[0])
    steps = [np.ascontiguousarray(x[:, t]) for t in range(x.shape[1])]
    position = [0]

    def one_step():
        stream.step(steps[position[0]])
        position[0] += 1
        if position[0] == len(steps):
            position[0] = 0
            stream.reset()
    return Latency.of(time_calls(one_step, min_time, min_runs=50, warmup=len(steps)))


def run(model_path: str, batch: int = 1, seq_len: int | None = None, threads: int | None = None,
        backend: str = "auto", compare: list[tuple[str, str]] = (), min_time: float = 1.0,
        memory: bool = True, streaming: bool = True, cold: bool = True, first_compile: bool = False,
        progress: Callable[[str], None] | None = None) -> Report:
    """Benchmark an ``.elstm`` model, and each (kind, path) of `compare` on the same input."""
    import numba

    before = numba.get_num_threads()
    try:
        return _run(model_path, batch, seq_len, set_threads(threads), backend, compare, min_time, memory, streaming,
                    cold, first_compile, progress or (lambda _message: None))
    finally:
        numba.set_num_threads(before)


def _run(model_path, batch, seq_len, threads, backend, compare, min_time, memory, streaming, cold, first_compile,
         say) -> Report:
    model = load(model_path, backend=backend)
    x = bench_input(model, batch, seq_len)
    source_x = crosscheck.to_source_input(model, x)  # what the peers take (e.g. time-major ONNX)
    ours = crosscheck.to_source_output(model, model.predict(x))
    engines = []
    say("timing edgelstm")
    times = time_calls(lambda: model.predict(x), min_time)
    engines.append(EngineResult("edgelstm", model_path, Latency.of(times), 0.0, os.path.getsize(model_path), None))
    for kind, path in compare:
        if kind not in PEER_KINDS:
            raise InputError(f"cannot compare with '{kind}'; use tflite:PATH or onnx:PATH")
        name = f"{_ENGINE_NAMES[kind]} ({Path(path).name})"
        say(f"timing {name}")
        runner = _peer_runner(kind, path, source_x, threads)
        diffs = [float(np.abs(y - ours).max()) for y in runner(source_x).values() if y.shape == ours.shape]
        times = time_calls(lambda: runner(source_x), min_time)
        engines.append(EngineResult(name, path, Latency.of(times), 0.0, os.path.getsize(path), None,
                                    diffs[0] if diffs else None))
    for engine in engines:
        engine.throughput = batch / engine.latency.p50
    report = Report(cpu_name(), threads, batch, x.shape[1], engines, backend=model.backend)
    if model.backend == "cuda":
        from .kernels import cuda

        report.backend = f"cuda ({cuda.device_name()})"
    with tempfile.TemporaryDirectory() as tmp:
        input_path, source_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "source_x.npy")
        np.save(input_path, x)
        np.save(source_path, source_x)
        if memory:
            for engine, kind in zip(engines, ["elstm", *(kind for kind, _ in compare)]):
                say(f"peak memory of {engine.engine}")
                engine.peak_memory = peak_memory(kind, engine.path, input_path if kind == "elstm" else source_path,
                                                 threads, model.backend)
        if streaming and _streams(model):
            say("timing Stream.step")
            report.stream_step = stream_step_latency(model, x, min_time)
        if first_compile:
            say("first-ever compile (empty numba cache)")
            cache = os.path.join(tmp, "numba-cache")
            report.first_compile = cold_start(model_path, input_path, cache, model.backend)
        if cold:
            say("cold start of edgelstm run")
            cold_start(model_path, input_path, backend=model.backend)  # fills the numba cache if it was empty
            report.cold_start = min(cold_start(model_path, input_path, backend=model.backend) for _ in range(3))
    return report


def _streams(model) -> bool:
    try:
        model.stream()
    except Exception:  # noqa: BLE001 - BackendError: not causal; the report simply has no stream row
        return False
    return True


def _micro(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_report(report: Report, human_size: Callable[[float], str]) -> str:
    """The report as the text table `edgelstm bench` prints."""
    lines = [f"CPU: {report.cpu} · backend: {report.backend} · threads: {report.threads} · "
             f"batch {report.batch} × {report.seq_len} steps"]
    table = [("engine", "p50", "p90", "p99", "seq/s", "file", "peak RSS", "max |diff|")]
    for e in report.engines:
        table.append((e.engine, _micro(e.latency.p50), _micro(e.latency.p90), _micro(e.latency.p99),
                      f"{e.throughput:,.0f}", human_size(e.file_size),
                      human_size(e.peak_memory) if e.peak_memory else "-",
                      "-" if e.max_abs_diff is None else f"{e.max_abs_diff:.2g}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    for peer, ratio in report.ratios().items():
        lines.append(f"edgelstm / {peer} latency: {ratio:.2f}× ({1 / ratio:.2f}× faster)" if ratio < 1 else
                     f"edgelstm / {peer} latency: {ratio:.2f}× (slower)")
    if report.stream_step:
        per_step = report.engines[0].latency.p50 / report.seq_len
        lines.append(f"Stream.step: p50 {_micro(report.stream_step.p50)}, p99 {_micro(report.stream_step.p99)} "
                     f"({report.stream_step.p50 / per_step:.2f}× a whole-sequence step of {_micro(per_step)})")
    if report.cold_start is not None:
        lines.append(f"cold start (edgelstm run, new process, numba cache warm): {_micro(report.cold_start)}")
    if report.first_compile is not None:
        lines.append(f"first-ever run (numba compiles the kernels): {_micro(report.first_compile)}")
    return "\n".join(lines)


def write_json(report: Report, path: str) -> None:
    """The report as JSON, written atomically."""
    from .artifact import atomic_write

    data = json.dumps(report.to_dict(), indent=2).encode()
    atomic_write(path, lambda f: f.write(data))
