"""Coverage-guided fuzzing of every model reader with atheris (libFuzzer), by hand.

The input's first byte picks the format (.elstm, .keras, .h5, .onnx), the rest is the file; the
corpus starts from the valid fixtures. The property is the one tests/test_fuzz.py checks: a model
that runs or an EdgeLSTMError, nothing else (an uncaught exception stops the run and saves the
input as crash-*). Needs ``pip install atheris`` (not a project dependency)::

    EDGELSTM_READ_TIMEOUT=5 python tools/fuzz_atheris.py -runs=20000 -max_len=300000
"""

from __future__ import annotations

import inspect
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgelstm  # noqa: E402  (imported uninstrumented: numba cannot compile atheris's branch probes)
from edgelstm import artifact, ir  # noqa: E402
from edgelstm import importers  # noqa: E402
from edgelstm.importers import keras, onnx  # noqa: E402
from tests.fuzzing import read_and_run  # noqa: E402


def instrument(module) -> None:
    """Coverage probes in the readers' own functions and methods (not in the numba kernels)."""
    for value in vars(module).values():
        members = vars(value).values() if inspect.isclass(value) and value.__module__ == module.__name__ else [value]
        for member in members:
            if inspect.isfunction(member) and member.__module__ == module.__name__:
                atheris.instrument_func(member)


for reader in (artifact, ir, importers, keras, onnx):
    instrument(reader)

SUFFIXES = (".elstm", ".keras", ".h5", ".onnx")
SEEDS = {".elstm": [artifact.to_bytes(edgelstm.import_model(ROOT / "models" / f"{n}.keras"))
                    for n in ("text_classifier", "lstm_autoencoder", "conv1d_causal_dilated")],
         ".keras": [(ROOT / "models" / "lstm_stacked.keras").read_bytes()],
         ".h5": [(ROOT / "models" / "k2_text_classifier.h5").read_bytes()],
         ".onnx": [(ROOT / "models" / "onnx" / "lstm_bidir2_seq_script.onnx").read_bytes()]}


def one_input(data: bytes) -> None:
    if data:
        read_and_run(data[1:], SUFFIXES[data[0] % len(SUFFIXES)])


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="edgelstm_fuzz_corpus_"))
    for index, suffix in enumerate(SUFFIXES):
        for k, seed in enumerate(SEEDS[suffix]):
            (corpus / f"{suffix[1:]}_{k}").write_bytes(bytes([index]) + seed)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
