"""Build the benchmark grid's models from seeds: a Keras model per (cell, hidden) and its LiteRT
exports per input shape. Runs under TensorFlow (a scratch venv: pip install tensorflow-cpu tf-keras);
`run_grid.py` calls it, then measures in a process without TensorFlow.

    python bench/make_grid_models.py OUT_DIR SPEC.json

SPEC.json lists {"cell": "lstm"|"gru", "hidden": H, "features": F, "steps": T, "batch": B}.
For each it writes, unless present:
  {cell}_h{H}.keras                  Input(None, F) -> cell(H) -> Dense(1), weights from seed H
  {cell}_h{H}_t{T}_b{B}.while.tflite Keras 3 export with a fixed signature: a WHILE loop
  {cell}_h{H}_t{T}_b{B}.fused.tflite LSTM only: the tf_keras twin with a fixed batch, giving the
                                     fused UNIDIRECTIONAL_SEQUENCE_LSTM op
  {cell}_h{H}_t{T}_b1.while.dynint8.tflite
                                     batch 1 only: the WHILE export under dynamic-range quantization
                                     (Optimize.DEFAULT): int8 weights, LiteRT's hybrid int8 matmuls.
                                     The fused op gets no int8 kernel (the default quantizer leaves
                                     its gate matrices float), so it has no int8 twin here.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402


def keras_model(cell: str, hidden: int, features: int) -> keras.Model:
    keras.utils.set_random_seed(hidden)
    layer = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    return keras.Sequential([keras.Input((None, features)), layer(hidden), keras.layers.Dense(1)])


def tf_keras_twin(model: keras.Model, cell: str, hidden: int, features: int, steps: int, batch: int):
    layer = tf_keras.layers.LSTM if cell == "lstm" else tf_keras.layers.GRU
    twin = tf_keras.Sequential([tf_keras.Input((steps, features), batch_size=batch), layer(hidden),
                                tf_keras.layers.Dense(1)])
    twin.set_weights(model.get_weights())
    return twin


def builtins_only(converter, dynamic_range: bool = False) -> bytes:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if dynamic_range:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def main(out: Path, specs: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for spec in specs:
        cell, hidden, features, steps, batch = (spec[k] for k in ("cell", "hidden", "features", "steps", "batch"))
        stem = f"{cell}_h{hidden}"
        if (cell, hidden) not in models:
            models[cell, hidden] = keras_model(cell, hidden, features)
            if not (out / f"{stem}.keras").exists():
                models[cell, hidden].save(out / f"{stem}.keras")
        model = models[cell, hidden]
        shape = f"{stem}_t{steps}_b{batch}"
        targets = {out / f"{shape}.while.tflite": False}
        if batch == 1:
            targets[out / f"{shape}.while.dynint8.tflite"] = True
        if not all(target.exists() for target in targets):
            with tempfile.TemporaryDirectory() as tmp:
                model.export(tmp, input_signature=[tf.TensorSpec((batch, steps, features), tf.float32)], verbose=False)
                for target, dynamic_range in targets.items():
                    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
                    target.write_bytes(builtins_only(converter, dynamic_range))
        target = out / f"{shape}.fused.tflite"
        if cell == "lstm" and not target.exists():
            twin = tf_keras_twin(model, cell, hidden, features, steps, batch)
            target.write_bytes(builtins_only(tf.lite.TFLiteConverter.from_keras_model(twin)))
        print(shape, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
