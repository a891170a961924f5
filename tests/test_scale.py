"""Scoring at scale (`edgelstm score`, `edgelstm.scale`): inputs, resumable atomic parts, the three
engines bit-identical, bad inputs refused before any work, a Dask worker killed mid-run."""

import os
import pickle
import signal
import sys
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import edgelstm
from edgelstm import artifact, scale
from edgelstm.cli import main
from edgelstm.errors import FormatError, InputError, ShapeError
from edgelstm.scale import data
from edgelstm.scale.worker import CHUNK, ModelRef, one_thread

from .conftest import MODELS, small_graph

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
rng = np.random.default_rng(11)
STEPS, FEATURES = 9, 3


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.elstm"
    artifact.write(small_graph(features=FEATURES, units=6), path)
    return str(path)


@pytest.fixture(scope="module")
def model(model_file):
    return edgelstm.load(model_file, backend="cpu")


def expected(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """What every engine must write: each part predicted alone, one thread, in CHUNK-row calls."""
    with one_thread():
        return np.concatenate([model.predict(x[i:i + batch_size], batch_size=CHUNK)
                               for i in range(0, len(x), batch_size)])


def windows_of(series: np.ndarray, window: int, stride: int) -> np.ndarray:
    return np.stack([series[i:i + window] for i in range(0, len(series) - window + 1, stride)])


def sequence_table(x: np.ndarray) -> "pa.Table":
    """Sequences as a list<list<float>> column beside key columns."""
    steps = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[2])
    offsets = pa.array(np.arange(0, (len(x) + 1) * x.shape[1], x.shape[1], dtype=np.int32))
    return pa.table({"id": np.arange(len(x)), "sequence": pa.ListArray.from_arrays(offsets, steps),
                     "site": [f"s{i % 4}" for i in range(len(x))]})


def predictions(path) -> np.ndarray:
    column = pq.read_table(path).column(data.PREDICTION).combine_chunks()
    return np.asarray(column.flatten()).reshape(len(column), -1)


# --- inputs and outputs (local engine) --------------------------------------------------------

def test_npy_sequences_match_the_model_and_drop_the_work_folder(tmp_path, model_file, model):
    x = rng.normal(size=(700, STEPS, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    summary = scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", batch_size=300)
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, expected(model, x, 300))
    np.testing.assert_allclose(y, model.predict(x), atol=1e-6)
    assert (summary.sequences, summary.parts, summary.resumed) == (700, 3, 0)
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]


def test_a_series_is_cut_into_windows_with_a_stride(tmp_path, model_file, model):
    series = rng.normal(size=(200, FEATURES)).astype(np.float32)
    np.save(tmp_path / "series.npy", series)
    scale.score(model_file, tmp_path / "series.npy", tmp_path / "y.npy", window=12, stride=5, batch_size=16)
    windows = windows_of(series, 12, 5)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(model, windows, 16))


def test_token_id_series_are_windowed_for_an_embedding_model(tmp_path):
    model_path = MODELS / "embedding_nomask_lstm.keras"
    ids_model = edgelstm.load(model_path, backend="cpu")
    length = 7
    ids = rng.integers(1, 20, size=60)
    np.save(tmp_path / "ids.npy", ids)
    scale.score(model_path, tmp_path / "ids.npy", tmp_path / "y.npy", window=length, stride=2)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ids_model.predict(windows_of(ids, length, 2)), atol=1e-6)


def test_parquet_token_id_series_are_windowed(tmp_path):
    model_path = MODELS / "embedding_nomask_lstm.keras"
    ids = rng.integers(1, 20, size=50)
    pq.write_table(pa.table({"t": np.arange(50), "token": ids}), tmp_path / "ids.parquet", row_group_size=16)
    scale.score(model_path, tmp_path / "ids.parquet", tmp_path / "out", window=7, stride=3, columns=["token"])
    want = edgelstm.load(model_path, backend="cpu").predict(windows_of(ids, 7, 3))
    np.testing.assert_allclose(predictions(tmp_path / "out"), want, atol=1e-6)
    assert pq.read_table(tmp_path / "out").column("t").to_pylist() == list(range(6, 50, 3))


def test_a_folder_of_npy_files_gives_a_folder_of_the_same_names(tmp_path, model_file, model):
    (tmp_path / "in").mkdir()
    inputs = {name: rng.normal(size=(n, STEPS + k, FEATURES)).astype(np.float32)
              for k, (name, n) in enumerate([("a.npy", 50), ("b.npy", 130)])}
    for name, x in inputs.items():
        np.save(tmp_path / "in" / name, x)
    summary = scale.score(model_file, tmp_path / "in", tmp_path / "out", batch_size=64)
    assert summary.parts == 1 + 3
    for name, x in inputs.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / name), expected(model, x, 64))


def test_parquet_sequences_keep_their_key_columns(tmp_path, model_file, model):
    x = rng.normal(size=(500, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet", row_group_size=70)
    scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", batch_size=128)
    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["id", "site", "prediction"]
    assert table.column("id").to_pylist() == list(range(500))
    np.testing.assert_array_equal(predictions(tmp_path / "out"), expected(model, x, 128))


def test_parquet_series_windows_take_keys_from_each_window_end(tmp_path, model_file, model):
    (tmp_path / "in").mkdir()
    series = {}
    for name, steps in [("a.parquet", 120), ("b.parquet", 45)]:
        series[name] = rng.normal(size=(steps, FEATURES))
        table = pa.table({"time": np.arange(steps) * 10, **{f"f{i}": series[name][:, i] for i in range(FEATURES)}})
        pq.write_table(table, tmp_path / "in" / name, row_group_size=17)
    scale.score(model_file, tmp_path / "in", tmp_path / "out", window=STEPS, stride=4, batch_size=10,
                columns=["f0", "f1", "f2"])
    windows = [windows_of(series[name].astype(np.float32), STEPS, 4) for name in sorted(series)]
    want = np.concatenate([expected(model, w, 10) for w in windows])
    np.testing.assert_array_equal(predictions(tmp_path / "out"), want)
    ends = [list(range(STEPS - 1, len(series[name]), 4)) for name in sorted(series)]
    assert pq.read_table(tmp_path / "out").column("time").to_pylist() == [10 * e for part in ends for e in part]


def test_a_sequence_output_becomes_nested_fixed_size_lists(tmp_path):
    graph = small_graph(features=FEATURES, units=4)
    graph.layers[2].attrs["return_sequences"] = True  # input -> lstm -> gru, a state per step
    artifact.write(edgelstm.Graph(graph.layers[:3], "gru"), tmp_path / "seq.elstm")
    x = rng.normal(size=(20, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet")
    scale.score(tmp_path / "seq.elstm", tmp_path / "in.parquet", tmp_path / "out")
    column = pq.read_table(tmp_path / "out").column(data.PREDICTION)
    assert str(column.type) == "fixed_size_list<element: fixed_size_list<element: float>[4]>[9]"
    np.testing.assert_allclose(np.asarray(column.combine_chunks().flatten().flatten()).reshape(20, STEPS, 4),
                               edgelstm.load(tmp_path / "seq.elstm").predict(x), atol=1e-6)


# --- resuming and atomic parts -----------------------------------------------------------------

class Interrupt(Exception):
    pass


def interrupted_after(parts: int):
    seen = []

    def progress(rows, total):
        seen.append(rows)
        if len(seen) > parts:  # the first call reports what an earlier run left
            raise Interrupt
    return progress


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, model_file, model):
    x = rng.normal(size=(1000, STEPS, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(Interrupt):
        scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", batch_size=100, workers=1,
                    progress=interrupted_after(3))
    assert not (tmp_path / "y.npy").exists()
    written = sorted(os.listdir(tmp_path / "y.npy.parts"))
    assert len([name for name in written if name.startswith("part-")]) >= 3
    assert not [name for name in written if name.endswith(".tmp")]
    summary = scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", batch_size=100)
    assert summary.resumed >= 3 and summary.parts == 10
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(model, x, 100))


def test_parts_of_another_run_are_refused_unless_overwritten(tmp_path, model_file):
    x = rng.normal(size=(300, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet")
    scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", batch_size=100)
    again = scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", batch_size=100)
    assert again.resumed == again.parts == 3
    with pytest.raises(InputError, match="another run.*--overwrite"):
        scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", batch_size=50)
    summary = scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", batch_size=50, overwrite=True)
    assert summary.parts == 6 and summary.resumed == 0
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 6


def test_a_folder_not_written_by_score_is_left_alone(tmp_path, model_file):
    x = rng.normal(size=(10, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not written by edgelstm score"):
            scale.score(model_file, tmp_path / "in.parquet", tmp_path / "out", overwrite=overwrite)
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


def test_client_memory_stays_flat_as_the_input_grows(tmp_path, model_file):
    peaks = []
    for sequences in (4_000, 16_000):
        np.save(tmp_path / "x.npy", rng.normal(size=(sequences, STEPS, FEATURES)).astype(np.float32))
        tracemalloc.start()
        scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", batch_size=1000, overwrite=True)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    input_bytes = 16_000 * STEPS * FEATURES * 4
    assert peaks[1] < 1.3 * peaks[0] and peaks[1] < input_bytes / 2, (peaks, input_bytes)


# --- bad inputs: refused before any work is scheduled -------------------------------------------

def refused(tmp_path, model_file, source, error, match, **options):
    with pytest.raises(error, match=match):
        scale.score(model_file, source, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.parts").exists()


def test_wrong_feature_size_is_refused(tmp_path, model_file):
    np.save(tmp_path / "x.npy", np.zeros((5, STEPS, FEATURES + 1), np.float32))
    refused(tmp_path, model_file, tmp_path / "x.npy", ShapeError, r"shape \(5, 9, 4\), expected \(sequences, any, 3\)")
    np.save(tmp_path / "s.npy", np.zeros((50, FEATURES + 1), np.float32))
    refused(tmp_path, model_file, tmp_path / "s.npy", ShapeError, r"expected a series \(steps, 3\)", window=5)


def test_a_series_without_window_or_shorter_than_one_is_refused(tmp_path, model_file):
    np.save(tmp_path / "s.npy", np.zeros((4, FEATURES), np.float32))
    refused(tmp_path, model_file, tmp_path / "s.npy", ShapeError, "fewer than one window of 5", window=5)
    refused(tmp_path, model_file, tmp_path / "s.npy", InputError, "give --window too", stride=2)


def test_ragged_parquet_sequences_are_refused(tmp_path, model_file):
    steps = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(3 * 17, np.float32)), 3)
    ragged = pa.ListArray.from_arrays(pa.array([0, 9, 17], pa.int32()), steps)
    pq.write_table(pa.table({"sequence": ragged}), tmp_path / "in.parquet")
    refused(tmp_path, model_file, tmp_path / "in.parquet", ShapeError, "different lengths")


def test_parquet_steps_of_the_wrong_width_are_refused(tmp_path, model_file):
    x = rng.normal(size=(4, STEPS, FEATURES + 2)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet")  # fixed-size steps: the schema tells
    refused(tmp_path, model_file, tmp_path / "in.parquet", ShapeError,
            r"float>\[5\] values, expected \(sequence, any, 3\)")
    pq.write_table(pa.table({"sequence": x.tolist()}), tmp_path / "in.parquet")  # variable lists: scanned
    refused(tmp_path, model_file, tmp_path / "in.parquet", ShapeError, "5..5 values per step")


def test_a_missing_column_is_refused_naming_the_columns(tmp_path, model_file):
    pq.write_table(pa.table({"a": np.zeros(30), "b": np.zeros(30)}), tmp_path / "in.parquet")
    refused(tmp_path, model_file, tmp_path / "in.parquet", InputError, "no column 'c'; its columns: a, b",
            window=5, columns=["a", "b", "c"])
    refused(tmp_path, model_file, tmp_path / "in.parquet", InputError,
            r"name the 3 feature column\(s\) of the series with --columns \(numeric columns of .*: a, b\)", window=5)
    refused(tmp_path, model_file, tmp_path / "in.parquet", InputError, "0 list columns")


def test_every_parquet_file_is_checked_not_only_the_first(tmp_path, model_file):
    (tmp_path / "in").mkdir()
    x = rng.normal(size=(6, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.table({"id": [1], "sequence": ["text"], "site": ["s"]}), tmp_path / "in" / "b.parquet")
    refused(tmp_path, model_file, tmp_path / "in", ShapeError, "b.parquet: column 'sequence' has type string")


def test_missing_values_and_empty_sequences_are_refused(tmp_path, model_file):
    pq.write_table(pa.table({"x": [1.0, None] * 20, "y": np.zeros(40), "z": np.zeros(40)}), tmp_path / "s.parquet")
    refused(tmp_path, model_file, tmp_path / "s.parquet", InputError, "column 'x' has missing", window=5,
            columns=["x", "y", "z"])
    steps = pa.array([[0.0, 1.0, None]] * STEPS, pa.list_(pa.float32(), 3))
    with_null = pa.FixedSizeListArray.from_arrays(steps, STEPS)
    pq.write_table(pa.table({"sequence": pa.chunked_array([with_null])}), tmp_path / "n.parquet")
    refused(tmp_path, model_file, tmp_path / "n.parquet", InputError, "column 'sequence' has missing")
    pq.write_table(pa.table({"sequence": pa.array([[]], pa.list_(pa.list_(pa.float32())))}), tmp_path / "e.parquet")
    refused(tmp_path, model_file, tmp_path / "e.parquet", ShapeError, "empty sequences")
    np.save(tmp_path / "e.npy", np.zeros((0, STEPS, FEATURES), np.float32))
    refused(tmp_path, model_file, tmp_path / "e.npy", ShapeError, "at least one sequence")


def test_finished_outputs_are_replaced_only_with_overwrite(tmp_path, model_file):
    np.save(tmp_path / "x.npy", np.zeros((5, STEPS, FEATURES), np.float32))
    np.save(tmp_path / "y.npy", np.ones(3))
    with pytest.raises(InputError, match="y.npy exists.*--overwrite"):
        scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy")
    scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", overwrite=True)
    assert np.load(tmp_path / "y.npy").shape == (5, 2)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.zeros((5, STEPS, FEATURES), np.float32))
    with pytest.raises(InputError, match="is a file; the output of .* is a folder"):
        scale.score(model_file, tmp_path / "in", tmp_path / "x.npy")
    assert not (tmp_path / "x.npy.parts").exists()


def test_unreadable_or_unknown_inputs_are_refused(tmp_path, model_file):
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    refused(tmp_path, model_file, tmp_path / "x.npy", FormatError, "cannot read")
    (tmp_path / "x.csv").write_text("1,2\n")
    refused(tmp_path, model_file, tmp_path / "x.csv", InputError, "give a .npy file")
    np.save(tmp_path / "x.npy", np.zeros((5, STEPS, FEATURES), np.float32))
    with pytest.raises(InputError, match="overwrite or sit inside the input"):
        scale.score(model_file, tmp_path / "x.npy", tmp_path / "x.npy")


def test_engine_options_that_do_not_fit_are_refused(tmp_path, model_file):
    np.save(tmp_path / "x.npy", np.zeros((5, STEPS, FEATURES), np.float32))
    for options, match in [({"engine": "spark"}, "unknown engine 'spark'; choose one of local, dask, ray"),
                           ({"address": "tcp://head:8786"}, "the local engine takes none"),
                           ({"engine": "dask", "address": "tcp://head:8786", "workers": 2}, "has its own workers")]:
        refused(tmp_path, model_file, tmp_path / "x.npy", InputError, match, **options)


def test_a_bad_token_id_fails_the_job_naming_the_file_and_rows(tmp_path):
    ids = np.full(40, 3)
    ids[33] = 10_000
    np.save(tmp_path / "ids.npy", ids)
    model_path = MODELS / "embedding_nomask_lstm.keras"
    with pytest.raises(InputError, match=r"ids.npy, sequences .*token id 10000"):
        scale.score(model_path, tmp_path / "ids.npy", tmp_path / "y.npy", window=7, batch_size=10)
    assert not (tmp_path / "y.npy").exists()


def test_a_model_shipped_by_path_is_checked_against_its_digest(tmp_path, model_file):
    path = tmp_path / "m.elstm"
    path.write_bytes(open(model_file, "rb").read())
    ref = ModelRef(path, by_path=True)
    assert ref.data is None and ref.load().input_shape == (None, FEATURES)
    artifact.write(small_graph(seed=5, features=FEATURES, units=6), path)
    shipped = pickle.loads(pickle.dumps(ref))  # as a worker gets it: the path and the digest
    shipped.backend = "reference"  # a key this process has not loaded yet
    with pytest.raises(InputError, match="changed after the job started"):
        shipped.load()


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_scores_with_progress_and_a_summary(tmp_path, model_file, model):
    x = rng.normal(size=(60, STEPS, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["score", model_file, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                                       "--batch-size", "25", "--model-by-path"])
    assert result.exit_code == 0, result.output
    assert "scoring" in result.output and "60 predictions in 3 parts; local engine" in result.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(model, x, 25))
    pq.write_table(sequence_table(x), tmp_path / "x.parquet")
    for _ in range(2):
        result = CliRunner().invoke(main, ["score", model_file, str(tmp_path / "x.parquet"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 0 and "Nothing to do: " in result.output and "all 60 predictions (1 part)" in result.output


def test_cli_errors_are_one_line(tmp_path, model_file, monkeypatch):
    pq.write_table(pa.table({"a": np.zeros(30)}), tmp_path / "in.parquet")
    result = CliRunner().invoke(main, ["score", model_file, str(tmp_path / "in.parquet"), "-o", str(tmp_path / "o"),
                                       "--window", "5", "--columns", "a,b"])
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == \
        f"Error: {tmp_path / 'in.parquet'} has no column 'b'; its columns: a"
    np.save(tmp_path / "x.npy", np.zeros((5, STEPS, FEATURES), np.float32))
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = CliRunner().invoke(main, ["score", model_file, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                                       "--engine", "dask"])
    assert result.exit_code == 1 and "pip install 'edgelstm[dask]'" in result.output


# --- Dask and Ray -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        yield cluster, client


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def windowed_parquet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    series = rng.normal(size=(600, FEATURES)).astype(np.float32)
    pq.write_table(pa.table({"t": np.arange(600), "x": series[:, 0], "y": series[:, 1], "z": series[:, 2]}),
                   folder / "in.parquet", row_group_size=100)
    return folder / "in.parquet", series


def score_windows(source, output, engine, **options):
    return scale.score(options.pop("model"), source, output, engine=engine, window=STEPS, stride=3, batch_size=20,
                       columns=["x", "y", "z"], **options)


def test_dask_and_ray_engines_are_bit_identical_to_local(tmp_path, model_file, windowed_parquet, dask_cluster,
                                                        ray_session):
    source, series = windowed_parquet
    outputs = {}
    for engine, options in [("local", {}), ("dask", {"address": dask_cluster[0].scheduler_address}), ("ray", {})]:
        summary = score_windows(source, tmp_path / engine, engine, model=model_file, **options)
        assert summary.engine == engine and summary.workers == 2
        outputs[engine] = pq.read_table(tmp_path / engine)
    assert outputs["local"].num_rows == len(range(0, 600 - STEPS + 1, 3))
    assert outputs["dask"].equals(outputs["local"]) and outputs["ray"].equals(outputs["local"])


def test_a_dask_worker_killed_mid_run_still_gives_a_complete_output(tmp_path, model_file, model, dask_cluster):
    cluster, client = dask_cluster
    x = rng.normal(size=(3000, STEPS, FEATURES)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    victim = next(iter(client.run(os.getpid).values()))
    killed = []

    def progress(rows, total):
        if rows and not killed:  # the first part is written, the rest in flight or queued
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    summary = scale.score(model_file, tmp_path / "x.npy", tmp_path / "y.npy", engine="dask",
                          address=cluster.scheduler_address, batch_size=50, progress=progress)
    assert killed and summary.parts == 60
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected(model, x, 50))
    client.wait_for_workers(2, timeout=60)


def test_predict_dask_is_lazy_and_matches_the_model(tmp_path, model_file, model, dask_cluster):
    da = pytest.importorskip("dask.array")
    x = rng.normal(size=(90, STEPS, FEATURES)).astype(np.float32)
    lazy = scale.predict_dask(model_file, da.from_array(x, chunks=(40, STEPS, FEATURES)))
    assert lazy.shape == (90, 2) and lazy.chunks == ((40, 40, 10), (2,))
    big = tmp_path / "big.elstm"
    artifact.write(small_graph(features=FEATURES, units=300), big)
    graph = scale.predict_dask(big, da.from_array(x, chunks=(5, STEPS, FEATURES))).__dask_graph__()
    assert len(pickle.dumps(dict(graph))) < 1.5 * big.stat().st_size  # the model once, not in each of 18 blocks
    np.testing.assert_allclose(lazy.compute(), model.predict(x), atol=1e-6)
    with pytest.raises(ShapeError, match=r"expected \(sequences, any, 3\)"):
        scale.predict_dask(model_file, da.zeros((4, STEPS, 5)))


def test_a_ray_address_that_does_not_answer_is_refused_at_once():
    from edgelstm.scale import engines

    with pytest.raises(edgelstm.EdgeLSTMError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        engines._refuse_silent_address("127.0.0.1:1")
    engines._refuse_silent_address("auto")  # left to Ray


def test_ray_predictor_maps_batches_once_per_actor(model_file, model, ray_session):
    import ray.data

    x = rng.normal(size=(70, STEPS, FEATURES)).astype(np.float32)
    ds = ray.data.from_numpy([x[:35], x[35:]]).map_batches(
        scale.RayPredictor, fn_constructor_args=(model_file,), concurrency=2, batch_size=32, batch_format="numpy")
    rows = ds.take_all()
    order = np.argsort([np.abs(x - row["data"]).sum(axis=(1, 2)).argmin() for row in rows])
    got = np.stack([rows[i]["prediction"] for i in order])
    np.testing.assert_allclose(got, model.predict(x), atol=1e-6)
    with pytest.raises(InputError, match="no column 'values'"):
        scale.RayPredictor(model_file, column="values")({"data": x})


@pytest.mark.parametrize("batch_format", ["numpy", "pyarrow"])
def test_ray_predictor_reads_parquet_list_columns(tmp_path, model_file, model, ray_session, batch_format):
    import ray.data

    x = rng.normal(size=(30, STEPS, FEATURES)).astype(np.float32)
    pq.write_table(sequence_table(x), tmp_path / "in.parquet")
    rows = ray.data.read_parquet(str(tmp_path / "in.parquet")).map_batches(
        scale.RayPredictor, fn_constructor_args=(model_file,), fn_constructor_kwargs={"column": "sequence"},
        concurrency=1, batch_size=16, batch_format=batch_format).take_all()
    got = {row["id"]: np.asarray(row["prediction"]) for row in rows}
    np.testing.assert_allclose(np.stack([got[i] for i in range(30)]), model.predict(x), atol=1e-6)
    assert {row["site"] for row in rows} == {"s0", "s1", "s2", "s3"}
