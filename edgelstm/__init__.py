"""edgelstm: run trained LSTM/GRU models on edge devices with numpy and numba.

    import edgelstm
    edgelstm.convert("model.keras", "model.elstm")   # on the workstation (needs the `keras` extra)
    model = edgelstm.load("model.elstm")             # on the device: numpy + numba only
    y = model.predict(x)
    stream = model.stream(batch=1); y_t = stream.step(x_t)
"""

from __future__ import annotations

import os
from pathlib import Path

from . import artifact
from .errors import BackendError, EdgeLSTMError, FormatError, InputError, ShapeError, UnsupportedError
from .ir import Graph, Layer
from .runtime import Model, Stream

__version__ = "0.1.0"

__all__ = ["load", "convert", "import_model", "Model", "Stream", "Graph", "Layer", "EdgeLSTMError",
           "FormatError", "UnsupportedError", "ShapeError", "InputError", "BackendError", "__version__"]


def import_model(source: str | os.PathLike) -> Graph:
    """Read a model file of any supported kind (.elstm, .keras, .h5, .onnx) into the IR."""
    from .importers import import_file

    return import_file(source)


def convert(source: str | os.PathLike, destination: str | os.PathLike, quantize: str | None = None,
            per_channel: bool = True, calibration=None, eval_data=None) -> Graph:
    """Convert a Keras (.keras, .h5), ONNX or ``.elstm`` model to an ``.elstm`` file, written atomically.

    `quantize` (``int8`` or ``float16``) stores smaller weights; `calibration` (inputs like the
    model's) fixes int8 input scales, and the quantized outputs are measured against float32 on
    `eval_data`, else the calibration data, else random inputs. The measurement is kept in
    ``graph.metadata["quantization"]`` (and in the file).
    """
    graph = import_model(source)
    graph.metadata.setdefault("edgelstm_version", __version__)
    if quantize:
        from .passes import quantize as passes

        float_graph = graph
        graph = passes.quantize(float_graph, quantize, per_channel, calibration)
        if eval_data is not None:
            data, label = eval_data, "evaluation data"
        elif calibration is not None:
            data, label = calibration, "calibration data"
        else:
            data, label = passes.probe_input(float_graph), "random inputs"
        report = passes.compare(float_graph, graph, data, f"{label}, {len(data)} sequences")
        graph.metadata["quantization"].update(float32_bytes=len(artifact.to_bytes(float_graph)),
                                              error=report.as_dict())
    artifact.write(graph, destination)
    return graph


def distill(teacher: str | os.PathLike, data, destination: str | os.PathLike, targets=None, progress=None,
            **options):
    """Distil the teacher model file (.keras, .h5, .onnx or .elstm) into a small student written to
    `destination` (.elstm, atomically) and return the report (`passes.distill.Report`).

    `data` holds unlabelled transfer inputs shaped like the teacher's; `targets`, optional ground
    truth for them. `options` are the fields of `passes.distill.Options` (hidden, layers, cell,
    bidirectional, epochs, batch_size, lr, temperature, val_split, seed, augment, quantize, ...);
    `progress` is called with each `passes.distill.Epoch`.
    """
    from .passes import distill as passes

    destination = Path(destination)
    if destination.resolve() == Path(teacher).resolve():
        raise InputError("the student would overwrite the teacher; give another destination")
    if not destination.resolve().parent.is_dir():
        raise InputError(f"cannot write {destination}: its folder does not exist")
    settings = passes.Options(**options)
    settings.check()
    graph = import_model(teacher)
    student, report = passes.distill(graph, data, settings, targets, progress)
    student.metadata["edgelstm_version"] = __version__
    artifact.write(student, destination)
    return report


def load(source: str | os.PathLike | bytes, backend: str = "auto") -> Model:
    """Load a model for inference: an ``.elstm`` file (a path or the file's bytes), or any file
    `import_model` reads.

    `backend` is ``cpu`` (numba), ``cuda`` (an NVIDIA GPU, with the ``cuda`` extra), ``reference``
    (plain numpy) or ``auto``: ``cuda`` when a GPU is usable, else ``cpu``.
    """
    graph = artifact.read(source) if isinstance(source, (bytes, bytearray, memoryview)) else import_model(source)
    return Model(graph, backend=backend)
