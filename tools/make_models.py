"""Generate the Keras test fixtures in ``models/``.

Builds a set of small Keras models covering every layer type and option the
edgelstm converters are expected to handle (plus a few that they must reject),
gives them deterministic non-zero random weights, and writes for each one:

* ``models/<name>.keras`` (Keras 3 format) or ``models/<name>.h5`` (legacy
  HDF5 format, written either by Keras 2 = ``tf_keras`` or by Keras 3),
* ``models/<name>.input.npy``  -- float32 (int32 token ids for Embedding models),
* ``models/<name>.output.npy`` -- ``model(x, training=False)`` as float32,
* ``models/manifest.json`` -- one entry per fixture::

    {"name", "file", "input", "output", "source", "streamable", "notes"}

  ``source`` is "keras3" (.keras), "keras2-h5" (tf_keras .h5) or "keras3-h5"
  (Keras 3 legacy .h5).  ``streamable`` is true when the model can be run one
  time step at a time carrying state: every layer is forward-only recurrent or
  time-local, so the output at step t (or the final output, for models that
  return only the last step) depends only on inputs up to t.  Negative fixtures
  have ``"expect_error"`` (a substring the converter's error should mention)
  and ``"input"``/``"output"`` set to null.

Requires TensorFlow, Keras 3, tf_keras and h5py, which edgelstm itself does
not depend on, so run it from a scratch environment, from the repo root::

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu tf-keras h5py
    /work/tfvenv/bin/python tools/make_models.py            # all fixtures
    /work/tfvenv/bin/python tools/make_models.py lstm_basic # only these (manifest updated)

Each saved model is reloaded with Keras and re-run; the script fails if the
reloaded model does not reproduce the saved output.
Every fixture is seeded from its own name, so the arrays are reproducible and
adding a fixture does not change the others.
"""

from __future__ import annotations

import os
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import absl.logging  # noqa: E402
from fixture_manifest import write_fixtures  # noqa: E402  (tools/ is on sys.path)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (legacy Keras 2)

OUT_DIR = Path(__file__).resolve().parent.parent / "models"

BATCH, STEPS, FEATURES = 3, 7, 4
VOCAB, EMBED_DIM = 50, 8
TOKEN_LENGTHS = (7, 4, 2)  # valid tokens per row; the rest is 0-padding
STATEFUL_BATCH = 2

FRAMEWORKS = {"keras3": keras, "keras3-h5": keras, "keras2-h5": tf_keras, "keras2-keras": tf_keras}
EXTENSIONS = {"keras3": ".keras", "keras3-h5": ".h5", "keras2-h5": ".h5", "keras2-keras": ".keras"}

HARD_SIGMOID_K2 = "Keras 2 hard_sigmoid = clip(0.2*x + 0.5, 0, 1)"
HARD_SIGMOID_K3 = "Keras 3 hard_sigmoid = clip(x/6 + 0.5, 0, 1)"


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def seq_input(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, (BATCH, STEPS, FEATURES)).astype(np.float32)


def token_input(rng: np.random.Generator) -> np.ndarray:
    """int32 token ids in [1, VOCAB) with trailing 0-padding per TOKEN_LENGTHS."""
    ids = rng.integers(1, VOCAB, (BATCH, STEPS)).astype(np.int32)
    for row, length in enumerate(TOKEN_LENGTHS):
        ids[row, length:] = 0
    return ids


def masked_seq_input(rng: np.random.Generator) -> np.ndarray:
    """Row 0: step 3 all-zero (masked mid-sequence); row 1: last 3 steps zero
    (end padding); row 2: step 0 zero (leading masked step) and last step zero."""
    x = seq_input(rng)
    x[0, 3] = 0.0
    x[1, 4:] = 0.0
    x[2, 0] = 0.0
    x[2, -1] = 0.0
    return x


def stateful_input(rng: np.random.Generator) -> np.ndarray:
    """Two consecutive chunks of STEPS steps for the fixed-batch stateful model."""
    return rng.normal(0.0, 1.0, (STATEFUL_BATCH, 2 * STEPS, FEATURES)).astype(np.float32)


# --------------------------------------------------------------------------
# Model construction helpers (K is the keras module: keras or tf_keras)
# --------------------------------------------------------------------------


def sequential(K, *layers, shape=(None, FEATURES), dtype="float32"):
    return K.Sequential([K.Input(shape=shape, dtype=dtype), *layers])


def functional(K, *layers, shape=(None, FEATURES), dtype="float32"):
    """Same as ``sequential`` but as a functional Model (different config layout)."""
    inp = K.Input(shape=shape, dtype=dtype)
    x = inp
    for layer in layers:
        x = layer(x)
    return K.Model(inp, x)


def rnn_then_dense(rnn: str, units_out: int = 2, functional_api=False, **rnn_kwargs):
    """Builder: one recurrent layer (LSTM/GRU/SimpleRNN) followed by a Dense."""

    def build(K):
        make = functional if functional_api else sequential
        return make(K, getattr(K.layers, rnn)(8, **rnn_kwargs), K.layers.Dense(units_out))

    return build


def bidirectional(rnn: str = "LSTM", merge_mode="concat", return_sequences=True):
    def build(K):
        layer = getattr(K.layers, rnn)(6, return_sequences=return_sequences)
        return sequential(K, K.layers.Bidirectional(layer, merge_mode=merge_mode), K.layers.Dense(3))

    return build


def dense_chain(*activations, activation_layer=None):
    """Dense layers (one per activation) on a sequence, optionally an Activation layer."""

    def build(K):
        layers = [K.layers.Dense(6, activation=a) for a in activations]
        if activation_layer:
            layers.append(K.layers.Activation(activation_layer))
        return sequential(K, *layers, K.layers.Dense(3))

    return build


def conv_then_lstm(**conv_kwargs):
    def build(K):
        return sequential(
            K,
            K.layers.Conv1D(6, 3, activation="relu", **conv_kwargs),
            K.layers.LSTM(8, return_sequences=True),
            K.layers.Dense(2),
        )

    return build


def pool_then_lstm(pool: str, **pool_kwargs):
    def build(K):
        return sequential(
            K,
            K.layers.Dense(5, activation="tanh"),
            getattr(K.layers, pool)(**pool_kwargs),
            K.layers.LSTM(8, return_sequences=True),
            K.layers.Dense(2),
        )

    return build


def global_pool(pool: str):
    def build(K):
        return sequential(
            K, K.layers.LSTM(8, return_sequences=True), getattr(K.layers, pool)(), K.layers.Dense(2)
        )

    return build


def embedding_model(rnn: str, mask_zero=True, return_sequences=False):
    def build(K):
        head = K.layers.TimeDistributed(K.layers.Dense(3)) if return_sequences else K.layers.Dense(3)
        return sequential(
            K,
            K.layers.Embedding(VOCAB, EMBED_DIM, mask_zero=mask_zero),
            getattr(K.layers, rnn)(8, return_sequences=return_sequences),
            head,
            shape=(None,),
            dtype="int32",
        )

    return build


def masking_model(rnn: str, return_sequences: bool):
    def build(K):
        return sequential(
            K,
            K.layers.Masking(mask_value=0.0),
            getattr(K.layers, rnn)(8, return_sequences=return_sequences),
            K.layers.Dense(2),
        )

    return build


def functional_masking_lstm(K):
    return functional(K, K.layers.Masking(mask_value=0.0), K.layers.LSTM(8, return_sequences=True), K.layers.Dense(2))


def functional_embedding_mask_stack(K):
    return functional(
        K,
        K.layers.Embedding(VOCAB, EMBED_DIM, mask_zero=True),
        K.layers.LSTM(8, return_sequences=True),
        K.layers.TimeDistributed(K.layers.Dense(4, activation="tanh")),
        K.layers.GRU(6),
        K.layers.Dense(3),
        shape=(None,),
        dtype="int32",
    )


def merge_partial_mask(K):
    """Add of a masked and an unmasked branch: Keras 2 keeps the mask (AND of the masks present),
    Keras 3 drops it (OR only when every input is masked)."""
    inp = K.Input(shape=(None, FEATURES))
    masked = K.layers.Dense(4)(K.layers.Masking(mask_value=0.0)(inp))
    plain = K.layers.Dense(4)(inp)
    return K.Model(inp, K.layers.LSTM(5)(K.layers.Add()([masked, plain])))


def concat_partial_mask(K):
    inp = K.Input(shape=(None, FEATURES))
    masked = K.layers.Dense(4)(K.layers.Masking(mask_value=0.0)(inp))
    plain = K.layers.Dense(3)(inp)
    return K.Model(inp, K.layers.GRU(5)(K.layers.Concatenate()([masked, plain])))


def residual_masked(K):
    """A residual connection around an LSTM on an Embedding mask: both Add inputs carry the mask."""
    inp = K.Input(shape=(None,), dtype="int32")
    emb = K.layers.Embedding(VOCAB, EMBED_DIM, mask_zero=True)(inp)
    res = K.layers.Add()([emb, K.layers.LSTM(EMBED_DIM, return_sequences=True)(emb)])
    return K.Model(inp, K.layers.Dense(2)(K.layers.LSTM(6)(res)))


def norm_after_last_step(K):
    """Normalisation on a [batch, features] tensor: tf_keras saves the resolved axis ([1])."""
    return sequential(K, K.layers.LSTM(8), K.layers.BatchNormalization(), K.layers.LayerNormalization(),
                      K.layers.Dense(2))


def hard_sigmoid_everywhere(K):
    return sequential(K, K.layers.LSTM(6, recurrent_activation="hard_sigmoid"),
                      K.layers.Dense(3, activation="hard_sigmoid"))


def neg_explicit_mask_after_conv(K):
    """Conv1D drops the Embedding's mask; passing it to the LSTM by hand is a custom mask."""
    inp = K.Input(shape=(None,), dtype="int32")
    conv = K.layers.Conv1D(4, 3, padding="same")(K.layers.Embedding(VOCAB, 4, mask_zero=True)(inp))
    return K.Model(inp, K.layers.LSTM(3)(conv, mask=K.ops.not_equal(inp, 0)))


def neg_flatten_channels_first(K):
    inp = K.Input(shape=(STEPS, FEATURES))
    flat = K.layers.Flatten(data_format="channels_first")(K.layers.LSTM(4, return_sequences=True)(inp))
    return K.Model(inp, K.layers.Dense(2)(flat))


# --------------------------------------------------------------------------
# Builders with a bespoke topology
# --------------------------------------------------------------------------


def lstm_seq_timedistributed(K):
    return sequential(K, K.layers.LSTM(8, return_sequences=True), K.layers.TimeDistributed(K.layers.Dense(3)))


def lstm_stacked(K):
    return sequential(K, K.layers.LSTM(12, return_sequences=True), K.layers.LSTM(8), K.layers.Dense(2))


def text_classifier(K):
    inp = K.Input(shape=(None,), dtype="int32", name="tokens")
    x = K.layers.Embedding(VOCAB, EMBED_DIM, mask_zero=True)(inp)
    x = K.layers.Bidirectional(K.layers.LSTM(8))(x)
    out = K.layers.Dense(4, activation="softmax")(x)
    return K.Model(inp, out)


def embedding_mask_gap(K):
    return sequential(
        K,
        K.layers.Embedding(VOCAB, EMBED_DIM, mask_zero=True),
        K.layers.LSTM(8, return_sequences=True),
        K.layers.GlobalAveragePooling1D(),
        K.layers.Dense(3),
        shape=(None,),
        dtype="int32",
    )


def dropout_noise(K):
    return sequential(
        K,
        K.layers.SpatialDropout1D(0.3),
        K.layers.GaussianNoise(0.5),
        K.layers.LSTM(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.2),
        K.layers.Dropout(0.5),
        K.layers.Dense(2),
    )


def lstm_autoencoder(K):
    return sequential(
        K,
        K.layers.LSTM(8),
        K.layers.RepeatVector(STEPS),
        K.layers.LSTM(8, return_sequences=True),
        K.layers.TimeDistributed(K.layers.Dense(FEATURES)),
        shape=(STEPS, FEATURES),
    )


def lstm_flatten(K):
    return sequential(
        K, K.layers.LSTM(6, return_sequences=True), K.layers.Flatten(), K.layers.Dense(2), shape=(STEPS, FEATURES)
    )


def batchnorm_lstm(K):
    return sequential(
        K,
        K.layers.Dense(6),
        K.layers.BatchNormalization(),
        K.layers.LSTM(8, return_sequences=True),
        K.layers.BatchNormalization(),
        K.layers.Dense(2),
    )


def layernorm_lstm(K):
    return sequential(
        K,
        K.layers.LayerNormalization(),
        K.layers.LSTM(8, return_sequences=True),
        K.layers.LayerNormalization(),
        K.layers.Dense(2),
    )


def functional_add(K):
    inp = K.Input(shape=(None, FEATURES))
    a = K.layers.LSTM(8, return_sequences=True)(inp)
    b = K.layers.Dense(8, activation="tanh")(inp)
    x = K.layers.Add()([a, b])
    x = K.layers.LSTM(6)(x)
    return K.Model(inp, K.layers.Dense(1)(x))


def functional_concat(K):
    inp = K.Input(shape=(None, FEATURES))
    a = K.layers.LSTM(8, return_sequences=True)(inp)
    b = K.layers.Dense(5, activation="relu")(inp)
    x = K.layers.Concatenate()([a, b, inp])
    x = K.layers.LSTM(6, return_sequences=True)(x)
    return K.Model(inp, K.layers.Dense(2)(x))


def functional_named_layers(K):
    """Layer names chosen to disagree with the keys of Keras 3's weight file,
    which are snake_case(class name) + per-class counter in model.layers order."""
    inp = K.Input(shape=(None, FEATURES), name="signal")
    x = K.layers.Dense(5, activation="tanh", name="dense_1")(inp)
    x = K.layers.LSTM(8, return_sequences=True, name="encoder")(x)
    x = K.layers.LSTM(6, name="lstm")(x)
    return K.Model(inp, K.layers.Dense(2, name="dense")(x), name="named")


def lstm_stateful(K):
    return K.Sequential(
        [
            K.Input(batch_shape=(STATEFUL_BATCH, STEPS, FEATURES)),
            K.layers.LSTM(8, return_sequences=True, stateful=True),
            K.layers.Dense(2),
        ]
    )


def keras3_h5_mixed(K):
    return sequential(K, K.layers.LSTM(8, return_sequences=True), K.layers.GRU(6), K.layers.Dense(2))


def neg_lambda(K):
    return sequential(K, K.layers.LSTM(8, return_sequences=True), K.layers.Lambda(lambda t: t * 2.0))


def neg_attention(K):
    inp = K.Input(shape=(None, FEATURES))
    x = K.layers.LSTM(8, return_sequences=True)(inp)
    x = K.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    return K.Model(inp, K.layers.Dense(2)(x))


# --------------------------------------------------------------------------
# Running models
# --------------------------------------------------------------------------


def to_numpy(y) -> np.ndarray:
    return np.asarray(y.numpy() if hasattr(y, "numpy") else keras.ops.convert_to_numpy(y), dtype=np.float32)


def run_once(model, x: np.ndarray) -> np.ndarray:
    return to_numpy(model(x, training=False))


def reset_states(model) -> None:
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


def run_stateful_halves(model, x: np.ndarray) -> np.ndarray:
    """Reset state, feed the first half of the time axis, then the second half
    (state carried over), and concatenate the outputs along time."""
    reset_states(model)
    half = x.shape[1] // 2
    parts = [run_once(model, x[:, :half]), run_once(model, x[:, half:])]
    reset_states(model)
    return np.concatenate(parts, axis=1)


def randomize_weights(model, rng: np.random.Generator) -> None:
    """Replace every float weight with non-zero random values (BN variance > 0,
    normalization scales around 1); non-float variables are kept."""
    new = []
    for w in model.weights:
        name = getattr(w, "path", None) or w.name
        value = np.asarray(w.numpy())
        shape = value.shape
        if not np.issubdtype(value.dtype, np.floating):
            new.append(value)
            continue
        if "moving_variance" in name:
            draw = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            draw = 1.0 + rng.normal(0.0, 0.2, shape)
        elif "beta" in name or "moving_mean" in name:
            draw = rng.normal(0.0, 0.3, shape)
        else:
            draw = rng.normal(0.0, 0.4, shape)
        new.append(draw.astype(value.dtype))
    model.set_weights(new)


# --------------------------------------------------------------------------
# The trained README example
# --------------------------------------------------------------------------

FORECAST_WINDOW = 50
FORECAST_EPOCHS = 12


def _multi_sine_windows(rng: np.random.Generator, n_points: int):
    t = np.arange(n_points, dtype=np.float64)
    series = (
        np.sin(2 * np.pi * t / 40)
        + 0.5 * np.sin(2 * np.pi * t / 13 + 1.0)
        + 0.25 * np.sin(2 * np.pi * t / 7 + 2.0)
        + rng.normal(0.0, 0.1, n_points)
    ).astype(np.float32)
    idx = np.arange(n_points - FORECAST_WINDOW)
    x = np.stack([series[i : i + FORECAST_WINDOW] for i in idx])[..., None]
    y = series[idx + FORECAST_WINDOW][:, None]
    return x, y


def sensor_forecast(K):
    return sequential(K, K.layers.LSTM(32), K.layers.Dense(1), shape=(FORECAST_WINDOW, 1))


def train_sensor_forecast(model, rng: np.random.Generator) -> np.ndarray:
    """Train next-step prediction on a noisy multi-sine series; return 8 held-out windows."""
    x, y = _multi_sine_windows(rng, 1600)
    x_train, y_train = x[:1200], y[:1200]
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x_train, y_train, epochs=FORECAST_EPOCHS, batch_size=32, shuffle=True, verbose=0)
    return x[1300:1540:30]


# --------------------------------------------------------------------------
# The fixture table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    name: str
    build: Callable  # build(K) -> model, K = keras or tf_keras
    notes: str
    streamable: bool = True
    source: str = "keras3"
    make_input: Callable[[np.random.Generator], np.ndarray] = seq_input
    run: Callable = run_once
    expect_error: str | None = None
    prepare: Callable | None = None  # prepare(model, rng) -> input; replaces randomization


BIDIR = "not streamable: the backward direction needs the whole sequence"
MASKED_RS = (
    "Keras 3 RNN default zero_output_for_mask=False: at masked steps the layer "
    "repeats the previous output (zeros before the first valid step) and carries the state unchanged"
)

FIXTURES = [
    # 1. basics
    Fixture("lstm_basic", rnn_then_dense("LSTM", 1), "LSTM(8) -> Dense(1), last step only"),
    Fixture("lstm_seq_timedistributed", lstm_seq_timedistributed, "LSTM(8, rs) -> TimeDistributed(Dense(3))"),
    Fixture("lstm_stacked", lstm_stacked, "LSTM(12, rs) -> LSTM(8) -> Dense(2)"),
    # 2. LSTM options
    Fixture(
        "lstm_go_backwards",
        rnn_then_dense("LSTM", return_sequences=True, go_backwards=True),
        "LSTM(8, go_backwards, rs) -> Dense(2); Keras does NOT flip the output back: "
        "output[:, t] is the state after consuming x[:, T-1], ..., x[:, T-1-t]",
        streamable=False,
    ),
    Fixture("lstm_no_bias", rnn_then_dense("LSTM", return_sequences=True, use_bias=False), "LSTM(8, use_bias=False, rs) -> Dense(2); only kernel and recurrent_kernel are stored"),
    Fixture(
        "lstm_relu_hard_sigmoid",
        rnn_then_dense("LSTM", return_sequences=True, activation="relu", recurrent_activation="hard_sigmoid"),
        f"LSTM(8, activation=relu, recurrent_activation=hard_sigmoid, rs) -> Dense(2); {HARD_SIGMOID_K3}",
    ),
    Fixture("lstm_linear", rnn_then_dense("LSTM", return_sequences=True, activation="linear"), "LSTM(8, activation=linear, rs) -> Dense(2)"),
    Fixture(
        "lstm_explicit_defaults",
        rnn_then_dense("LSTM", functional_api=True, activation="tanh", recurrent_activation="sigmoid"),
        "functional API; LSTM(8, activation=tanh, recurrent_activation=sigmoid) -> Dense(2)",
    ),
    Fixture("lstm_sigmoid", rnn_then_dense("LSTM", return_sequences=True, activation="sigmoid"), "LSTM(8, activation=sigmoid, rs) -> Dense(2)"),
    # 3. GRU
    Fixture("gru_reset_after_seq", rnn_then_dense("GRU", return_sequences=True), "GRU(8, reset_after=True (default), rs) -> Dense(2); bias shape [2, 3H]"),
    Fixture("gru_reset_after_last", rnn_then_dense("GRU", 1, functional_api=True), "functional API; GRU(8, reset_after=True) -> Dense(1)"),
    Fixture("gru_reset_after_false_seq", rnn_then_dense("GRU", return_sequences=True, reset_after=False), "GRU(8, reset_after=False, rs) -> Dense(2); bias shape [3H]"),
    Fixture("gru_reset_after_false_last", rnn_then_dense("GRU", 1, reset_after=False), "GRU(8, reset_after=False) -> Dense(1)"),
    Fixture("gru_go_backwards", rnn_then_dense("GRU", 1, go_backwards=True), "GRU(8, go_backwards) -> Dense(1): final state after consuming x in reverse", streamable=False),
    # 4. SimpleRNN
    Fixture("simplernn_tanh", rnn_then_dense("SimpleRNN", return_sequences=True), "SimpleRNN(8, tanh, rs) -> Dense(2)"),
    Fixture("simplernn_relu", rnn_then_dense("SimpleRNN", return_sequences=True, activation="relu"), "SimpleRNN(8, relu, rs) -> Dense(2)"),
    # 5. Bidirectional
    *[
        Fixture(f"bidir_lstm_{mode}", bidirectional("LSTM", mode), f"Bidirectional(LSTM(6, rs), merge_mode={mode}) -> Dense(3); {BIDIR}", streamable=False)
        for mode in ("concat", "sum", "mul", "ave")
    ],
    Fixture("bidir_gru_seq", bidirectional("GRU"), f"Bidirectional(GRU(6, rs)) concat -> Dense(3); {BIDIR}", streamable=False),
    Fixture(
        "bidir_lstm_last",
        bidirectional("LSTM", return_sequences=False),
        "Bidirectional(LSTM(6)) concat -> Dense(3): [forward final state, backward final state (after consuming x[0])]",
        streamable=False,
    ),
    # 6. Embedding
    Fixture(
        "text_classifier",
        text_classifier,
        f"functional; Embedding({VOCAB},{EMBED_DIM},mask_zero) -> Bidirectional(LSTM(8)) -> Dense(4, softmax); "
        f"int32 ids, trailing 0-padding, row lengths {TOKEN_LENGTHS}; masked steps are skipped by both directions",
        streamable=False,
        make_input=token_input,
    ),
    Fixture(
        "embedding_mask_lstm_seq",
        embedding_model("LSTM", return_sequences=True),
        f"Embedding(mask_zero) -> LSTM(8, rs) -> TimeDistributed(Dense(3)); row lengths {TOKEN_LENGTHS}; {MASKED_RS}",
        make_input=token_input,
    ),
    Fixture("embedding_mask_gru", embedding_model("GRU"), f"Embedding(mask_zero) -> GRU(8) -> Dense(3); output = state at the last valid token; row lengths {TOKEN_LENGTHS}", make_input=token_input),
    Fixture("embedding_nomask_lstm", embedding_model("LSTM", mask_zero=False), "Embedding(mask_zero=False) -> LSTM(8) -> Dense(3); id 0 is an ordinary token", make_input=token_input),
    Fixture(
        "embedding_mask_gap",
        embedding_mask_gap,
        "Embedding(mask_zero) -> LSTM(8, rs) -> GlobalAveragePooling1D -> Dense(3); the pooling averages valid steps only (mask-aware)",
        streamable=False,
        make_input=token_input,
    ),
    # 7. Masking
    Fixture(
        "masking_lstm_seq",
        masking_model("LSTM", True),
        f"Masking(0.0) -> LSTM(8, rs) -> Dense(2); row0 step 3 masked, row1 last 3 steps masked, row2 steps 0 and 6 masked; {MASKED_RS}",
        make_input=masked_seq_input,
    ),
    Fixture("masking_gru", masking_model("GRU", False), "Masking(0.0) -> GRU(8) -> Dense(2); same masked input as masking_lstm_seq", make_input=masked_seq_input),
    Fixture(
        "functional_masking_lstm",
        functional_masking_lstm,
        "functional API version of masking_lstm_seq (LSTM(8, rs) -> Dense(2)), same masked input; Keras 3 records the mask "
        "computation in config.json as op nodes NotEqual(x, 0.0) -> Any(axis=-1) passed to the LSTM as its 'mask' kwarg",
        make_input=masked_seq_input,
    ),
    Fixture(
        "functional_embedding_mask_stack",
        functional_embedding_mask_stack,
        f"functional API: Embedding(mask_zero) -> LSTM(8, rs) -> TimeDistributed(Dense(4, tanh)) -> GRU(6) -> Dense(3); "
        f"row lengths {TOKEN_LENGTHS}; config.json has a NotEqual(ids, 0) op node whose output is the 'mask' kwarg of "
        "LSTM, TimeDistributed and GRU",
        make_input=token_input,
    ),
    # 8. Dense activations
    Fixture("dense_act_a", dense_chain("linear", "relu", "sigmoid", "tanh", activation_layer="relu"), "Dense chain: linear, relu, sigmoid, tanh, Activation('relu'), Dense(3) linear"),
    Fixture("dense_act_b", dense_chain("softmax", "elu", "selu", "gelu", activation_layer="tanh"), "Dense chain: softmax, elu, selu, gelu (exact erf form, approximate=False), Activation('tanh'), Dense(3)"),
    Fixture("dense_act_c", dense_chain("swish", "silu", "softplus", "hard_sigmoid", activation_layer="sigmoid"), f"Dense chain: swish, silu, softplus, hard_sigmoid, Activation('sigmoid'), Dense(3); {HARD_SIGMOID_K3}; Keras 3 serializes 'swish' as 'silu'"),
    # 9. inference-time identities
    Fixture("dropout_noise", dropout_noise, "SpatialDropout1D -> GaussianNoise -> LSTM(8, rs, dropout, recurrent_dropout) -> Dropout -> Dense(2); all identity at inference"),
    # 10/11. fixed-length models
    Fixture("lstm_autoencoder", lstm_autoencoder, f"fixed T={STEPS}: LSTM(8) -> RepeatVector({STEPS}) -> LSTM(8, rs) -> TimeDistributed(Dense({FEATURES}))", streamable=False),
    Fixture("lstm_flatten", lstm_flatten, f"fixed T={STEPS}: LSTM(6, rs) -> Flatten -> Dense(2)", streamable=False),
    # 12. Conv1D and pooling
    Fixture("conv1d_valid", conv_then_lstm(padding="valid"), "Conv1D(6, 3, valid, relu) -> LSTM(8, rs) -> Dense(2); T_out = T-2; streamable only with a 2-step lag", streamable=False),
    Fixture("conv1d_same", conv_then_lstm(padding="same"), "Conv1D(6, 3, same, relu) -> LSTM(8, rs) -> Dense(2); looks 1 step ahead", streamable=False),
    Fixture("conv1d_causal", conv_then_lstm(padding="causal"), "Conv1D(6, 3, causal, relu) -> LSTM(8, rs) -> Dense(2); left zero-padding of 2"),
    Fixture("conv1d_causal_dilated", conv_then_lstm(padding="causal", dilation_rate=2), "Conv1D(6, 3, causal, dilation_rate=2) -> LSTM(8, rs) -> Dense(2); left zero-padding of 4"),
    Fixture("conv1d_valid_stride2", conv_then_lstm(padding="valid", strides=2), "Conv1D(6, 3, valid, strides=2) -> LSTM(8, rs) -> Dense(2); T=7 -> 3", streamable=False),
    Fixture("conv1d_same_stride2", conv_then_lstm(padding="same", strides=2), "Conv1D(6, 3, same, strides=2) -> LSTM(8, rs) -> Dense(2); T=7 -> 4 (TF 'SAME': pad total 2, 1 left 1 right)", streamable=False),
    Fixture("maxpool_valid", pool_then_lstm("MaxPooling1D", pool_size=2), "Dense(5) -> MaxPooling1D(2, valid) -> LSTM(8, rs) -> Dense(2); T=7 -> 3", streamable=False),
    Fixture("maxpool_same_stride", pool_then_lstm("MaxPooling1D", pool_size=3, strides=2, padding="same"), "Dense(5) -> MaxPooling1D(3, strides=2, same) -> LSTM(8, rs) -> Dense(2); T=7 -> 4", streamable=False),
    Fixture("avgpool_valid_stride1", pool_then_lstm("AveragePooling1D", pool_size=2, strides=1), "Dense(5) -> AveragePooling1D(2, strides=1, valid) -> LSTM(8, rs) -> Dense(2); T=7 -> 6", streamable=False),
    Fixture("avgpool_same", pool_then_lstm("AveragePooling1D", pool_size=2, padding="same"), "Dense(5) -> AveragePooling1D(2, same) -> LSTM(8, rs) -> Dense(2); T=7 -> 4; padded positions are excluded from the average (last window averages 1 value)", streamable=False),
    Fixture("global_avg_pool", global_pool("GlobalAveragePooling1D"), "LSTM(8, rs) -> GlobalAveragePooling1D -> Dense(2)", streamable=False),
    Fixture("global_max_pool", global_pool("GlobalMaxPooling1D"), "LSTM(8, rs) -> GlobalMaxPooling1D -> Dense(2)", streamable=False),
    # 13. normalization
    Fixture("batchnorm_lstm", batchnorm_lstm, "Dense(6) -> BatchNormalization -> LSTM(8, rs) -> BatchNormalization -> Dense(2); inference uses moving stats, epsilon=1e-3"),
    Fixture("layernorm_lstm", layernorm_lstm, "LayerNormalization -> LSTM(8, rs) -> LayerNormalization -> Dense(2); normalizes over the last axis, epsilon=1e-3"),
    # 14. functional DAGs
    Fixture("functional_add", functional_add, "functional DAG: input -> LSTM(8, rs) = a; input -> Dense(8, tanh) = b; Add([a, b]) -> LSTM(6) -> Dense(1)"),
    Fixture("functional_concat", functional_concat, "functional DAG: Concatenate([LSTM(8, rs)(in), Dense(5, relu)(in), in]) -> LSTM(6, rs) -> Dense(2)"),
    Fixture(
        "functional_named_layers",
        functional_named_layers,
        "functional: Dense(5, tanh, name='dense_1') -> LSTM(8, rs, name='encoder') -> LSTM(6, name='lstm') -> Dense(2, name='dense'); "
        "the .keras weight paths are layers/dense (= 'dense_1'), layers/lstm (= 'encoder'), layers/lstm_1 (= 'lstm'), "
        "layers/dense_1 (= 'dense'): keyed by class name and position, never by layer name",
    ),
    # 15. stateful
    Fixture(
        "lstm_stateful",
        lstm_stateful,
        f"stateful LSTM(8, rs) -> Dense(2), batch_shape=({STATEFUL_BATCH}, {STEPS}, {FEATURES}); input is [{STATEFUL_BATCH}, {2 * STEPS}, {FEATURES}]; "
        f"output = reset state, call on input[:, :{STEPS}], then on input[:, {STEPS}:] with state carried, concatenated along time "
        "(equal to one stateless pass over all 14 steps)",
        make_input=stateful_input,
        run=run_stateful_halves,
    ),
    # 16. legacy Keras 2 (tf_keras) .h5
    Fixture("k2_lstm_basic", rnn_then_dense("LSTM", 1), "tf_keras LSTM(8) -> Dense(1)", source="keras2-h5"),
    Fixture("k2_gru_reset_after_false", rnn_then_dense("GRU", return_sequences=True, reset_after=False), "tf_keras GRU(8, reset_after=False, rs) -> Dense(2); bias [3H]", source="keras2-h5"),
    Fixture("k2_gru_reset_after_true", rnn_then_dense("GRU", 1, reset_after=True), "tf_keras GRU(8, reset_after=True) -> Dense(1); bias [2, 3H]", source="keras2-h5"),
    Fixture("k2_bidir_lstm", bidirectional("LSTM"), f"tf_keras Bidirectional(LSTM(6, rs)) concat -> Dense(3); {BIDIR}", source="keras2-h5", streamable=False),
    Fixture(
        "k2_embedding_mask_lstm",
        embedding_model("LSTM"),
        f"tf_keras Embedding(mask_zero) -> LSTM(8) -> Dense(3); row lengths {TOKEN_LENGTHS}",
        source="keras2-h5",
        make_input=token_input,
    ),
    Fixture("k2_conv1d_lstm", conv_then_lstm(padding="causal"), "tf_keras Conv1D(6, 3, causal, relu) -> LSTM(8, rs) -> Dense(2)", source="keras2-h5"),
    Fixture(
        "k2_lstm_hard_sigmoid",
        rnn_then_dense("LSTM", return_sequences=True, recurrent_activation="hard_sigmoid"),
        f"tf_keras LSTM(8, recurrent_activation=hard_sigmoid, rs) -> Dense(2); {HARD_SIGMOID_K2} (differs from Keras 3!)",
        source="keras2-h5",
    ),
    Fixture(
        "k2_dense_activations",
        dense_chain("hard_sigmoid", "swish", "gelu", "tanh"),
        f"tf_keras Dense chain: hard_sigmoid, swish, gelu (exact erf), tanh, Dense(3); {HARD_SIGMOID_K2}; tf_keras serializes 'silu' as 'swish'",
        source="keras2-h5",
    ),
    Fixture("k2_functional_add", functional_add, "tf_keras functional DAG, same topology as functional_add (old-style inbound_nodes)", source="keras2-h5"),
    Fixture(
        "k2_text_classifier",
        text_classifier,
        f"tf_keras functional Embedding(mask_zero) -> Bidirectional(LSTM(8)) -> Dense(4, softmax); row lengths {TOKEN_LENGTHS}",
        source="keras2-h5",
        streamable=False,
        make_input=token_input,
    ),
    # 17. Keras 3 writing legacy .h5
    Fixture("k3h5_lstm_gru", keras3_h5_mixed, "Keras 3 model saved with model.save('x.h5'): LSTM(8, rs) -> GRU(6, reset_after=True) -> Dense(2)", source="keras3-h5"),
    # 17b. mask combination in merges, and dialect details (found in review)
    *[
        Fixture(f"{prefix}_{build.__name__}", build,
                f"{build.__doc__ or build.__name__} ({source})".replace("\n", " "),
                source=source, make_input=masked_seq_input)
        for build in (merge_partial_mask, concat_partial_mask)
        for prefix, source in (("k3", "keras3"), ("k2", "keras2-h5"))  # Keras 3 cannot reload its .h5 of these
    ],
    Fixture("residual_masked", residual_masked, "Embedding(mask_zero) -> Add([emb, LSTM(rs)(emb)]) -> LSTM -> Dense; "
            "Keras 3 records the merged mask as a LogicalOr op", make_input=token_input),
    Fixture("k2_norm_after_last_step", norm_after_last_step, "tf_keras LSTM(8) -> BatchNormalization -> "
            "LayerNormalization -> Dense(2); the normalisation axis is saved as [1]", source="keras2-h5"),
    Fixture("k2keras_hard_sigmoid", hard_sigmoid_everywhere, f"tf_keras model saved as .keras; {HARD_SIGMOID_K2}",
            source="keras2-keras"),
    # 18. negative fixtures
    Fixture("neg_explicit_mask_after_conv", neg_explicit_mask_after_conv, "an explicit mask= that differs from "
            "the one the input carries", expect_error="explicit mask", make_input=token_input, streamable=False),
    Fixture("neg_flatten_channels_first", neg_flatten_channels_first, "Flatten(data_format='channels_first')",
            expect_error="data_format", streamable=False),
    Fixture("neg_lambda", neg_lambda, "LSTM(8, rs) -> Lambda(x * 2): arbitrary Python code, must be rejected", expect_error="Lambda"),
    Fixture("neg_attention", neg_attention, "LSTM(8, rs) -> MultiHeadAttention(2 heads) -> Dense(2): unsupported layer", expect_error="MultiHeadAttention", streamable=False),
    Fixture("neg_dense_exponential", dense_chain("exponential"), "Dense(6, activation='exponential') -> Dense(3): unsupported activation", expect_error="exponential"),
    # 19. README example (trained, not randomized)
    Fixture(
        "sensor_forecast",
        sensor_forecast,
        f"README example: LSTM(32) -> Dense(1) trained {FORECAST_EPOCHS} epochs (held-out MSE ~0.02, noise floor 0.01) on next-step prediction of a noisy multi-sine; "
        f"input = 8 windows of {FORECAST_WINDOW} steps x 1 feature, output = predicted next value; "
        "saved after compile+fit, so model.weights.h5 also holds Adam optimizer variables (to be ignored)",
        prepare=train_sensor_forecast,
    ),
]


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------


def seed_for(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def make_fixture(fx: Fixture) -> dict:
    K = FRAMEWORKS[fx.source]
    seed = seed_for(fx.name)
    K.backend.clear_session()
    K.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    model = fx.build(K)
    if fx.prepare is not None:
        x = fx.prepare(model, rng)
    else:
        randomize_weights(model, rng)
        x = fx.make_input(rng)

    file = fx.name + EXTENSIONS[fx.source]
    model.save(OUT_DIR / file)  # saved before running: stateful states stay zero
    entry = {"name": fx.name, "file": file, "input": None, "output": None, "source": fx.source,
             "streamable": fx.streamable, "notes": fx.notes}
    if fx.expect_error is not None:
        entry["expect_error"] = fx.expect_error
        return entry

    y = fx.run(model, x)
    if not np.all(np.isfinite(y)):
        raise RuntimeError(f"{fx.name}: non-finite output")
    reloaded = K.models.load_model(OUT_DIR / file, compile=False)
    if not np.allclose(fx.run(reloaded, x), y, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"{fx.name}: reloaded model disagrees with the saved output")
    for suffix, array in (("input", x), ("output", y)):
        entry[suffix] = f"{fx.name}.{suffix}.npy"
        np.save(OUT_DIR / entry[suffix], array)
    return entry


def main(argv: list[str]) -> int:
    only = set(argv[1:])
    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity("error")
    warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy")
    write_fixtures(OUT_DIR, FIXTURES, only, make_fixture, (".keras", ".h5", ".npy", ".json"),
                   lambda fx, e: f"{fx.name:28s} {e['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
