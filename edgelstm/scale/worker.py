"""What runs on a worker: the model, loaded once per process, and one part scored."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numba

from .. import artifact
from ..errors import EdgeLSTMError, InputError
from ..runtime import Model
from .data import Layout, Task

# Sequences per kernel call inside a part: enough rows for sgemm's step products, few enough that a
# layer's buffers stay in cache. Fixed, so that every engine computes every part the same way.
CHUNK = 256

_LOADED: dict[tuple[str, str], Model] = {}
_LOADING = threading.Lock()


class ModelRef:
    """An ``.elstm`` model as workers get it: the file's bytes (shipped to them) or its path (a
    file every worker can read). Each process loads it once per backend; kernels are never pickled.

    Any other file `edgelstm.load` reads (.keras, .h5, .onnx) is converted here, on the client,
    and shipped as bytes.
    """

    def __init__(self, source: str | os.PathLike | bytes, backend: str = "cpu", by_path: bool = False):
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, self.path = bytes(source), None
        elif Path(source).suffix == artifact.SUFFIX:
            data = Path(source).read_bytes()
            self.path = str(Path(source).resolve()) if by_path else None
        else:
            from .. import import_model

            data, self.path = artifact.to_bytes(import_model(source)), None
        self.digest = hashlib.sha256(data).hexdigest()
        self.data = None if self.path else data
        self.backend = backend

    def load(self) -> Model:
        """The model, loaded on first use in this process."""
        key = (self.digest, self.backend)
        with _LOADING:
            model = _LOADED.get(key)
            if model is None:
                data = self.data if self.data is not None else Path(self.path).read_bytes()
                if self.data is None and hashlib.sha256(data).hexdigest() != self.digest:
                    raise InputError(f"{self.path} changed after the job started")
                model = _LOADED[key] = Model(artifact.read(data), backend=self.backend)
        return model


@contextlib.contextmanager
def one_thread():
    """Numba kernels on this thread use one core (numba's thread count is per calling thread):
    engines run one part per core, and every part is computed the same way on every engine."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def score_part(model: ModelRef, layout: Layout, task: Task) -> tuple[int, int, str | None]:
    """Predict one part and write it atomically. Returns (part index, sequences, None), or an
    error message in place of None when the input is at fault (an engine retrying would not help)."""
    try:
        if not os.path.exists(task.destination):  # a retry whose first try got as far as the write
            x, keys = layout.read(task.source, task.start, task.stop)
            with one_thread():
                y = model.load().predict(x, batch_size=CHUNK)
            layout.write(task.destination, y, keys)
    except EdgeLSTMError as exc:
        return task.index, 0, f"{task.source}, sequences {task.start}..{task.stop - 1}: {exc}"
    return task.index, task.rows, None
