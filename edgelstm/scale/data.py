"""What `edgelstm score` reads and writes.

An input is a ``.npy`` file, a folder of ``.npy`` files or a Parquet dataset (a file or a folder
of them). `plan` checks it against the model before any work is scheduled, reading only headers
and metadata (a variable-length Parquet list column is also scanned, batch by batch, for ragged
sequences), and cuts it into parts: rows ``start:stop`` of one file, whole sequences or windows of
a long series. A worker reads one part (`Layout.read`), and its predictions are written atomically
to a part file of the job's work folder (`Layout.write`). A rerun of the same job skips the parts
already written. When all are there, `Job.finish` puts ``.npy`` outputs together (streamed, part
by part); a Parquet output is the folder of parts itself.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..artifact import atomic_write
from ..errors import FormatError, InputError, ShapeError

MANIFEST = "_edgelstm_score.json"  # Parquet readers skip names starting with "_" or "."
PREDICTION = "prediction"
PARQUET_SUFFIXES = (".parquet", ".pq")
_SCAN_ROWS = 65536  # rows per batch when a Parquet list column is scanned for ragged sequences


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError("Parquet needs pyarrow: pip install 'edgelstm[parquet]'") from None
    return pyarrow


@dataclass(frozen=True)
class Layout:
    """How a part's sequences are read and its predictions written. Small and picklable: it
    travels with every task."""

    kind: str                        # "npy" or "parquet"
    step_shape: tuple[int, ...]      # one time step as the model takes it: (features,) or () for token ids
    window: int | None = None        # None: the input holds whole sequences; else windows of this many steps
    stride: int = 1
    columns: tuple[str, ...] = ()    # Parquet: the sequence column, or the feature columns of a series
    keys: tuple[str, ...] = ()       # Parquet: columns copied beside the predictions

    @property
    def suffix(self) -> str:
        return ".npy" if self.kind == "npy" else ".parquet"

    def series_rows(self, start: int, stop: int) -> tuple[int, int]:
        """The steps of a series that windows start..stop cover."""
        return start * self.stride, (stop - 1) * self.stride + self.window

    def read(self, path: str, start: int, stop: int):
        """Sequences `start:stop` of one input file (windows in window mode) as an array, and the
        key columns for them (a pyarrow Table, or None)."""
        if self.kind == "npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if self.window is None:
                return np.array(array[start:stop]), None
            lo, hi = self.series_rows(start, stop)
            return self._windows(np.asarray(array[lo:hi])), None
        if self.window is None:
            table = _parquet_rows(path, [*self.columns, *self.keys], start, stop)
            values = _list_values(table.column(self.columns[0]).combine_chunks(), self.columns[0])
            return values.reshape((stop - start, -1) + self.step_shape), table.select(list(self.keys))
        lo, hi = self.series_rows(start, stop)
        table = _parquet_rows(path, [*self.columns, *self.keys], lo, hi)
        series = np.stack([_list_values(table.column(name).combine_chunks(), name) for name in self.columns], axis=-1)
        ends = np.arange(stop - start) * self.stride + self.window - 1
        return self._windows(series), table.select(list(self.keys)).take(ends)

    def _windows(self, series: np.ndarray) -> np.ndarray:
        # a series of one value per step ([steps] or [steps, 1]) takes the model's step shape: () for
        # token ids, (1,) for one feature
        series = series.reshape((len(series),) + self.step_shape)
        windows = np.lib.stride_tricks.sliding_window_view(series, self.window, axis=0)[::self.stride]
        return np.ascontiguousarray(np.moveaxis(windows, -1, 1))  # [n, *step, window] -> [n, window, *step]

    def write(self, path: str, predictions: np.ndarray, keys) -> None:
        """Write one part's predictions atomically (a temporary file renamed into place)."""
        if self.kind == "npy":
            atomic_write(path, lambda f: np.save(f, predictions))
            return
        pa = _pyarrow()
        column = _prediction_column(pa, predictions)
        table = keys.append_column(PREDICTION, column) if self.keys else pa.table({PREDICTION: column})
        atomic_write(path, lambda f: pa.parquet.write_table(table, f))


def _prediction_column(pa, predictions: np.ndarray):
    """One float32 value per row as a plain column, more as (nested) fixed-size lists."""
    flat = pa.array(predictions.reshape(-1))
    if predictions[0].size == 1:
        return flat
    for size in reversed(predictions.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, size)
    return flat


def _list_values(array, name: str) -> np.ndarray:
    """The numbers of a column, inside its (nested) lists, in order; a missing value is refused
    (it would turn into NaN or fail deep inside numpy)."""
    pa = _pyarrow()
    while True:
        if array.null_count:
            raise InputError(f"column '{name}' has missing (null) values")
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
                or pa.types.is_fixed_size_list(array.type)):
            return array.to_numpy(zero_copy_only=False)
        array = array.flatten()


def _parquet_rows(path: str, columns: list[str], lo: int, hi: int):
    """Rows lo:hi of some columns of a Parquet file, from the row groups that hold them."""
    pa = _pyarrow()
    file = pa.parquet.ParquetFile(path)
    pieces, offset = [], 0
    for group in range(file.num_row_groups):
        count = file.metadata.row_group(group).num_rows
        if offset < hi and offset + count > lo:
            begin = max(lo - offset, 0)
            table = _row_group(path, os.stat(path).st_mtime_ns, group, tuple(columns))
            pieces.append(table.slice(begin, min(hi, offset + count) - offset - begin))
        offset += count
    return pa.concat_tables(pieces) if pieces else file.schema_arrow.empty_table().select(columns)


@functools.lru_cache(maxsize=2)
def _row_group(path: str, mtime_ns: int, group: int, columns: tuple[str, ...]):
    """One decoded row group, kept for the next part: parts are far smaller than row groups
    (pyarrow writes up to a million rows in one), and a worker tends to get neighbouring parts."""
    return _pyarrow().parquet.ParquetFile(path).read_row_group(group, columns=list(columns))


@dataclass(frozen=True)
class Task:
    """One part: sequences `start:stop` of input file `source`, predictions to `destination`."""

    index: int
    source: str
    start: int
    stop: int
    destination: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class Job:
    """A planned scoring job: its input files, how they are read, where the parts go."""

    layout: Layout
    sources: list[str]
    counts: list[int]           # sequences (or windows) in each input file
    outputs: list[str]          # .npy kinds: the output file of each input file; Parquet: none
    work: Path                  # the folder of part files (for Parquet: the output folder)
    batch_size: int             # sequences per part

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def parts(self) -> int:
        return sum(-(-count // self.batch_size) for count in self.counts)

    def tasks(self) -> Iterator[Task]:
        """Every part, in input order."""
        index = 0
        for source, count in zip(self.sources, self.counts):
            for start in range(0, count, self.batch_size):
                yield Task(index, source, start, min(start + self.batch_size, count),
                           str(self.work / f"part-{index:06d}{self.layout.suffix}"))
                index += 1

    def pending(self) -> list[Task]:
        """The parts not written yet (a rerun resumes)."""
        return [task for task in self.tasks() if not os.path.exists(task.destination)]

    def finish(self) -> None:
        """Put `.npy` outputs together from their parts and drop the work folder; for Parquet,
        clear temporary files that killed workers left."""
        if self.layout.kind == "parquet":
            for stray in self.work.glob(".part-*.tmp"):
                stray.unlink(missing_ok=True)
            return
        tasks = iter(self.tasks())
        for output, count in zip(self.outputs, self.counts):
            parts = [next(tasks) for _ in range(-(-count // self.batch_size))]  # this file's parts
            _concatenate_npy([task.destination for task in parts], output)
        shutil.rmtree(self.work)


def _concatenate_npy(parts: list[str], output: str) -> None:
    """Join .npy parts along the first axis into `output`, atomically, one part in memory at a time."""
    arrays = [np.load(part, mmap_mode="r") for part in parts]  # mapped, not read
    header = {"descr": np.lib.format.dtype_to_descr(arrays[0].dtype), "fortran_order": False,
              "shape": (sum(a.shape[0] for a in arrays),) + arrays[0].shape[1:]}

    def write(f):
        np.lib.format.write_array_header_2_0(f, header)
        for array in arrays:
            f.write(np.ascontiguousarray(array).data)
    atomic_write(output, write)


# --- planning ---------------------------------------------------------------------------------

def plan(model, model_digest: str, source: str | os.PathLike, output: str | os.PathLike, *,
         window: int | None = None, stride: int = 1, batch_size: int = 8192,
         columns: list[str] | None = None, keys: list[str] | None = None, overwrite: bool = False) -> Job:
    """Check the input against `model` (a loaded `Model`) and lay out the job's parts.

    Raises InputError/ShapeError naming the file and what was expected before anything runs. The
    work folder records the job (model digest, inputs with sizes and times, options): a rerun with
    the same job resumes; a different job there, or finished outputs in the way, are refused
    unless `overwrite`.
    """
    source, output = Path(source), Path(output)
    if not source.exists():
        raise InputError(f"input {source} does not exist")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if stride < 1:
        raise InputError(f"stride must be at least 1, got {stride}")
    length, step_shape = model.input_shape[0], tuple(model.input_shape[1:])
    if window is not None:
        if window < 1:
            raise InputError(f"window must be at least 1 step, got {window}")
        if length is not None and window != length:
            raise ShapeError(f"the model takes sequences of {length} steps; --window is {window}")
    elif stride != 1:
        raise InputError("--stride cuts a long series into windows: give --window too")
    kind, files = _input_files(source)
    if kind == "npy":
        if columns or keys:
            raise InputError("--columns and --keys are for Parquet inputs")
        layout = Layout("npy", step_shape, window, stride)
        counts = [_npy_count(path, layout, length) for path in files]
    else:
        layout = _parquet_layout(files[0], step_shape, window, stride, columns, keys)
        counts = [_parquet_count(path, layout, length) for path in files]

    folder_of_npy = kind == "npy" and source.is_dir()
    outputs = [str(output / Path(path).name) for path in files] if folder_of_npy else \
        [str(output)] if kind == "npy" else []
    _check_output(source, output, kind, folder_of_npy)
    work = output if kind == "parquet" else output.parent / f"{output.name}.parts"
    if not work.exists() and not overwrite:
        present = [path for path in outputs if os.path.exists(path)]
        if present:
            raise InputError(f"{present[0]} exists (from an earlier run?); pass --overwrite to replace it")
    job = Job(layout, [str(path) for path in files], counts, outputs, work, batch_size)
    fingerprint = {"model": model_digest, "layout": asdict(layout), "batch_size": batch_size,
                   "inputs": [[str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
                              for path, stat in ((path, os.stat(path)) for path in files)]}
    _claim(work, fingerprint, overwrite)
    if folder_of_npy:
        output.mkdir(exist_ok=True)
    return job


def _input_files(source: Path) -> tuple[str, list[str]]:
    if source.is_file():
        if source.suffix == ".npy":
            return "npy", [str(source)]
        if source.suffix in PARQUET_SUFFIXES:
            return "parquet", [str(source)]
        raise InputError(f"cannot score {source}: give a .npy file, a folder of .npy files or a Parquet dataset")
    npy = sorted(str(p) for p in source.glob("*.npy"))
    parquet = sorted(str(p) for p in source.rglob("*") if p.suffix in PARQUET_SUFFIXES and p.is_file()
                     and not any(part.startswith(("_", ".")) for part in p.relative_to(source).parts))
    if npy and parquet:
        raise InputError(f"{source} holds both .npy and Parquet files: give one kind")
    if not npy and not parquet:
        raise InputError(f"{source} holds no .npy files (at its top level) and no Parquet files")
    return ("npy", npy) if npy else ("parquet", parquet)


def _expected(prefix: str, dims) -> str:
    return "(" + ", ".join([prefix] + ["any" if d is None else str(d) for d in dims]) + ")"


def _npy_count(path: str, layout: Layout, length: int | None) -> int:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(f"cannot read {path} as a .npy array: {exc}") from None
    if array.dtype.kind not in "fiub":
        raise ShapeError(f"{path} has dtype {array.dtype}, expected numbers")
    if layout.window is None:
        dims = (length,) + layout.step_shape
        if array.ndim != len(dims) + 1 or any(d is not None and d != g for d, g in zip(dims, array.shape[1:])):
            hint = "; a long series to cut into windows needs --window" if array.ndim == len(dims) else ""
            raise ShapeError(f"{path} has shape {array.shape}, expected {_expected('sequences', dims)}{hint}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ShapeError(f"{path} has shape {array.shape}: it needs at least one sequence of at least one step")
        return array.shape[0]
    shapes = [layout.step_shape] + ([()] if layout.step_shape == (1,) else [])
    if array.shape[1:] not in shapes:
        raise ShapeError(f"{path} has shape {array.shape}, expected a series {_expected('steps', layout.step_shape)}")
    return _window_count(path, array.shape[0], layout)


def _window_count(path: str, steps: int, layout: Layout) -> int:
    if steps < layout.window:
        raise ShapeError(f"{path} has {steps} steps, fewer than one window of {layout.window}")
    return (steps - layout.window) // layout.stride + 1


def _list_depth(pa, type_) -> tuple[list, object]:
    """The list levels of an Arrow type (outermost first) and the type inside them."""
    levels = []
    while pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        levels.append(type_)
        type_ = type_.value_type
    return levels, type_


def _numeric(pa, type_) -> bool:
    return pa.types.is_floating(type_) or pa.types.is_integer(type_)


def _open_parquet(path: str, wanted: list[str]):
    """The Parquet file, once its footer reads and it has the `wanted` columns."""
    pa = _pyarrow()
    try:
        file = pa.parquet.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise FormatError(f"cannot read {path} as Parquet: {exc}") from None
    names = file.schema_arrow.names
    for name in wanted:
        if name not in names:
            raise InputError(f"{path} has no column '{name}'; its columns: {', '.join(names)}")
    return file


def _parquet_layout(path: str, step_shape: tuple, window, stride, columns, keys) -> Layout:
    """The columns to read, chosen from the first file (`_parquet_count` checks every file)."""
    pa = _pyarrow()
    schema = _open_parquet(path, [*(columns or []), *(keys or [])]).schema_arrow
    names = schema.names
    if window is None:
        if columns is None:
            lists = [f.name for f in schema if _list_depth(pa, f.type)[0]]
            if len(lists) != 1:
                raise InputError(f"{path} has {len(lists)} list columns ({', '.join(lists) or 'none'}): name the "
                                 "column of sequences with --columns, or cut a series into windows with --window")
            columns = lists
        if len(columns) != 1:
            raise InputError(f"whole sequences come from one list column; --columns names {len(columns)}")
    else:
        width = step_shape[0] if step_shape else 1
        if columns is None:
            numeric = [f.name for f in schema if _numeric(pa, f.type)]
            raise InputError(f"name the {width} feature column(s) of the series with --columns (numeric columns of "
                             f"{path}: {', '.join(numeric) or 'none'})")
        if len(columns) != width:
            raise ShapeError(f"the model takes {width} feature(s) per step; --columns names {len(columns)}")
    if keys is None:
        keys = [name for name in names if name not in columns]
    overlap = set(keys) & set(columns)
    if overlap:
        raise InputError(f"column(s) {', '.join(sorted(overlap))} cannot be both input and key")
    if PREDICTION in keys:
        raise InputError(f"{path} already has a column '{PREDICTION}'; leave it out of --keys")
    return Layout("parquet", step_shape, window, stride, tuple(columns), tuple(keys))


def _parquet_count(path: str, layout: Layout, length: int | None) -> int:
    """Sequences (or windows) in one Parquet file, once its columns are checked."""
    pa = _pyarrow()
    file = _open_parquet(path, [*layout.columns, *layout.keys])
    rows = file.metadata.num_rows
    if rows == 0:
        raise ShapeError(f"{path} has no rows")
    schema = file.schema_arrow
    if layout.window is not None:
        for name in layout.columns:
            if not _numeric(pa, schema.field(name).type):
                raise ShapeError(f"{path}: feature column '{name}' has type {schema.field(name).type}, "
                                 "expected numbers")
            if not _counted_no_nulls(file, name):
                _scan(file, name, lambda array: _refuse_nulls(array, path, name))
        return _window_count(path, rows, layout)
    name = layout.columns[0]
    levels, inner = _list_depth(pa, schema.field(name).type)
    allowed = [1 + len(layout.step_shape)] + ([1] if layout.step_shape == (1,) else [])
    expected = _expected("sequence", (length,) + layout.step_shape)
    if len(levels) not in allowed or not _numeric(pa, inner):
        raise ShapeError(f"{path}: column '{name}' has type {schema.field(name).type}, expected a list of "
                         f"{'lists of ' if layout.step_shape else ''}numbers, one {expected}")
    sizes = [length, layout.step_shape[0] if len(levels) > 1 else None]
    for level, size in zip(levels, sizes):
        if pa.types.is_fixed_size_list(level) and size is not None and level.list_size != size:
            raise ShapeError(f"{path}: column '{name}' holds {level} values, expected {expected}")
    lengths = set()
    _scan(file, name, lambda array: lengths.add(_check_sequences(pa, array, path, name, sizes, expected)))
    if len(lengths) > 1:
        raise ShapeError(f"{path}: column '{name}' holds sequences of different lengths ({min(lengths)} to "
                         f"{max(lengths)} steps); a part needs one length: pad them or cut windows")
    return rows


def _scan(file, name: str, check) -> None:
    """Call `check` on column `name` batch by batch (memory stays bounded)."""
    for batch in file.iter_batches(batch_size=_SCAN_ROWS, columns=[name]):
        check(batch.column(0))


def _counted_no_nulls(file, name: str) -> bool:
    """The file's statistics say column `name` has no nulls (writers usually record them)."""
    leaves = [file.metadata.schema.column(i).path for i in range(file.metadata.num_columns)]
    if name not in leaves:
        return False
    column = leaves.index(name)  # a flat column's leaf; nested columns before it have several
    for group in range(file.num_row_groups):
        stats = file.metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True


def _refuse_nulls(array, path: str, name: str) -> None:
    if array.null_count:
        raise InputError(f"{path}: column '{name}' has missing (null) values")


def _check_sequences(pa, array, path: str, name: str, sizes: list, expected: str) -> int:
    """The one length of the sequences in a batch of a list column: each present, non-empty, every
    step of the model's width."""
    length = None
    for depth, size in enumerate(sizes):
        _refuse_nulls(array, path, name)
        if depth and not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
                          or pa.types.is_fixed_size_list(array.type)):
            break
        extremes = pa.compute.min_max(pa.compute.list_value_length(array))
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if depth == 0:
            if low == 0:
                raise ShapeError(f"{path}: column '{name}' holds empty sequences")
            if low != high:
                raise ShapeError(f"{path}: column '{name}' holds sequences of different lengths ({low} to {high} "
                                 "steps); a part needs one length: pad them or cut windows")
            length = low
        if size is not None and (low != size or high != size):
            what = "steps" if depth == 0 else "values per step"
            raise ShapeError(f"{path}: column '{name}' holds sequences of {low}..{high} {what}, expected {expected}")
        array = pa.compute.list_flatten(array)
    _refuse_nulls(array, path, name)
    return length


def _check_output(source: Path, output: Path, kind: str, folder_of_npy: bool) -> None:
    src, out = source.resolve(), output.resolve()
    if kind == "npy" and not folder_of_npy and output.is_dir():
        raise InputError(f"output {output} is a folder; the output of one .npy file is a .npy file")
    if kind == "parquet" or folder_of_npy:
        if output.exists() and not output.is_dir():
            raise InputError(f"output {output} is a file; the output of {source} is a folder")
    if out == src or (src.is_dir() and src in out.parents) or (out.is_dir() and out in src.parents):
        raise InputError(f"output {output} would overwrite or sit inside the input {source}; choose another")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {output}: its folder does not exist")


def _claim(work: Path, fingerprint: dict, overwrite: bool) -> None:
    """Make the work folder ours: new, resumed (same job), or cleared (`overwrite`)."""
    manifest = work / MANIFEST
    fingerprint = json.loads(json.dumps(fingerprint))  # compared as read back: tuples become lists
    if work.exists():
        if not work.is_dir():
            raise InputError(f"{work} exists and is not a folder")
        if manifest.exists():
            try:
                previous = json.loads(manifest.read_text())
            except (OSError, ValueError):
                previous = None
            if previous == fingerprint:
                return
            if not overwrite:
                raise InputError(f"{work} holds the parts of another run (a different model, input or options); "
                                 "remove it or pass --overwrite")
            for old in work.glob("part-*"):
                old.unlink()
            for old in work.glob(".part-*.tmp"):
                old.unlink()
        elif any(work.iterdir()):
            raise InputError(f"{work} exists and was not written by edgelstm score; choose another output")
    work.mkdir(exist_ok=True)
    atomic_write(manifest, lambda f: f.write(json.dumps(fingerprint, indent=1).encode()))
