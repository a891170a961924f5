"""Model.predict and Stream on hand-built graphs: backends agree, streaming equals predict,
bad inputs get clear errors."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import edgelstm
from edgelstm.errors import BackendError, InputError, ShapeError
from edgelstm.ir import Layer

from .conftest import small_graph

X = np.random.default_rng(7).normal(size=(4, 9, 3)).astype(np.float32)


def test_backends_agree():
    graph = small_graph()
    np.testing.assert_allclose(edgelstm.Model(graph, "cpu").predict(X),
                               edgelstm.Model(graph, "reference").predict(X), atol=1e-6)


def test_any_batch_and_length_and_chunking():
    model = edgelstm.Model(small_graph())
    whole = model.predict(X)
    np.testing.assert_allclose(model.predict(X, batch_size=3), whole, atol=1e-7)
    np.testing.assert_allclose(model.predict(X[:1]), whole[:1], atol=1e-7)
    assert model.predict(X[:, :2]).shape == (4, 2)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_stream_equals_predict_on_prefixes(backend):
    model = edgelstm.Model(small_graph(), backend)
    stream = model.stream(batch=4)
    for t in range(X.shape[1]):
        np.testing.assert_allclose(stream.step(X[:, t]), model.predict(X[:, :t + 1]), atol=1e-6)
    stream.reset()
    np.testing.assert_allclose(stream.step(X[:, 0]), model.predict(X[:, :1]), atol=1e-6)


def test_streams_keep_separate_state():
    model = edgelstm.Model(small_graph())
    a, b = model.stream(), model.stream()
    a.step(X[:1, 0])
    np.testing.assert_allclose(b.step(X[:1, 0]), model.predict(X[:1, :1]), atol=1e-6)


def test_predict_from_threads_matches_serial():
    model = edgelstm.Model(small_graph())
    inputs = [np.random.default_rng(i).normal(size=(3, 5 + i, 3)).astype(np.float32) for i in range(6)]
    expected = [model.predict(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(20):
            results[i] = model.predict(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 5, 4), np.float32), r"shape \(2, 5, 4\), expected \('batch', 'any', 3\)"),
    (np.zeros((5, 3), np.float32), r"shape \(5, 3\), expected"),
    (np.zeros((0, 5, 3), np.float32), "at least one sequence"),
    (np.zeros((2, 0, 3), np.float32), "at least one step"),
    ([[[1, 2, 3]], [[1, 2]]], "not a regular array"),
    (np.array([[["a", "b", "c"]]]), "dtype"),
])
def test_bad_inputs_are_named(x, message):
    with pytest.raises(ShapeError, match=message):
        edgelstm.Model(small_graph()).predict(x)


def test_ready_float32_input_is_taken_as_it_is_and_any_other_converted():
    model = edgelstm.Model(small_graph())
    assert model.prepare_input(X) is X
    strided = np.repeat(X, 2, axis=1)[:, ::2]
    for x in (strided, X.astype(np.float64), X.tolist()):
        np.testing.assert_array_equal(model.predict(x), model.predict(X))
    graph = small_graph()
    graph.layers[0].attrs["shape"] = [9, 3]
    fixed = edgelstm.Model(graph)
    assert fixed.prepare_input(X) is X
    with pytest.raises(ShapeError, match=r"shape \(4, 5, 3\), expected \('batch', 9, 3\)"):
        fixed.predict(np.ascontiguousarray(X[:, :5]))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_bad_batch_size_is_named(batch_size):
    with pytest.raises(InputError, match="batch_size"):
        edgelstm.Model(small_graph()).predict(X, batch_size=batch_size)


def test_batch_1_products_split_over_threads_are_safe_on_the_workqueue_layer():
    """A batch-1 predict and a stream of a model with a 1 MiB matrix launch parallel code (their
    products split by columns): from four Python threads at once, on the layer that aborts when two
    launches meet."""
    script = (
        "import threading, numba, numpy as np, edgelstm\n"
        "from tests.test_quantize import recurrent_graph\n"
        "numba.set_num_threads(2)\n"
        "m = edgelstm.Model(recurrent_graph('lstm', units=300, features=5, steps=None))\n"
        "x = np.ones((1, 6, 5), np.float32)\n"
        "want = m.predict(x)\n"
        "def work():\n"
        "    numba.set_num_threads(2)\n"
        "    s = m.stream()\n"
        "    assert s._program.splits_columns\n"
        "    for _ in range(20):\n"
        "        assert np.array_equal(m.predict(x), want)\n"
        "        s.reset(); steps = [s.step(x[:, t]) for t in range(6)]\n"
        "        assert np.array_equal(steps[-1], want)\n"
        "ts = [threading.Thread(target=work) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(numba.threading_layer())\n")
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"


def test_threads_are_safe_on_the_workqueue_layer():
    script = (
        "import threading, numpy as np, edgelstm\n"
        "from tests.conftest import small_graph\n"
        "m = edgelstm.Model(small_graph())\n"
        "x = np.ones((8, 30, 3), np.float32)\n"
        "want = m.predict(x)\n"
        "def work():\n"
        "    for _ in range(30): assert np.array_equal(m.predict(x), want)\n"
        "ts = [threading.Thread(target=work) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "import numba; print(numba.threading_layer())\n")
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"


def test_float64_and_int_inputs_are_accepted():
    model = edgelstm.Model(small_graph())
    np.testing.assert_allclose(model.predict(X.astype(np.float64)), model.predict(X), atol=1e-7)
    assert model.predict(np.ones((1, 2, 3), np.int64)).shape == (1, 2)


def test_stream_checks_its_batch():
    with pytest.raises(ShapeError, match="batch 2, the stream was opened for 1"):
        edgelstm.Model(small_graph()).stream(batch=1).step(X[:2, 0])


def test_non_causal_model_refuses_to_stream():
    graph = small_graph()
    graph.layers[1].attrs["go_backwards"] = True
    with pytest.raises(BackendError, match="layer 'lstm' is not causal"):
        edgelstm.Model(graph).stream()


def test_unknown_backend_lists_choices():
    with pytest.raises(BackendError, match="auto, cpu, reference"):
        edgelstm.Model(small_graph(), "tpu")


def _embedding_graph():
    graph = small_graph()
    table = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    graph.layers[0] = Layer("input", "input", [], {"shape": [None], "dtype": "int32"})
    graph.layers.insert(1, Layer("embed", "embedding", ["input"], {"mask_zero": True}, {"embeddings": table}))
    graph.layers[2].inputs = ["embed"]
    return graph


def test_token_ids_out_of_range_are_named():
    model = edgelstm.Model(_embedding_graph())
    with pytest.raises(InputError, match="token id 10 is outside the range of embedding 'embed' \\[0, 10\\)"):
        model.predict(np.array([[1, 2, 10]]))
    with pytest.raises(ShapeError, match="integer token ids"):
        model.predict(np.array([[1.5, 2.0]]))
    np.testing.assert_array_equal(model.predict(np.array([[1.0, 2.0]])), model.predict(np.array([[1, 2]])))


def test_masked_steps_carry_state_in_predict_and_stream():
    model = edgelstm.Model(_embedding_graph())
    ids = np.array([[3, 0, 4, 0, 0], [5, 6, 7, 8, 9]])
    unmasked = model.predict(np.array([[3, 4], [5, 6]]))
    y = model.predict(ids)
    np.testing.assert_allclose(y[0], unmasked[0], atol=1e-6)
    stream = model.stream(batch=2)
    for t in range(ids.shape[1]):
        step = stream.step(ids[:, t])
    np.testing.assert_allclose(step, y, atol=1e-6)


def test_take_step_of_a_sequence_equals_the_last_output():
    graph = small_graph()
    graph.layers[2].attrs["return_sequences"] = True
    graph.layers.insert(3, Layer("last", "take_step", ["gru"], {"index": -1}))
    graph.layers[4].inputs = ["last"]
    model, plain = edgelstm.Model(graph), edgelstm.Model(small_graph())
    np.testing.assert_allclose(model.predict(X), plain.predict(X), atol=1e-6)
    stream = model.stream(batch=4)
    for t in range(3):
        step = stream.step(X[:, t])
    np.testing.assert_allclose(step, plain.predict(X[:, :3]), atol=1e-6)


def test_nan_propagates_to_its_own_sequence_or_is_refused_on_request(tmp_path):
    model = edgelstm.Model(small_graph())
    x = np.random.default_rng(4).normal(size=(3, 6, 3)).astype(np.float32)
    clean = model.predict(x)
    x[1, 2, 0] = np.nan
    y = model.predict(x)
    assert np.isnan(y[1]).all() and np.array_equal(y[[0, 2]], clean[[0, 2]])
    with pytest.raises(InputError, match=r"1 NaN or infinite values \(the first at index \(1, 2, 0\)\)"):
        model.predict(x, check_finite=True)
    stream = model.stream(batch=3)
    with pytest.raises(InputError, match="NaN"):
        stream.step(x[:, 2], check_finite=True)
    np.testing.assert_allclose(stream.step(x[:, 0], check_finite=True), model.predict(x[:, :1]), atol=1e-6)

    from click.testing import CliRunner
    from edgelstm.cli import main
    edgelstm.artifact.write(small_graph(), tmp_path / "m.elstm")
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "m.elstm"), "-i", str(tmp_path / "x.npy"), "--check-finite"])
    assert result.exit_code == 1 and "NaN or infinite" in result.output and "Traceback" not in result.output
    assert CliRunner().invoke(main, ["run", str(tmp_path / "m.elstm"), "-i", str(tmp_path / "x.npy")]).exit_code == 0
