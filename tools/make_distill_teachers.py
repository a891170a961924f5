"""Train the two teachers that distillation is measured on (bench/distill.py, tests).

* ``forecast_teacher``: two stacked LSTM(128) -> Dense(1), next-step prediction on noisy
  multi-sine series (three sines of random period 8-40 steps, amplitude 0.3-1, random phase, plus
  Gaussian noise of 0.1), from windows of 40 steps.
* ``text_teacher``: Embedding(200, 32, mask_zero) -> Bidirectional(LSTM(64)) -> Dense(4, softmax)
  on synthetic token sequences (5-30 tokens, zero-padded to 30): each class owns 12 keyword
  tokens; a sequence holds filler tokens, two to four keywords of its class and up to two of
  another class, so the teacher must weigh them.

Writes into ``models/distill/``: ``<name>.keras``; for the forecaster ``forecast.train_series.npy``
and ``forecast.test_series.npy`` (float32 [series, 400]: windows are cut from them), for the
text teacher ``text.transfer.npy`` and ``text.test.npy`` (uint8 token ids [N, 30]) and
``text.test_labels.npy``; ``manifest.json`` with each teacher's held-out metric.

Needs TensorFlow (Keras 3), which edgelstm does not depend on::

    /work/tfvenv/bin/python tools/make_distill_teachers.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "models" / "distill"
WINDOW, SERIES_LENGTH = 40, 400
VOCAB, TEXT_LENGTH, CLASSES, KEYWORDS = 200, 30, 4, 12


def multi_sine(count: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SERIES_LENGTH)[None, :, None]
    periods = rng.uniform(8, 40, (count, 1, 3))
    amplitudes = rng.uniform(0.3, 1.0, (count, 1, 3))
    phases = rng.uniform(0, 2 * np.pi, (count, 1, 3))
    clean = np.sum(amplitudes * np.sin(2 * np.pi * t / periods + phases), axis=-1)
    return (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)


def windows(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every window of WINDOW steps and the value after it (the same cut bench/distill.py makes)."""
    x = np.lib.stride_tricks.sliding_window_view(series[:, :-1], WINDOW, axis=1).reshape(-1, WINDOW)
    return x[:, :, None], series[:, WINDOW:].reshape(-1, 1)


def token_sequences(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Token 0 pads; 1..CLASSES*KEYWORDS are keywords (class k owns a block); the rest is filler."""
    ids = np.zeros((count, TEXT_LENGTH), np.uint8)
    labels = rng.integers(0, CLASSES, count)
    first_filler = 1 + CLASSES * KEYWORDS
    for row, label in enumerate(labels):
        length = rng.integers(5, TEXT_LENGTH + 1)
        tokens = rng.integers(first_filler, VOCAB, length)
        own = rng.integers(2, 5)
        other = rng.integers(0, 3)
        spots = rng.choice(length, min(length, own + other), replace=False)
        decoy = (label + rng.integers(1, CLASSES)) % CLASSES
        for k, spot in enumerate(spots):
            owner = label if k < own else decoy
            tokens[spot] = 1 + owner * KEYWORDS + rng.integers(0, KEYWORDS)
        ids[row, :length] = tokens
    return ids, labels.astype(np.int32)


def save(model: keras.Model, name: str) -> None:
    plain = keras.Sequential.from_config(model.get_config())  # no optimizer state in the file
    plain.set_weights(model.get_weights())
    plain.save(OUT_DIR / f"{name}.keras")


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)

    train_series, test_series = multi_sine(24, rng), multi_sine(8, rng)
    x, y = windows(train_series)
    forecaster = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(128, return_sequences=True),
                                   keras.layers.LSTM(128), keras.layers.Dense(1)])
    forecaster.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    forecaster.fit(x, y, batch_size=64, epochs=12, validation_split=0.1, verbose=2,
                   callbacks=[keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)])
    x_test, y_test = windows(test_series)
    forecast_mse = float(np.mean((np.asarray(forecaster(x_test, training=False)) - y_test) ** 2))
    save(forecaster, "forecast_teacher")
    np.save(OUT_DIR / "forecast.train_series.npy", train_series)
    np.save(OUT_DIR / "forecast.test_series.npy", test_series)

    ids, labels = token_sequences(6000, rng)
    test_ids, test_labels = token_sequences(1000, rng)
    classifier = keras.Sequential([keras.Input((None,), dtype="int32"),
                                   keras.layers.Embedding(VOCAB, 32, mask_zero=True),
                                   keras.layers.Bidirectional(keras.layers.LSTM(64)),
                                   keras.layers.Dense(CLASSES, activation="softmax")])
    classifier.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"])
    classifier.fit(ids.astype(np.int32), labels, batch_size=64, epochs=10, validation_split=0.1, verbose=2,
                   callbacks=[keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)])
    text_accuracy = float(np.mean(np.asarray(classifier(test_ids.astype(np.int32), training=False)).argmax(-1)
                                  == test_labels))
    save(classifier, "text_teacher")
    np.save(OUT_DIR / "text.transfer.npy", ids)  # labels are not shipped: distillation does not need them
    np.save(OUT_DIR / "text.test.npy", test_ids)
    np.save(OUT_DIR / "text.test_labels.npy", test_labels)

    manifest = [
        {"name": "forecast_teacher", "file": "forecast_teacher.keras", "metric": "mse", "window": WINDOW,
         "train_series": "forecast.train_series.npy", "test_series": "forecast.test_series.npy",
         "teacher_test_metric": forecast_mse,
         "notes": "2 x LSTM(128) -> Dense(1); next value after each 40-step window of noisy multi-sine series"},
        {"name": "text_teacher", "file": "text_teacher.keras", "metric": "accuracy",
         "transfer": "text.transfer.npy", "test": "text.test.npy", "test_labels": "text.test_labels.npy",
         "teacher_test_metric": text_accuracy,
         "notes": "Embedding(200, 32, mask_zero) -> BiLSTM(64) -> Dense(4, softmax); synthetic keyword sequences"},
    ]
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"forecast teacher test MSE {forecast_mse:.4f}; text teacher test accuracy {text_accuracy:.3f}")


if __name__ == "__main__":
    main()
