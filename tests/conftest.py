"""Shared test helpers: the fixture manifest and a small hand-built graph.

Without a GPU the CUDA tests run in Numba's CUDA simulator, which must be chosen before numba is
first imported: here, before anything imports edgelstm.
"""

import ctypes
import json
import os


def _gpu_driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_driver_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
from pathlib import Path

import numpy as np
import pytest

from edgelstm.ir import Graph, Layer

MODELS = Path(__file__).resolve().parent.parent / "models"


def manifest() -> list[dict]:
    return json.loads((MODELS / "manifest.json").read_text())


def small_graph(seed: int = 0, features: int = 3, units: int = 5) -> Graph:
    """Input -> LSTM(return_sequences) -> GRU -> Dense(2, softmax), random non-zero weights."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.normal(0, 0.4, shape).astype(np.float32)

    recurrent = {"return_sequences": True, "go_backwards": False, "stateful": False,
                 "zero_output_for_mask": False, "activation": "tanh", "recurrent_activation": "sigmoid"}
    return Graph(layers=[
        Layer("input", "input", [], {"shape": [None, features], "dtype": "float32"}),
        Layer("lstm", "lstm", ["input"], dict(recurrent, units=units, output_activation="tanh", clip=0.0,
                                              input_forget=False),
              {"kernel": r(features, 4 * units), "recurrent_kernel": r(units, 4 * units), "bias": r(4 * units)}),
        Layer("gru", "gru", ["lstm"], dict(recurrent, units=units, reset_after=True, return_sequences=False),
              {"kernel": r(units, 3 * units), "recurrent_kernel": r(units, 3 * units), "bias": r(3 * units),
               "recurrent_bias": r(3 * units)}),
        Layer("head", "dense", ["gru"], {"activation": "softmax"}, {"kernel": r(units, 2), "bias": r(2)}),
    ], output="head", metadata={"source": "tests"})


@pytest.fixture
def elstm_file(tmp_path):
    from edgelstm import artifact

    path = tmp_path / "small.elstm"
    artifact.write(small_graph(), path)
    return path
