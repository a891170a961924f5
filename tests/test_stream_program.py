"""A stream's one-call step (`cpu.StepProgram`): bit-identical to running the layers one by one,
the same state as `step_many` and `reset`, and the layer path wherever it has no op."""

import copy
import threading

import numba
import numpy as np
import pytest

import edgelstm
from edgelstm import runtime
from edgelstm.errors import InputError, ShapeError
from edgelstm.ir import Graph, Layer
from edgelstm.kernels import cpu
from edgelstm.kernels.packed import PackedMatrix
from edgelstm.kernels.quantized import QuantizedMatrix
from edgelstm.passes.quantize import quantize
from edgelstm.runtime import _Workspace

from .conftest import small_graph
from .test_quantize import recurrent_graph

STEPS = 6


def _lstm_options(**attrs):
    peephole = attrs.pop("peephole", False)

    def build():
        graph = recurrent_graph("lstm", units=12, features=5, steps=None)
        graph.layers[1].attrs.update(attrs)
        if peephole:
            graph.layers[1].weights["peephole"] = np.random.default_rng(4).normal(0, 0.5, 36).astype(np.float32)
        return graph
    return build


def _gru(reset_after):
    def build():
        graph = recurrent_graph("gru", units=10, features=5, steps=None)
        graph.layers[1].attrs["reset_after"] = reset_after
        return graph
    return build


def _initial_states():
    graph = recurrent_graph("lstm", units=7, features=5, steps=None)
    rng = np.random.default_rng(5)
    graph.layers[1].weights.update(initial_h=rng.normal(size=7).astype(np.float32),
                                   initial_c=rng.normal(size=7).astype(np.float32))
    return graph


def _with_activation_and_take_step():
    """LSTM (sequences) -> GRU (sequences) -> take the newest step -> Dense -> Activation(softmax)."""
    graph = small_graph(features=5)
    graph.layers.insert(3, Layer("last", "take_step", ["gru"], {"index": -1}))
    graph.layers[2].attrs["return_sequences"] = True
    graph.layers[4].inputs = ["last"]
    graph.layers[4].attrs["activation"] = "linear"
    graph.layers.append(Layer("soft", "activation", ["head"], {"activation": "softmax"}))
    graph.output = "soft"
    return graph


def _normalised():
    """LSTM (sequences) -> LayerNormalization -> GRU -> BatchNormalization (folded) -> Dense."""
    graph = small_graph(features=5)
    rng = np.random.default_rng(8)
    graph.layers.insert(2, Layer("ln", "layer_norm", ["lstm"], {"epsilon": 1e-3},
                                 {"gamma": rng.normal(1, 0.2, 5).astype(np.float32),
                                  "beta": rng.normal(0, 0.2, 5).astype(np.float32)}))
    graph.layers[3].inputs = ["ln"]
    graph.layers.insert(4, Layer("bn", "batch_norm", ["gru"], {},
                                 {"scale": rng.normal(1, 0.2, 5).astype(np.float32),
                                  "offset": rng.normal(0, 0.2, 5).astype(np.float32)}))
    graph.layers[5].inputs = ["bn"]
    return graph


def _merged(op: str, inputs: int = 3):
    def build():
        """LSTM -> `inputs` Dense heads -> merged by `op` (widths differ for concatenate) -> Dense."""
        graph = recurrent_graph("lstm", units=6, features=5, steps=None)
        rng = np.random.default_rng(9)
        widths = [3 + (k if op == "concatenate" else 0) for k in range(inputs)]
        heads = [Layer(f"head{k}", "dense", ["cell"], {"activation": "tanh"},
                       {"kernel": rng.normal(0, 0.5, (6, n)).astype(np.float32),
                        "bias": rng.normal(0, 0.1, n).astype(np.float32)}) for k, n in enumerate(widths)]
        merged = Layer("merged", "merge", [h.name for h in heads], {"op": op, "mask_combine": "any"})
        out = Layer("final", "dense", ["merged"], {"activation": "linear"},
                    {"kernel": rng.normal(0, 0.5, (sum(widths) if op == "concatenate" else 3, 2)).astype(np.float32),
                     "bias": np.zeros(2, np.float32)})
        return Graph(graph.layers[:2] + heads + [merged, out], "final")
    return build


def _masked_ids():
    graph = _token_ids()
    graph.layers[1].attrs["mask_zero"] = True
    return graph


def _recurrent_layer(name: str, kind: str, source: str, features: int, units: int, **attrs) -> Layer:
    layer = recurrent_graph(kind, units=units, features=features, steps=None, seed=units).layers[1]
    layer.name, layer.inputs = name, [source]
    layer.attrs.update(attrs)
    return layer


def _dense(name: str, source: str, inputs: int, units: int) -> Layer:
    rng = np.random.default_rng(inputs * units)
    return Layer(name, "dense", [source], {"activation": "linear"},
                 {"kernel": rng.normal(0, 0.5, (inputs, units)).astype(np.float32), "bias": np.zeros(units, np.float32)})


def _masking_zero_output():
    """Masking -> LSTM (sequences, zeros where masked) -> Dense: the zeros reach the output."""
    layers = [Layer("x", "input", [], {"shape": [None, 5], "dtype": "float32"}),
              Layer("mask", "masking", ["x"], {"mask_value": 0.0}),
              _recurrent_layer("lstm", "lstm", "mask", 5, 6, return_sequences=True, zero_output_for_mask=True),
              _dense("out", "lstm", 6, 3)]
    return Graph(layers, "out")


def _masked_through_layers():
    """Masking(0.1) -> LayerNorm -> Activation -> GRU (sequences, zeros where masked) -> Dense:
    the mask passes the layers between, and 0.1 is compared as float32."""
    layers = [Layer("x", "input", [], {"shape": [None, 5], "dtype": "float32"}),
              Layer("mask", "masking", ["x"], {"mask_value": 0.1}),
              Layer("ln", "layer_norm", ["mask"], {"epsilon": 1e-3},
                    {"gamma": np.ones(5, np.float32), "beta": np.full(5, 0.1, np.float32)}),
              Layer("act", "activation", ["ln"], {"activation": "tanh"}),
              _recurrent_layer("gru", "gru", "act", 5, 6, return_sequences=True, zero_output_for_mask=True),
              _dense("out", "gru", 6, 2)]
    return Graph(layers, "out")


def _masked_conv():
    """Masking -> Conv1D (drops the mask) -> LSTM."""
    rng = np.random.default_rng(12)
    conv = Layer("conv", "conv1d", ["mask"], {"padding": "causal", "strides": 1, "dilation": 3, "activation": "linear"},
                 {"kernel": rng.normal(0, 0.5, (2, 5, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)})
    layers = [Layer("x", "input", [], {"shape": [None, 5], "dtype": "float32"}),
              Layer("mask", "masking", ["x"], {"mask_value": 0.0}), conv,
              _recurrent_layer("lstm", "lstm", "conv", 4, 6)]
    return Graph(layers, "lstm")


def _masked_int8():
    """Masking -> int8 GRU of an odd unit count (reset before) -> int8 Dense."""
    layers = [Layer("x", "input", [], {"shape": [None, 5], "dtype": "float32"}),
              Layer("mask", "masking", ["x"], {"mask_value": 0.0}),
              _recurrent_layer("gru", "gru", "mask", 5, 65, reset_after=False),
              _dense("out", "gru", 65, 2)]
    return quantize(Graph(layers, "out"), "int8", min_elements=0)  # the 65 x 2 head too


def _masks_merged(combine: str, partial: bool):
    def build():
        """Two masks (zero rows of x, and of relu(x)) merged, or one mask and none (`partial`), then an LSTM."""
        rng = np.random.default_rng(10)
        layers = [Layer("x", "input", [], {"shape": [None, 2], "dtype": "float32"}),
                  Layer("m1", "masking", ["x"], {"mask_value": 0.0}),
                  Layer("relu", "activation", ["x"], {"activation": "relu"}),
                  Layer("m2", "masking", ["relu"], {"mask_value": 0.0})]
        other = "relu" if partial else "m2"
        layers += [Layer(f"d{k}", "dense", [src], {"activation": "tanh"},
                         {"kernel": rng.normal(0, 1, (2, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)})
                   for k, src in enumerate(["m1", other])]
        layers += [Layer("sum", "merge", ["d0", "d1"], {"op": "add", "mask_combine": combine}),
                   _recurrent_layer("lstm", "lstm", "sum", 3, 5)]
        return Graph(layers, "lstm")
    return build


def _causal_conv(taps: int, dilation: int):
    def build():
        """Conv1D (causal, `taps` taps `dilation` apart) -> GRU."""
        rng = np.random.default_rng(11)
        conv = Layer("conv", "conv1d", ["x"], {"padding": "causal", "strides": 1, "dilation": dilation,
                                               "activation": "relu"},
                     {"kernel": rng.normal(0, 0.5, (taps, 5, 4)).astype(np.float32),
                      "bias": rng.normal(0, 0.1, 4).astype(np.float32)})
        return Graph([Layer("x", "input", [], {"shape": [None, 5], "dtype": "float32"}), conv,
                      _recurrent_layer("gru", "gru", "conv", 4, 6)], "gru")
    return build


def _int8(kind: str, features: int, units: int = 70, calibrated: bool = False, **attrs):
    """int8 matrices where they have 64 or more input rows (the input kernel, the recurrent one,
    the Dense head: min_elements 0 quantizes it); a static input scale when calibrated."""
    def build():
        graph = recurrent_graph(kind, units=units, features=features, steps=None)
        graph.layers[1].attrs.update(attrs)
        x = np.random.default_rng(2).normal(0, 1, (4, 6, features)).astype(np.float32)
        return quantize(graph, "int8", calibration=x if calibrated else None, min_elements=0)
    return build


def _token_ids():
    graph = recurrent_graph("gru", units=9, features=4, steps=None)
    table = np.random.default_rng(6).normal(size=(20, 4)).astype(np.float32)
    graph.layers[0] = Layer("x", "input", [], {"shape": [None], "dtype": "int32"})
    graph.layers.insert(1, Layer("embed", "embedding", ["x"], {"mask_zero": False}, {"embeddings": table}))
    graph.layers[2].inputs = ["embed"]
    return graph


GRAPHS = {
    "lstm": lambda: recurrent_graph("lstm", units=12, features=5, steps=None),
    "lstm_peephole_clip": _lstm_options(peephole=True, clip=0.7),
    "lstm_coupled_gates": _lstm_options(input_forget=True, recurrent_activation="hard_sigmoid"),
    "gru_reset_after": _gru(True),
    "gru_reset_before": _gru(False),
    "rnn": lambda: recurrent_graph("rnn", units=11, features=5, steps=None),
    "initial_states": _initial_states,
    "stacked_softmax": _with_activation_and_take_step,
    "normalised": _normalised,
    **{f"merge_{op}": _merged(op) for op in ("add", "multiply", "average", "concatenate")},
    "int8_lstm": _int8("lstm", 5),
    "int8_lstm_int8_input": _int8("lstm", 65, calibrated=True),
    "int8_gru_reset_before": _int8("gru", 68, reset_after=False),
    "int8_rnn": _int8("rnn", 5, calibrated=True),
    "int8_input_only": _int8("lstm", 68, units=12),
    "token_ids": _token_ids,
    "masked_ids": _masked_ids,
    "causal_conv": _causal_conv(3, 2),
    "causal_conv_one_tap": _causal_conv(1, 1),
    "masking_zero_output": _masking_zero_output,
    "masked_through_layers": _masked_through_layers,
    "masked_conv": _masked_conv,
    "masked_int8": _masked_int8,
    "wide_gru": lambda: recurrent_graph("gru", units=40, features=5, steps=None),  # from 8 rows its Dense calls sgemm
    **{f"masks_{combine}{'_partial' if partial else ''}": _masks_merged(combine, partial)
       for combine in ("all", "any") for partial in (False, True)},
}


def _inputs(model: edgelstm.Model, batch: int) -> np.ndarray:
    """Random steps, some of them masked by the graphs above: token id 0, all zeros, all 0.1, and
    one all negative (zeros after a relu)."""
    rng = np.random.default_rng(batch)
    if model.input_dtype.kind == "i":
        ids = rng.integers(1, 20, (batch, STEPS))
        ids[::2, 1] = ids[-1, 3] = 0
        return ids
    x = rng.normal(0, 1, (batch, STEPS, model.input_shape[1])).astype(np.float32)
    x[::2, 1] = x[-1, 3] = 0.0
    x[1::3, 4] = np.float32(0.1)
    x[0, 2] = -np.abs(x[0, 2]) - 0.5
    return x


@pytest.fixture
def set_threads():
    """numba.set_num_threads for this test only."""
    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)


def _newest(whole: np.ndarray) -> np.ndarray:
    """What a stream step gives for a prefix whose whole-sequence output is `whole`: its last
    step when the model outputs sequences."""
    return whole[:, -1] if whole.ndim == 3 else whole


BATCHES = [1, cpu.ROW_SPLIT_MIN - 1, cpu.ROW_SPLIT_MIN + 1]  # one row; four-row passes and one; sgemm in the Dense


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", GRAPHS)
def test_one_call_step_is_bit_identical_to_the_layer_path(name, batch, set_threads):
    if batch >= cpu.ROW_SPLIT_MIN:  # on more threads the layer path splits these rows into blocks, and
        set_threads(1)  # a block of under 8 takes our loops where 8 or more take sgemm (rounding apart)
    model = edgelstm.Model(GRAPHS[name](), "cpu")
    x = _inputs(model, batch)
    program, layers = model.stream(batch), model.stream(batch)
    assert program._program is not None
    layers._program = None
    for t in range(STEPS):
        got = program.step(x[:, t])
        np.testing.assert_array_equal(got, layers.step(x[:, t]))
        if model.input_shape[0] is None:
            np.testing.assert_allclose(got, _newest(model.predict(x[:, :t + 1])), atol=1e-6, rtol=0)
    program.reset()
    layers.reset()
    np.testing.assert_array_equal(program.step(x[:, 0]), layers.step(x[:, 0]))


def test_steps_return_new_arrays():
    stream = edgelstm.Model(GRAPHS["lstm"](), "cpu").stream()
    x = _inputs(stream.model, 1)
    first = stream.step(x[:, 0])
    kept = first.copy()
    second = stream.step(x[:, 1])
    first[:] = 99.0
    np.testing.assert_array_equal(kept, stream.model.predict(x[:, :1]))
    assert not np.shares_memory(second, first)


@pytest.mark.parametrize("name", ["lstm", "gru_reset_after", "causal_conv", "masked_ids"])
def test_step_many_and_reset_share_the_one_call_state(name):
    model = edgelstm.Model(GRAPHS[name](), "cpu")
    x = _inputs(model, 2)
    stream = model.stream(2)
    assert stream._program is not None
    stream.step(x[:, 0])
    chunk = stream.step_many(x[:, 1:3])
    np.testing.assert_allclose(chunk[:, -1], model.predict(x[:, :3]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(stream.step(x[:, 3]), model.predict(x[:, :4]), atol=1e-6, rtol=0)
    stream.reset()
    np.testing.assert_allclose(stream.step(x[:, 0]), model.predict(x[:, :1]), atol=1e-6, rtol=0)


def test_a_bad_token_id_is_named_and_the_state_is_kept():
    model = edgelstm.Model(_token_ids(), "cpu")
    x = _inputs(model, 3)
    stream = model.stream(3)
    stream.step(x[:, 0])
    with pytest.raises(InputError, match="token id 20 is outside the range of embedding 'embed' \\[0, 20\\)"):
        stream.step(np.array([1, 20, 2]))
    with pytest.raises(InputError, match="token id -1"):
        stream.step(np.array([-1, 2, 3]))
    np.testing.assert_array_equal(stream.step(x[:, 1]), model.predict(x[:, :2]))


def _unknown_features() -> Graph:
    """Features of any count (no layer fixes it): x + tanh(x)."""
    return Graph([Layer("x", "input", [], {"shape": [None, None], "dtype": "float32"}),
                  Layer("act", "activation", ["x"], {"activation": "tanh"}),
                  Layer("sum", "merge", ["x", "act"], {"op": "add", "mask_combine": "any"})], "sum")


@pytest.mark.parametrize("build, batch", [(GRAPHS["lstm"], cpu.STEP_PROGRAM_MAX_BATCH + 1),
                                          (_merged("add", cpu.STEP_PROGRAM_MAX_MERGE + 1), 1), (_unknown_features, 2)],
                         ids=["large batch", "merge of many", "unknown feature count"])
def test_what_the_program_cannot_run_takes_the_layer_path(build, batch):
    model = edgelstm.Model(build(), "cpu")
    stream = model.stream(batch)
    assert stream._program is None
    x = np.ones((batch, STEPS, 3), np.float32) if model.input_shape == (None, None) else _inputs(model, batch)
    for t in range(3):
        got = stream.step(x[:, t])
    np.testing.assert_allclose(got, _newest(model.predict(x[:, :3])), atol=1e-6, rtol=0)


def test_a_program_refuses_an_input_of_another_shape():
    stream = edgelstm.Model(GRAPHS["lstm"](), "cpu").stream(2)
    with pytest.raises(ValueError, match=r"a step takes \(2, 5\), got \(2, 4\)"):
        stream._program.run(np.zeros((2, 4), np.float32))


def test_an_embedding_of_computed_values_is_left_to_the_layer_path():
    """Only the input's token ids index an embedding in the program; the layer path refuses the rest."""
    graph = recurrent_graph("lstm", units=1, features=5, steps=None)
    graph.layers.insert(2, Layer("embed", "embedding", ["cell"], {"mask_zero": False},
                                 {"embeddings": np.ones((4, 3), np.float32)}))
    graph.layers[3].inputs = ["embed"]
    graph.layers[3].weights["kernel"] = np.ones((3, 3), np.float32)
    assert edgelstm.Model(graph, "cpu").stream()._program is None


@pytest.mark.parametrize("batch", [3, cpu.STEP_PROGRAM_MAX_BATCH + 2])
def test_initial_states_for_another_batch_are_refused_when_the_stream_opens(batch):
    graph = _initial_states()
    graph.layers[1].weights["initial_h"] = np.zeros((2, 7), np.float32)
    graph.layers[1].weights["initial_c"] = np.zeros((2, 7), np.float32)
    with pytest.raises(ShapeError, match="initial states for a batch of 2"):
        edgelstm.Model(graph, "cpu").stream(batch)


def test_streams_of_one_model_step_in_threads():
    model = edgelstm.Model(GRAPHS["normalised"](), "cpu")
    inputs = [_inputs(model, 2) + k for k in range(4)]

    def run(x):
        stream = model.stream(2)
        return [stream.step(x[:, t]) for t in range(STEPS)]
    expected = [run(x) for x in inputs]
    results = [None] * len(inputs)

    def work(k):
        for _ in range(10):
            results[k] = run(inputs[k])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(np.stack(got), np.stack(want))


def test_a_program_cannot_be_copied():
    program = edgelstm.Model(GRAPHS["lstm"](), "cpu").stream()._program
    for make_copy in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be copied"):
            make_copy(program)


def test_a_program_refuses_arrays_that_do_not_fit_its_ops():
    """The kernel reads exactly the shapes the table names: anything else is refused when built."""
    w = {"kernel": np.zeros((5, 24), np.float32), "recurrent_kernel": np.zeros((6, 24), np.float32),
         "bias": np.zeros(24, np.float32)}
    acts = (1, 2, 1)

    def lstm(program, h=np.zeros((2, 6), np.float32), c=np.zeros((2, 6), np.float32), **weights):
        return program.recurrent("lstm", program.input, {**w, **weights}, acts, False, False, 0.0, h, c)
    with pytest.raises(ValueError, match="the state h is float32 \\(1, 6\\)"):
        lstm(cpu.StepProgram(2, 5), h=np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="the state c"):
        lstm(cpu.StepProgram(2, 5), c=np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="a matrix is float32 \\(2, 24\\)"):
        lstm(cpu.StepProgram(2, 5), recurrent_kernel=np.zeros((2, 24), np.float32))
    with pytest.raises(ValueError, match="a peephole of 1 values"):
        lstm(cpu.StepProgram(2, 5), peephole=np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="op input 0 is float32 \\(2, 4\\)"):
        lstm(cpu.StepProgram(2, 4))
    with pytest.raises(ValueError, match="a bias is float32 \\(1,\\)"):
        cpu.StepProgram(2, 5).dense(0, np.zeros((5, 3), np.float32), np.zeros(1, np.float32), 0)
    int8 = QuantizedMatrix.from_values(np.ones((40, 160), np.int8), np.ones(160, np.float32))
    with pytest.raises(ValueError, match="an int8 matrix's panels"):
        cpu.StepProgram(2, 50).dense(0, int8._replace(rows=50), np.zeros(160, np.float32), 0)


def _layer_by_layer(model: edgelstm.Model, x: np.ndarray) -> np.ndarray:
    """`predict` as the layers run one by one, from zero states."""
    ws = _Workspace(cpu)
    ws.reset_states()
    return model._run(model.prepare_input(x), ws)


def _counting_sequence_calls(monkeypatch) -> list:
    """The batches `StepProgram.run_sequence` is called with, from now on."""
    calls, run_sequence = [], cpu.StepProgram.run_sequence

    def counted(program, x, every_step):
        calls.append(program.batch)
        return run_sequence(program, x, every_step)
    monkeypatch.setattr(cpu.StepProgram, "run_sequence", counted)
    return calls


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", GRAPHS)
def test_predict_steps_whole_sequences_through_the_program_as_the_layers_do(name, batch, monkeypatch, set_threads):
    """Small batches of a model that streams run as one program call per sequence (layers that see
    only the sequence's end deferred to after its last step), giving what the layers give; from 8
    rows on one thread (on more, only while the work is small)."""
    if batch >= cpu.ROW_SPLIT_MIN:
        set_threads(1)
    model = edgelstm.Model(GRAPHS[name](), "cpu")
    x = _inputs(model, batch)
    if model.input_shape[0] is not None:
        x = x[:, :model.input_shape[0]]
    calls = _counting_sequence_calls(monkeypatch)
    got = model.predict(x)
    assert calls == [batch]
    np.testing.assert_allclose(got, _layer_by_layer(model, x), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(model.predict(x), got)  # the states start again from their initial values


def test_layers_after_the_last_state_run_once_after_the_last_step():
    """...and the states restart (the LSTM's h and c, the GRU's h) before the first."""
    model = edgelstm.Model(GRAPHS["stacked_softmax"](), "cpu")
    model.predict(_inputs(model, 1))
    program = model._workspace().programs[1]
    deferred, restarts = program._table[0, 5], program._table[0, 6]
    assert [row[0] for row in program._table[deferred:restarts]] == [cpu._OP_DENSE, cpu._OP_ACTIVATION]
    assert [row[0] for row in program._table[restarts:]] == [cpu._OP_RESTART] * 3


@pytest.mark.parametrize("batch, steps", [(cpu.STEP_PROGRAM_MAX_BATCH + 1, 4), (1, runtime._STEPPED_MAX_STEPS + 1)])
def test_large_batches_and_long_sequences_run_layer_by_layer(batch, steps):
    model = edgelstm.Model(GRAPHS["lstm"](), "cpu")
    x = np.random.default_rng(0).normal(size=(batch, steps, 5)).astype(np.float32)
    got = model.predict(x)
    assert model._workspace().programs == {}
    np.testing.assert_allclose(got, model.predict(x, batch_size=1), atol=1e-6, rtol=0)  # stepped, a sequence a call


def test_a_bad_token_id_in_a_whole_sequence_is_named():
    model = edgelstm.Model(_token_ids(), "cpu")
    x = _inputs(model, 2)
    x[1, 4] = 25
    with pytest.raises(InputError, match="token id 25 is outside the range of embedding 'embed' \\[0, 20\\)"):
        model.predict(x)
    x[1, 4] = 3
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), atol=1e-6, rtol=0)


def test_a_whole_sequence_of_another_shape_is_refused_by_the_program():
    program = cpu.StepProgram(2, 5)
    program.finish(program.dense(program.input, np.ones((5, 3), np.float32), np.zeros(3, np.float32), 0))
    with pytest.raises(ValueError, match=r"a step takes \(2, 5\), got sequences \(2, 3, 4\)"):
        program.run_sequence(np.zeros((2, 3, 4), np.float32), every_step=True)
    with pytest.raises(ValueError, match="are \\[batch, steps, ...\\]"):
        program.run_sequence(np.zeros((2, 0, 5), np.float32), every_step=True)
    out, status = program.run_sequence(np.ones((2, 3, 5), np.float32), every_step=True)
    assert status == -1 and out.shape == (2, 3, 3) and np.all(out == 5.0)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
@pytest.mark.parametrize("kind, reset_after, batch, units", [("lstm", False, 1, 300), ("gru", True, 1, 300),
                                                           ("gru", False, 1, 300), ("lstm", False, 9, 400)])
def test_products_split_over_threads_change_no_output(kind, reset_after, batch, units, set_threads):
    """A large matrix at batch 1 (300 units: over 1 MiB, partial panels), or from 8 rows in the
    program (400 units: over 2 MiB), splits its columns over the threads: the same outputs as one
    thread, whole sequences (stepped, and at batch 1 layer by layer), streams."""
    graph = recurrent_graph(kind, units=units, features=5, steps=None)
    if kind == "gru":
        graph.layers[1].attrs["reset_after"] = reset_after
    model = edgelstm.Model(graph, "cpu")
    short, long = (np.random.default_rng(steps).normal(0, 1, (batch, steps, 5)).astype(np.float32)
                   for steps in (7, runtime._STEPPED_MAX_STEPS + 3))

    def outputs():
        stream = model.stream(batch)
        # from 8 rows the layer path splits rows instead, its blocks' Dense rounding by block size
        whole = [model.predict(short)] + ([model.predict(long)] if batch == 1 else [])
        return whole + [np.stack([stream.step(short[:, t]) for t in range(7)])]

    matrices = [model._host_weights[0][name] for name in ("kernel", "recurrent_kernel")]
    set_threads(1)
    assert cpu.column_split(matrices, batch) == (0, 1)
    alone = outputs()
    set_threads(2)
    stream = model.stream(batch)
    assert stream._program.splits_columns
    assert cpu.column_split(matrices, batch)[1] == 2  # what a call of all the rows takes
    split = outputs()
    stream.step(short[:, 0])
    assert np.all(stream._program._table[stream._program._splitting_rows, 36] == 2)  # and the stream's
    for got, want in zip(split, alone):
        np.testing.assert_array_equal(got, want)


def test_columns_split_from_8_rows_only_for_matrices_past_2_mib_and_up_to_16_rows():
    one_mib, two_mib = np.zeros((256, 1024), np.float32), PackedMatrix.from_matrix(np.zeros((512, 1024), np.float32))
    assert cpu.split_address([one_mib], 7) != 0
    assert cpu.split_address([one_mib[:, :-1]], 7) == 0
    assert cpu.split_address([one_mib], 8) == 0
    assert cpu.split_address([one_mib, two_mib], 16) != 0
    assert cpu.split_address([two_mib], 17) == 0
    assert cpu.split_address([QuantizedMatrix.from_values(np.zeros((1024, 1024), np.int8),
                                                          np.ones(1024, np.float32))], 1) == 0


def test_a_model_counts_the_multiply_adds_of_a_step():
    model = edgelstm.Model(GRAPHS["causal_conv"](), "cpu")
    conv, cell = (layer.weights for layer in model.graph.layers if layer.weights)
    assert model._multiply_adds == conv["kernel"].size + cell["kernel"].size + cell["recurrent_kernel"].size
    assert edgelstm.Model(GRAPHS["wide_gru"](), "cpu")._multiply_adds == (5 + 40) * 120 + 40 * 3
    assert edgelstm.Model(GRAPHS["int8_lstm_int8_input"](), "cpu")._multiply_adds == (65 + 70) * 280 + 70 * 3


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_from_8_rows_the_program_runs_on_one_thread_or_for_little_work(monkeypatch, set_threads):
    """Batches of 8 to 64 step through the program on one thread; on more, only while the call's
    multiply-adds stay under `_PROGRAM_MAX_WORK`, else their rows split over the threads. The
    outputs agree either way."""
    model = edgelstm.Model(GRAPHS["lstm"](), "cpu")
    x = np.random.default_rng(0).normal(size=(cpu.STEP_PROGRAM_MAX_BATCH, 20, 5)).astype(np.float32)
    calls = _counting_sequence_calls(monkeypatch)
    set_threads(1)
    alone = model.predict(x)
    set_threads(2)
    few = model.predict(x[:9, :2])
    monkeypatch.setattr(runtime, "_PROGRAM_MAX_WORK", 9 * 2 * model._multiply_adds - 1)
    split = model.predict(x[:9, :2])
    layers = model.predict(x)
    assert calls == [cpu.STEP_PROGRAM_MAX_BATCH, 9]
    np.testing.assert_allclose(layers, alone, atol=1e-6, rtol=0)
    np.testing.assert_allclose(few, split, atol=1e-6, rtol=0)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_a_stream_of_8_or_more_rows_takes_either_path_step_by_step(monkeypatch, set_threads):
    """The thread count read at each step picks the path; both share the stream's state, bit-identically."""
    model = edgelstm.Model(GRAPHS["wide_gru"](), "cpu")
    x = _inputs(model, 12)
    stream, layers = model.stream(12), model.stream(12)
    layers._program = None
    monkeypatch.setattr(runtime, "_PROGRAM_MAX_WORK", 0)
    ran = []
    monkeypatch.setattr(stream._program, "run", lambda x_t, run=stream._program.run: ran.append(1) or run(x_t))
    for t in range(STEPS):
        set_threads(1 + t % 2)
        np.testing.assert_array_equal(stream.step(x[:, t]), layers.step(x[:, t]))
    assert len(ran) == STEPS // 2


def test_a_restart_names_a_state_the_program_holds():
    program = cpu.StepProgram(2, 5)
    with pytest.raises(ValueError, match="no op holds"):
        program.restart_from(np.zeros((2, 6), np.float32), None)
