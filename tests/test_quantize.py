"""int8 and float16 quantization: the pass, the int8 kernels against their numpy oracle, the file."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgelstm
from edgelstm import artifact
from edgelstm.cli import main
from edgelstm.errors import FormatError, InputError, ShapeError, UnsupportedError
from edgelstm.ir import Graph, Layer, validate
from edgelstm.kernels import cpu
from edgelstm.kernels.quantized import GROUP, PANEL, ROW_QMAX, QuantizedMatrix, pack_panels, quantize_rows
from edgelstm.passes.quantize import MIN_ELEMENTS, compare, quantize, quantize_weight
from edgelstm.runtime import Model, kernel_weights

from .conftest import MODELS

rng = np.random.default_rng(7)


def recurrent_graph(kind: str, units: int, features: int = 8, steps: int = 50, seed: int = 0) -> Graph:
    """A random model as Keras initialises one: Glorot input kernels, orthogonal-scale recurrent kernels."""
    r = np.random.default_rng(seed)
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    attrs = {"units": units, "return_sequences": False, "go_backwards": False, "stateful": False,
             "zero_output_for_mask": False, "activation": "tanh"}
    weights = {"kernel": r.normal(0, np.sqrt(2 / (features + gates * units)), (features, gates * units)),
               "recurrent_kernel": r.normal(0, 1 / np.sqrt(units), (units, gates * units)),
               "bias": r.normal(0, 0.1, gates * units)}
    if kind == "lstm":
        attrs.update(recurrent_activation="sigmoid", output_activation="tanh", clip=0.0, input_forget=False)
    if kind == "gru":
        attrs.update(recurrent_activation="sigmoid", reset_after=True)
        weights["recurrent_bias"] = r.normal(0, 0.1, gates * units)
    layers = [Layer("x", "input", [], {"shape": [steps, features], "dtype": "float32"}),
              Layer("cell", kind, ["x"], attrs, {k: v.astype(np.float32) for k, v in weights.items()}),
              Layer("out", "dense", ["cell"], {"activation": "linear"},
                    {"kernel": r.normal(0, 0.3, (units, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)})]
    return Graph(layers, "out")


# --- weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_round_trip_within_half_a_step(per_channel):
    w = rng.normal(0, 0.3, (40, 24)).astype(np.float32)
    w[:, 5] = 0.0  # an all-zero channel
    values, scale = quantize_weight(w, "dense", per_channel)
    assert values.dtype == np.int8 and np.abs(values.astype(int)).max() <= 127
    assert scale.dtype == np.float16 and scale.shape == ((24,) if per_channel else (1,))
    back = values * scale.astype(np.float32)
    assert np.all(np.abs(back - w) <= scale.astype(np.float32) / 2 * (1 + 1e-6))
    if per_channel:
        assert np.all(values[:, 5] == 0) and scale[5] == 1.0
        assert np.abs(values).max(axis=0)[np.arange(24) != 5].min() >= 126  # each channel uses its range


def test_embedding_tables_get_a_scale_per_row():
    table = rng.normal(0, 1, (10, 6)).astype(np.float32)
    values, scale = quantize_weight(table, "embedding")
    assert scale.shape == (10, 1)
    np.testing.assert_allclose(values * scale.astype(np.float32), table, atol=float(scale.max()) / 2 * 1.001)


def test_tiny_weights_keep_a_positive_float16_scale():
    values, scale = quantize_weight(np.full((3, 2), 1e-9, np.float32), "dense")
    assert np.all(scale > 0) and np.all(np.isfinite(scale))
    assert np.abs(values).max() <= 127


# --- the int8 product: numba against numpy ---------------------------------------------------

@pytest.mark.parametrize("input_scale", [0.0, 0.01])
def test_row_quantization_is_bit_exact_between_numba_and_numpy(input_scale):
    a = rng.normal(0, 1, (9, 37)).astype(np.float32)
    a[3] = 0.0  # a zero row gets scale 1
    a[4, :] = 50.0  # saturates at 127 with the fixed scale
    q_ref, s_ref = quantize_rows(a, input_scale)
    assert q_ref.dtype == np.int8 and np.abs(q_ref.astype(int)).max() == ROW_QMAX
    q, s = np.empty((9, 37), np.int8), np.empty(9, np.float32)
    cpu.quantize_rows(a, input_scale, q, s)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


def test_packed_panels_hold_biased_weights_group_by_group():
    values = rng.integers(-127, 128, (7, 70)).astype(np.int8)
    panels = pack_panels(values)
    assert panels.dtype == np.uint8 and panels.shape == (2, -(-7 // GROUP), GROUP * PANEL)
    assert panels.ctypes.data % 64 == 0
    # panel 1, group 0: column 64 + c holds rows 0..GROUP-1 of that column, each + 128
    np.testing.assert_array_equal(panels[1, 0, 2 * GROUP:3 * GROUP], values[:GROUP, 66].astype(int) + 128)
    assert np.all(panels[1, :, 6 * GROUP:] == 0)  # pad columns (70.. of 128)
    np.testing.assert_array_equal(QuantizedMatrix.from_values(values, np.ones(70, np.float32)).values, values)


@pytest.mark.parametrize("rows, inputs, width, backwards",
                         [(1, 37, 20, False), (3, 128, 64, True), (6, 33, 9, False), (2, 512, 2048, False),
                          (2, 512, 2048, True)])
def test_int8_product_integer_part_is_exact(rows, inputs, width, backwards):
    a = rng.normal(0, 1, (rows, inputs)).astype(np.float32)
    values, scale = quantize_weight(rng.normal(0, 0.2, (inputs, width)).astype(np.float32), "dense")
    matrix = QuantizedMatrix.from_values(values, scale.astype(np.float32))
    np.testing.assert_array_equal(matrix.values, values)  # the packed panels unpack to the matrix
    z = np.zeros((rows, width), np.float32)
    padded = -(-width // PANEL) * PANEL
    # the pad columns of q may hold another product's values: the pad rows of the panels are zero
    scratch = (np.full((rows, -(-inputs // GROUP) * GROUP), 101, np.int8), np.empty((rows, padded), np.int32),
               np.empty(rows, np.float32))
    typical = max(rows - 1, 1)
    a[typical:, :3] = 40.0  # a row of outliers (when there are two rows or more): its other values round to few steps
    cpu.add_quantized_product(z, a, matrix, scratch, 0, width, backwards)
    q, row_scale = quantize_rows(a)
    np.testing.assert_array_equal(scratch[1][:, :width], q.astype(np.int64) @ values.astype(np.int64))  # int32 sums
    np.testing.assert_allclose(z, a @ matrix, rtol=1e-6, atol=1e-6)  # numpy's quantized product
    want = a[:typical] @ (values * scale.astype(np.float32))
    np.testing.assert_allclose(z[:typical], want, atol=0.02 * np.abs(want).max())


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch", [1, 5, 12])
def test_int8_recurrent_kernels_match_the_numpy_int8_reference(kind, batch):
    graph = quantize(recurrent_graph(kind, units=70, features=68, steps=7, seed=batch))
    x = rng.normal(0, 1, (batch, 7, 68)).astype(np.float32)
    got = Model(graph).predict(x)
    # a state value on a rounding boundary of its 8-bit quantization may round the other way (the float
    # parts before it differ in the last bit): one step in 127 of a row, a few 1e-4 at the output
    np.testing.assert_allclose(got, Model(graph, backend="reference").predict(x), atol=1e-3, rtol=1e-3)


def test_gru_without_reset_after_runs_int8():
    graph = recurrent_graph("gru", units=65, features=70, steps=6)
    graph.layers[1].attrs["reset_after"] = False
    quantized = quantize(graph)
    x = rng.normal(0, 1, (3, 6, 70)).astype(np.float32)
    np.testing.assert_allclose(Model(quantized).predict(x), Model(quantized, backend="reference").predict(x),
                               atol=2e-4, rtol=1e-3)
    assert compare(graph, quantized, x, "x").relative_rmse < 0.03  # 70 features quantized per row too


# --- accuracy and size -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, units", [("lstm", 32), ("lstm", 128), ("gru", 64), ("rnn", 48)])
def test_int8_stays_within_two_percent_of_float32(kind, units):
    graph = recurrent_graph(kind, units)
    x = rng.normal(0, 1, (16, 50, 8)).astype(np.float32)
    assert compare(graph, quantize(graph), x, "x").relative_rmse <= 0.02
    assert compare(graph, quantize(graph, per_channel=False), x, "x").relative_rmse <= 0.05
    assert compare(graph, quantize(graph, "float16"), x, "x").relative_rmse <= 1e-3


def test_small_matrices_and_biases_are_stored_as_float16_under_int8():
    graph = quantize(recurrent_graph("lstm", 32))  # kernel 8 x 128, recurrent 32 x 128, dense 32 x 3
    cell, out = graph.layer("cell").weights, graph.layer("out").weights
    assert cell["kernel"].dtype == cell["recurrent_kernel"].dtype == np.int8  # 1024 and 4096 weights
    assert cell["bias"].dtype == np.float16
    assert out["kernel"].dtype == np.float16 and "kernel_scale" not in out and out["kernel"].size < MIN_ELEMENTS
    assert quantize(recurrent_graph("lstm", 32), min_elements=0).layer("out").weights["kernel"].dtype == np.int8
    tiny = quantize(recurrent_graph("rnn", 8))  # nothing reaches 1024 weights: no int8, still marked quantized
    assert not any(w.dtype == np.int8 for layer in tiny.layers for w in layer.weights.values())
    with pytest.raises(UnsupportedError, match="already quantized"):
        quantize(tiny)


@pytest.mark.parametrize("scheme", ["int8", "float16"])
def test_weights_beyond_float16_range_stay_float32(scheme):
    graph = recurrent_graph("lstm", 32)
    graph.layer("cell").weights["bias"][0] = 1e6
    graph.layer("cell").weights["recurrent_kernel"][0, 0] = 1e7  # an int8 scale of it would pass 65504
    quantized = quantize(graph, scheme)
    assert quantized.layer("cell").weights["bias"].dtype == np.float32
    assert quantized.layer("cell").weights["recurrent_kernel"].dtype == np.float32
    assert quantized.layer("out").weights["bias"].dtype == np.float16
    if scheme == "int8":
        assert quantized.layer("cell").weights["kernel"].dtype == np.int8


def test_int8_file_is_at_most_27_percent_of_float32_from_lstm_128(tmp_path):
    graph = recurrent_graph("lstm", 128)
    float_bytes = artifact.write(graph, tmp_path / "f.elstm")
    assert artifact.write(quantize(graph), tmp_path / "q.elstm") <= 0.27 * float_bytes
    assert artifact.write(quantize(graph, "float16"), tmp_path / "h.elstm") <= 0.51 * float_bytes


@pytest.mark.parametrize("scheme", ["int8", "float16"])
def test_quantized_files_load_and_predict_like_the_graph(tmp_path, scheme):
    graph = quantize(recurrent_graph("gru", 40), scheme)
    artifact.write(graph, tmp_path / "m.elstm")
    x = rng.normal(0, 1, (2, 50, 8)).astype(np.float32)
    np.testing.assert_array_equal(edgelstm.load(tmp_path / "m.elstm").predict(x), Model(graph).predict(x))


def test_streaming_an_int8_model_matches_whole_sequences():
    model = Model(quantize(recurrent_graph("lstm", 70, steps=12)))  # int8 on the CPU from 64 rows
    x = rng.normal(0, 1, (2, 12, 8)).astype(np.float32)
    stream = model.stream(batch=2)
    last = [stream.step(x[:, t]) for t in range(12)][-1]
    np.testing.assert_allclose(last, model.predict(x), rtol=1e-5, atol=1e-6)


def test_mixed_embedding_bilstm_dense_model_end_to_end(tmp_path):
    x = np.load(MODELS / "text_classifier.input.npy")
    float_graph = edgelstm.import_model(MODELS / "text_classifier.keras")
    want = Model(float_graph).predict(x)
    # its matrices are all under MIN_ELEMENTS: by default they are stored as float16 ...
    graph = edgelstm.convert(MODELS / "text_classifier.keras", tmp_path / "t.elstm", quantize="int8", eval_data=x)
    assert {w.dtype for l in graph.layers for w in l.weights.values()} == {np.dtype(np.float16)}
    assert np.abs(edgelstm.load(tmp_path / "t.elstm").predict(x) - want).max() < 1e-3
    # ... and as int8 every kind of matrix, end to end through a file
    graph = quantize(float_graph, min_elements=0)
    kinds = {l.kind: sorted(str(w.dtype) for w in l.weights.values()) for l in graph.layers}
    assert "int8" in kinds["embedding"] and "int8" in kinds["lstm"] and "int8" in kinds["dense"]
    artifact.write(graph, tmp_path / "t8.elstm")
    got = edgelstm.load(tmp_path / "t8.elstm").predict(x)
    assert np.abs(got - want).max() < 0.01
    assert compare(float_graph, graph, x, "x").relative_rmse < 0.02


# --- calibration and refusals ----------------------------------------------------------------

def test_calibration_fixes_input_scales_and_keeps_accuracy():
    graph = recurrent_graph("lstm", 64, features=40)
    x = rng.normal(0, 1, (16, 50, 40)).astype(np.float32)
    quantized = quantize(graph, calibration=x)
    assert quantized.layer("cell").attrs["input_range"] == pytest.approx(np.abs(x).max(), rel=1e-6)
    assert "input_range" not in quantized.layer("out").attrs  # its 64 x 3 kernel stays float (float16)
    assert "input_range" in quantize(graph, calibration=x, min_elements=0).layer("out").attrs
    assert compare(graph, quantized, x, "x").relative_rmse <= 0.03


def test_files_with_a_12_bit_input_scale_read_as_an_input_range():
    graph = quantize(recurrent_graph("lstm", 64), calibration=rng.normal(0, 1, (4, 50, 8)).astype(np.float32))
    attrs = graph.layer("cell").attrs
    top = attrs.pop("input_range")
    attrs["input_scale"] = top / 2047  # as files written before 8-bit rows held it
    read = artifact.read(_unchecked_bytes(graph)).layer("cell")
    assert "input_scale" not in read.attrs and read.attrs["input_range"] == pytest.approx(top, rel=1e-12)
    assert kernel_weights(read, 0)["kernel"].input_scale == pytest.approx(np.float32(top) / 127, rel=1e-6)


def test_constant_zero_calibration_leaves_scales_dynamic():
    graph = recurrent_graph("lstm", 70, features=68)
    quantized = quantize(graph, calibration=np.zeros((2, 50, 68), np.float32))
    assert "input_range" not in quantized.layer("cell").attrs
    x = rng.normal(0, 1, (2, 50, 68)).astype(np.float32)
    assert np.all(np.isfinite(Model(quantized).predict(x)))


def test_nan_in_calibration_data_is_a_clear_error():
    x = rng.normal(0, 1, (2, 50, 8)).astype(np.float32)
    x[1, 3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        quantize(recurrent_graph("lstm", 16), calibration=x)


def test_quantizing_twice_or_by_an_unknown_scheme_is_refused():
    graph = recurrent_graph("rnn", 8)
    with pytest.raises(UnsupportedError, match="already quantized"):
        quantize(quantize(graph))
    with pytest.raises(UnsupportedError, match="int8, float16"):
        quantize(graph, "int4")


def test_int8_weights_need_valid_scales():
    graph = quantize(recurrent_graph("lstm", 8), min_elements=0)
    del graph.layers[1].weights["kernel_scale"]
    with pytest.raises(ShapeError, match="no 'kernel_scale'"):
        validate(graph)
    graph = quantize(recurrent_graph("lstm", 8), min_elements=0)
    graph.layers[1].weights["kernel_scale"] = -graph.layers[1].weights["kernel_scale"]
    with pytest.raises(FormatError, match="finite and positive"):
        artifact.read(_unchecked_bytes(graph))
    graph = recurrent_graph("lstm", 8)
    graph.layers[1].weights["bias"] = graph.layers[1].weights["bias"].astype(np.int8)
    with pytest.raises(ShapeError, match="expected float32 or float16$"):
        validate(graph)


def _unchecked_bytes(graph: Graph) -> bytes:
    """The bytes of a file holding `graph` as it is, written around `validate` (a hostile file)."""
    import edgelstm.artifact as module

    saved, module.validate = module.validate, lambda g: None
    try:
        return module.to_bytes(graph)
    finally:
        module.validate = saved


# --- the command line ------------------------------------------------------------------------

def test_cli_convert_quantize_inspect(tmp_path):
    runner = CliRunner()
    out = tmp_path / "s.elstm"
    result = runner.invoke(main, ["convert", str(MODELS / "sensor_forecast.keras"), "-o", str(out),
                                  "--quantize", "int8", "--eval", str(MODELS / "sensor_forecast.input.npy")])
    assert result.exit_code == 0, result.output
    assert "int8:" in result.output and "relative RMSE" in result.output and "evaluation data" in result.output
    result = runner.invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0 and "quantized: int8, per channel" in result.output
    assert "int8 scales" in result.output and " - " in result.output
    info = json.loads(runner.invoke(main, ["inspect", str(out), "--json"]).output)
    assert any("scale" in t for layer in info["layers"] for t in layer["tensors"])

    f16 = tmp_path / "h.elstm"
    result = runner.invoke(main, ["quantize", str(out), "-o", str(f16), "--quantize", "float16"])
    assert result.exit_code == 1 and "already quantized" in result.output
    float_file = tmp_path / "f.elstm"
    assert runner.invoke(main, ["convert", str(MODELS / "sensor_forecast.keras"), "-o", str(float_file)]).exit_code == 0
    result = runner.invoke(main, ["quantize", str(float_file), "-o", str(f16), "--quantize", "float16"])
    assert result.exit_code == 0, result.output
    assert "float16:" in result.output and "random inputs" in result.output


def test_cli_refuses_nan_calibration_without_writing(tmp_path):
    x = np.load(MODELS / "sensor_forecast.input.npy")
    x[0, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", x)
    out = tmp_path / "s.elstm"
    result = CliRunner().invoke(main, ["convert", str(MODELS / "sensor_forecast.keras"), "-o", str(out),
                                       "--quantize", "int8", "--calibration", str(tmp_path / "bad.npy")])
    assert result.exit_code == 1 and "NaN" in result.output and "Traceback" not in result.output
    assert not out.exists()


TASKS = json.loads((MODELS / "tasks" / "manifest.json").read_text())


def task_metric(entry: dict, output: np.ndarray, targets: np.ndarray) -> float:
    if entry["metric"] == "accuracy":
        return float(np.mean(output.argmax(axis=-1) == targets))
    return float(np.mean((output - targets) ** 2))


@pytest.mark.parametrize("calibrated", [False, True], ids=["dynamic", "calibrated"])
@pytest.mark.parametrize("entry", TASKS, ids=lambda e: e["name"])
def test_int8_keeps_the_task_metric_of_trained_models(entry, calibrated, tmp_path):
    """tools/make_task_models.py: MNIST-1D accuracy within 1 point, sunspot MSE within 5% of float32."""
    folder = MODELS / "tasks"
    x, targets = np.load(folder / entry["test_x"]), np.load(folder / entry["test_y"])
    edgelstm.convert(folder / entry["file"], tmp_path / "float.elstm")
    float_output = edgelstm.load(tmp_path / "float.elstm").predict(x)
    np.testing.assert_allclose(float_output, np.load(folder / entry["output"]), atol=1e-5)
    float_metric = task_metric(entry, float_output, targets)
    assert float_metric == pytest.approx(entry["keras_metric"], rel=1e-4)

    calibration = np.load(folder / entry["calibration"]) if calibrated else None
    edgelstm.convert(folder / entry["file"], tmp_path / "int8.elstm", quantize="int8", calibration=calibration)
    int8_metric = task_metric(entry, edgelstm.load(tmp_path / "int8.elstm").predict(x), targets)
    if entry["metric"] == "accuracy":
        assert int8_metric >= float_metric - 0.01
    else:
        assert int8_metric <= 1.05 * float_metric
