"""Engines that score a job's parts: threads in this process (``local``), a Dask cluster or a Ray
cluster; and the pieces for people's own Dask and Ray pipelines (`predict_dask`, `RayPredictor`).

Every engine runs each part with one numba thread and the same kernel batch (`worker.CHUNK`),
so all three give bit-identical outputs. The client keeps a bounded number of parts in flight
and never holds the data: workers read their parts and write the predictions themselves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np

from ..errors import EdgeLSTMError, InputError, ShapeError
from . import data
from .worker import CHUNK, ModelRef, one_thread, score_part

ENGINES = ("local", "dask", "ray")
RETRIES = 3  # tries a part gets after a failure that is not the input's fault (a lost worker)


@dataclass
class Summary:
    """What `score` did."""

    output: str
    sequences: int
    parts: int
    resumed: int                # parts already written by an earlier run
    engine: str
    workers: int
    seconds: float


def score(model, source, output, engine: str = "local", address: str | None = None, workers: int | None = None,
          batch_size: int = 8192, window: int | None = None, stride: int = 1, columns: list[str] | None = None,
          keys: list[str] | None = None, overwrite: bool = False, model_by_path: bool = False,
          progress: Callable[[int, int], None] | None = None) -> Summary:
    """Score every sequence (or window) of `source` with `model` and write the predictions to `output`.

    `model`: an ``.elstm`` path or its bytes (other model files are converted first). `source`: a
    ``.npy`` file [sequences, steps, features] (or a series [steps, features] with `window`), a
    folder of them, or a Parquet dataset; `output` is of the same kind. `engine` is ``local``
    (threads in this process), ``dask`` or ``ray``: a cluster at `address`, else one started
    here with `workers` processes (default: one per core). Workers get the model's bytes, or with
    `model_by_path` read the ``.elstm`` at its path (storage they all see). `progress(sequences,
    total)` is called as parts finish (and once at the start with those an earlier run scored).
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if engine == "local" and address:
        raise InputError("--address names a Dask scheduler or a Ray cluster; the local engine takes none")
    if address and workers:
        raise InputError("--workers sizes a cluster started here; the cluster at --address has its own workers")
    started = time.perf_counter()
    ref = ModelRef(model, by_path=model_by_path)
    job = data.plan(ref.load(), ref.digest, source, output, window=window, stride=stride,
                    batch_size=batch_size, columns=columns, keys=keys, overwrite=overwrite)
    tasks = job.pending()

    def report(rows):
        if progress:
            progress(rows, job.total)
    report(job.total - sum(task.rows for task in tasks))
    runner = {"local": _Local, "dask": _Dask, "ray": _Ray}[engine](address, workers)
    if tasks:
        with runner:
            runner.share(ref)
            _drive(runner, job.layout, tasks, report)
    job.finish()
    return Summary(str(output), job.total, job.parts, job.parts - len(tasks), engine, runner.slots,
                   time.perf_counter() - started)


def _drive(runner, layout: data.Layout, tasks: list[data.Task], report) -> None:
    """Submit parts, at most two per worker slot in flight, until all are written."""
    queue = iter(tasks)
    pending = set()
    while True:
        while len(pending) < 2 * runner.slots:
            task = next(queue, None)
            if task is None:
                break
            pending.add(runner.submit(layout, task))
        if not pending:
            return
        done, pending = runner.wait(pending)
        for handle in done:
            _, rows, error = runner.result(handle)
            if error:
                raise InputError(error)
            report(rows)


def _default_workers() -> int:
    return numba.config.NUMBA_NUM_THREADS  # the cores this process may use


class _Local:
    """Threads of this process, one part each (the kernels release the GIL)."""

    def __init__(self, address, workers):
        self.slots = workers or _default_workers()

    def __enter__(self):
        self.pool = concurrent.futures.ThreadPoolExecutor(self.slots, thread_name_prefix="edgelstm-score")
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(cancel_futures=True)

    def share(self, model: ModelRef) -> None:
        self.model = model

    def submit(self, layout, task):
        return self.pool.submit(score_part, self.model, layout, task)

    def wait(self, pending):
        done, rest = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        return done, set(rest)

    def result(self, handle):
        return handle.result()


def _same(model: ModelRef) -> ModelRef:
    """The model as a task's result (see `_Dask.share`)."""
    return model


def _need(module: str, extra: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise InputError(f"the {extra} engine needs its extra: pip install 'edgelstm[{extra}]'") from None


class _Cluster:
    """An engine of worker processes: a cluster at `address`, or one of `workers` started here."""

    def __init__(self, address, workers):
        self.address, self.workers = address, workers or _default_workers()
        self.slots = self.workers  # until the cluster says how many it has


class _Dask(_Cluster):
    """A Dask cluster: the one at `address`, or a local one of `workers` processes with one thread each."""

    def __enter__(self):
        distributed = _need("distributed", "dask")
        self._stack = contextlib.ExitStack()
        try:
            if self.address:
                self.client = self._stack.enter_context(distributed.Client(self.address, timeout="20s"))
            else:
                cluster = self._stack.enter_context(distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR))
                self.client = self._stack.enter_context(distributed.Client(cluster))
        except (OSError, TimeoutError) as exc:
            self._stack.close()
            raise EdgeLSTMError(f"cannot reach a Dask scheduler at {self.address}: {exc}") from None
        self.slots = max(1, sum(w["nthreads"] for w in self.client.scheduler_info()["workers"].values()))
        self._wait = distributed.wait
        self._run = uuid.uuid4().hex[:8]
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def share(self, model: ModelRef) -> None:
        # a task's result, not scattered data: if every worker holding it dies, Dask computes it again
        self.model = self.client.submit(_same, model, key=f"edgelstm-model-{self._run}", pure=False)

    def submit(self, layout, task):
        return self.client.submit(score_part, self.model, layout, task, key=f"edgelstm-part-{self._run}-{task.index}",
                                  retries=RETRIES, pure=False)

    def wait(self, pending):
        done, rest = self._wait(list(pending), return_when="FIRST_COMPLETED")
        return done, set(rest)

    def result(self, handle):
        return handle.result()


def _refuse_silent_address(address: str | None) -> None:
    """EdgeLSTMError when a ``host:port`` address does not accept connections: ray.init would
    wait for it without end. Other forms (``auto``, ``ray://...``) are left to Ray."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise EdgeLSTMError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


class _Ray(_Cluster):
    """A Ray cluster: the one at `address` (or already started here), or a local one with `workers` CPUs."""

    def __enter__(self):
        self.ray = ray = _need("ray", "ray")
        self.started = not ray.is_initialized()
        if self.started:
            _refuse_silent_address(self.address)
            try:
                ray.init(address=self.address, num_cpus=None if self.address else self.workers,
                         include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EdgeLSTMError(f"cannot start or reach Ray at {self.address or 'this machine'}: {exc}") from None
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._score = ray.remote(num_cpus=1, max_retries=RETRIES)(score_part)
        return self

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()

    def share(self, model: ModelRef) -> None:
        self.model = self.ray.put(model)

    def submit(self, layout, task):
        return self._score.remote(self.model, layout, task)

    def wait(self, pending):
        done, rest = self.ray.wait(list(pending), num_returns=1)
        return done, set(rest)

    def result(self, handle):
        return self.ray.get(handle)


# --- in people's own pipelines ----------------------------------------------------------------

def _predict_block(block: np.ndarray, model: ModelRef) -> np.ndarray:
    with one_thread():
        return model.load().predict(block, batch_size=CHUNK)


def predict_dask(model, array, backend: str = "cpu", by_path: bool = False):
    """Predictions for a dask array of sequences [n, steps, features] (or [n, steps] token ids),
    as a lazy dask array [n, *output] chunked like its first axis (`map_blocks`).

    `model` is an ``.elstm`` path or bytes: one key of the graph that every block depends on, so
    a worker receives it once (with `by_path`, only the path: workers read the file), and each
    worker process loads it once. The shape is checked here, before anything is scheduled.
    Blocks run with one numba thread each: Dask's threads (or worker processes) are the parallelism.
    """
    da = _need("dask.array", "dask")
    import dask

    ref = ModelRef(model, backend=backend, by_path=by_path)
    loaded = ref.load()
    expected = (None,) + tuple(loaded.input_shape)
    if array.ndim != len(expected) or any(d is not None and d != g for d, g in zip(expected[1:], array.shape[1:])):
        dims = ", ".join("any" if d is None else str(d) for d in expected[1:])
        raise ShapeError(f"dask array has shape {array.shape}, expected (sequences, {dims})")
    if array.dtype.kind not in "fiub":
        raise ShapeError(f"dask array has dtype {array.dtype}, expected numbers")
    array = array.rechunk({axis: -1 for axis in range(1, array.ndim)})
    probe = loaded.predict(np.zeros((1,) + array.shape[1:], loaded.input_dtype))
    grow = probe.ndim - array.ndim
    shared = dask.delayed(ref, traverse=False)
    return da.map_blocks(_predict_block, array, shared, dtype=np.float32,
                         meta=np.empty((0,) * probe.ndim, np.float32),  # not found by calling it on a Delayed
                         chunks=(array.chunks[0],) + tuple((d,) for d in probe.shape[1:]),
                         drop_axis=list(range(probe.ndim, array.ndim)) if grow < 0 else [],
                         new_axis=list(range(array.ndim, probe.ndim)) if grow > 0 else None)


class RayPredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: each actor loads the model once.

        ds.map_batches(RayPredictor, fn_constructor_args=("model.elstm",), concurrency=4,
                       batch_format="numpy")

    The batch's `column` (Ray's ``data`` for datasets made by ``from_numpy``) holds the sequences;
    the predictions are added as `output_column`, the other columns kept beside them. Batches
    come as numpy (a tensor column, or the object arrays Ray makes of list columns) or, faster for
    Parquet list columns, as pyarrow tables (``batch_format="pyarrow"``).
    """

    def __init__(self, model, column: str = "data", output_column: str = data.PREDICTION, backend: str = "cpu"):
        self.model = ModelRef(model, backend=backend).load()
        self.column, self.output_column = column, output_column

    def __call__(self, batch):
        names = list(batch) if isinstance(batch, dict) else batch.column_names
        if self.column not in names:
            raise InputError(f"the batch has no column '{self.column}'; its columns: {', '.join(names)}")
        if isinstance(batch, dict):
            x = _dense(batch[self.column], self.column)
        else:
            column = batch.column(self.column).combine_chunks()
            x = data._list_values(getattr(column, "storage", column), self.column)
            x = x.reshape((batch.num_rows, -1) + tuple(self.model.input_shape[1:]))
        with one_thread():
            predictions = self.model.predict(x, batch_size=CHUNK)
        if isinstance(batch, dict):
            return {**batch, self.output_column: predictions}
        return batch.append_column(self.output_column, data._prediction_column(data._pyarrow(), predictions))


def _dense(values, name: str) -> np.ndarray:
    """A numeric array from Ray's numpy view of a list column: object arrays of arrays, nested."""
    values = np.asarray(values)
    if values.dtype != object:
        return values
    items = [_dense(item, name) for item in values]
    if len({item.shape for item in items}) > 1:
        raise ShapeError(f"column '{name}' holds sequences of different shapes; a batch needs one")
    return np.stack(items) if items else np.empty(0, np.float32)
