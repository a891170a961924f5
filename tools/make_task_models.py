"""Train the two real-task models that measure what int8 quantization costs on a task metric.

* ``mnist1d_lstm``: sequence classifier, LSTM(128) -> Dense(10, softmax), on MNIST-1D
  (``mnist1d.data.make_dataset(get_dataset_args())``: procedural, seed 42, 4000 train / 1000
  test sequences of 40 steps, 10 classes; nothing is downloaded). Metric: accuracy.
* ``sunspots_lstm``: one-step forecaster, LSTM(64) -> Dense(1), on the yearly sunspot numbers
  1700-2008 that ship inside statsmodels (``sm.datasets.sunspots``). Windows of 24 years predict
  the next; values are divided by 100. Years up to 1949 train, later ones test. Metric: MSE (in
  those scaled units), beside a persistence baseline (next year = this year).

Writes into ``models/tasks/``: ``<name>.keras``, ``<name>.test_x.npy`` (float32 [N, T, 1]),
``<name>.test_y.npy`` (labels or targets), ``<name>.calibration.npy`` (256 training inputs),
``<name>.output.npy`` (the Keras model's float32 output on test_x), LiteRT twins for verify and
bench -- ``<name>_f32.tflite`` and ``<name>_dynint8.tflite`` (dynamic-range int8: int8 weights,
float activations, LiteRT's hybrid kernels), both Keras 3 exports with batch 1 and the test
length fixed (a WHILE loop) -- ``<name>_dynint8.output.npy`` (LiteRT's
int8 output on test_x, one row per call) and ``manifest.json``::

    {"name", "file", "task", "metric", "test_x", "test_y", "calibration", "output",
     "tflite_f32", "tflite_dynint8", "tflite_dynint8_output",
     "keras_metric", "litert_dynint8_metric", "litert_f32_max_abs_error_vs_keras", "baseline_metric",
     "notes"}

Needs TensorFlow (Keras 3), ai-edge-litert, mnist1d and statsmodels, none of which
edgelstm depends on::

    /work/tfvenv/bin/pip install tensorflow-cpu ai-edge-litert mnist1d statsmodels
    /work/tfvenv/bin/python tools/make_task_models.py

Training is seeded and op determinism is on, so a rerun with the same library versions gives
the same weights.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "models" / "tasks"
CALIBRATION_ROWS = 256
SUNSPOT_WINDOW, SUNSPOT_SCALE, SUNSPOT_LAST_TRAIN_YEAR = 24, 100.0, 1949


def mnist1d_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    def as_steps(x):
        return x.astype(np.float32)[:, :, None]
    return as_steps(data["x"]), data["y"].astype(np.int32), as_steps(data["x_test"]), data["y_test"].astype(np.int32)


def sunspot_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import statsmodels.api as sm

    frame = sm.datasets.sunspots.load_pandas().data
    series = frame["SUNACTIVITY"].to_numpy(np.float32) / SUNSPOT_SCALE
    years = frame["YEAR"].to_numpy().astype(int)
    starts = np.arange(len(series) - SUNSPOT_WINDOW)
    x = np.stack([series[s:s + SUNSPOT_WINDOW] for s in starts])[:, :, None]
    y = series[starts + SUNSPOT_WINDOW][:, None]
    train = years[starts + SUNSPOT_WINDOW] <= SUNSPOT_LAST_TRAIN_YEAR
    return x[train], y[train], x[~train], y[~train]


def train_classifier(x, y) -> keras.Model:
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(128), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=40, validation_split=0.1, verbose=2,
              callbacks=[keras.callbacks.EarlyStopping(patience=6, restore_best_weights=True)])
    return model


def train_forecaster(x, y) -> keras.Model:
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(64), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x, y, batch_size=16, epochs=150, validation_split=0.15, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(patience=20, restore_best_weights=True)])
    return model


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=-1) == labels))


def mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((predictions - targets) ** 2))


def litert_twin(model: keras.Model, steps: int, quantize: bool) -> bytes:
    """Keras 3 export with batch 1 and `steps` fixed (builtins-only conversion needs static shapes):
    a WHILE loop whose recurrent MatMul the dynamic-range quantizer makes a hybrid int8 op. (The
    fused LSTM op from tf_keras gets no int8 kernel: the default quantizer leaves its gate matrices
    float and the legacy one puts DEQUANTIZE in front of the float kernel.)"""
    with tempfile.TemporaryDirectory() as directory:
        model.export(directory, input_signature=[tf.TensorSpec((1, steps, 1), tf.float32)], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def run_litert(buf: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = Interpreter(model_content=buf)
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    rows = []
    for row in x:
        interpreter.reset_all_variables()  # the fused LSTM op keeps its state between calls
        interpreter.set_tensor(source, row[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(result)[0].copy())
    return np.stack(rows)


METRICS = {"accuracy": accuracy, "mse": mse}


def save(name: str, model: keras.Model, x_train, x_test, y_test, entry: dict) -> dict:
    rng = np.random.default_rng(0)
    calibration = x_train[np.sort(rng.choice(len(x_train), min(CALIBRATION_ROWS, len(x_train)), replace=False))]
    output = np.asarray(model(x_test, training=False), dtype=np.float32)
    uncompiled = keras.Sequential.from_config(model.get_config())  # no optimizer state: a third of the size
    uncompiled.set_weights(model.get_weights())
    uncompiled.save(OUT_DIR / f"{name}.keras")
    reloaded = keras.saving.load_model(OUT_DIR / f"{name}.keras")
    np.testing.assert_allclose(np.asarray(reloaded(x_test, training=False)), output, atol=1e-6)
    files = {"test_x": x_test, "test_y": y_test, "calibration": calibration, "output": output}
    for key, array in files.items():
        np.save(OUT_DIR / f"{name}.{key}.npy", array)
    twins = {"tflite_f32": f"{name}_f32.tflite", "tflite_dynint8": f"{name}_dynint8.tflite"}
    for key, file in list(twins.items()):
        buf = litert_twin(model, x_test.shape[1], quantize=key.endswith("int8"))
        (OUT_DIR / file).write_bytes(buf)
        litert = run_litert(buf, x_test)
        if key == "tflite_f32":
            np.testing.assert_allclose(litert, output, atol=1e-5)
            entry = {**entry, "litert_f32_max_abs_error_vs_keras": float(np.abs(litert - output).max())}
        else:
            np.save(OUT_DIR / f"{name}_dynint8.output.npy", litert)
            twins["tflite_dynint8_output"] = f"{name}_dynint8.output.npy"
            entry = {**entry, "litert_dynint8_metric": METRICS[entry["metric"]](litert, y_test)}
    return {"name": name, "file": f"{name}.keras", **{key: f"{name}.{key}.npy" for key in files}, **twins, **entry}


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()

    x, y, x_test, y_test = mnist1d_data()
    classifier = train_classifier(x, y)
    probabilities = np.asarray(classifier(x_test, training=False))
    entries = [save("mnist1d_lstm", classifier, x, x_test, y_test, {
        "task": "MNIST-1D sequence classification (10 classes, 40 steps)", "metric": "accuracy",
        "keras_metric": accuracy(probabilities, y_test), "baseline_metric": 0.1,
        "notes": "mnist1d make_dataset(get_dataset_args()), 4000 train / 1000 test; baseline: chance"})]

    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = sunspot_data()
    forecaster = train_forecaster(x, y)
    predictions = np.asarray(forecaster(x_test, training=False))
    entries.append(save("sunspots_lstm", forecaster, x, x_test, y_test, {
        "task": f"yearly sunspots, next year from the last {SUNSPOT_WINDOW} (values / {SUNSPOT_SCALE:g})",
        "metric": "mse", "keras_metric": mse(predictions, y_test),
        "baseline_metric": mse(x_test[:, -1], y_test),
        "notes": f"statsmodels sunspots 1700-2008; targets up to {SUNSPOT_LAST_TRAIN_YEAR} train, later test; "
                 "baseline: persistence"}))

    (OUT_DIR / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n")
    for e in entries:
        print(f"{e['name']}: {e['metric']} {e['keras_metric']:.4f}, LiteRT dynamic-range int8 "
              f"{e['litert_dynint8_metric']:.4f} (baseline {e['baseline_metric']:.4f})")


if __name__ == "__main__":
    main()
