"""Generate the ONNX test fixtures in ``models/onnx/``.

Small ONNX models for the edgelstm ONNX importer, from three producers:

* ``torch-script``: PyTorch modules exported with the TorchScript exporter
  (``torch.onnx.export(..., dynamo=False, opset_version=17)``),
* ``torch-dynamo``: the same modules (same weights, same input) exported with
  the dynamo exporter (``dynamo=True``, its default opset), which writes every
  initializer over 256 bytes to an external-data side file ``<name>.onnx.data``
  next to ``<name>.onnx`` (each export runs in a fresh process, see
  ``export_dynamo``),
* ``onnx-helper``: graphs built node by node with ``onnx.helper`` (opset 17),
  covering the LSTM/GRU/RNN attributes and the plain ops the importer accepts,

plus negatives the converter must refuse.  For each fixture it writes

* ``models/onnx/<name>.onnx`` (and ``<name>.onnx.data`` for dynamo exports),
* ``models/onnx/<name>.input.npy``  -- float32, or int64 token ids,
* ``models/onnx/<name>.output.npy`` -- ONNX Runtime's output on that input (float32),
* ``models/onnx/manifest.json`` -- one entry per fixture::

    {"name", "file", "input", "output", "producer", "opset", "notes", "batch_first"}

  ``producer`` is "torch-script", "torch-dynamo" or "onnx-helper".
  ``batch_first`` is true when the graph input ``x`` is [batch, time, ...] and
  false when it is time-major [time, batch, ...].  Negative fixtures have
  ``"expect_error"`` (a substring the converter's error must contain) and
  ``"input"``/``"output"`` null.

Every graph has one input ``x`` and one output ``y``.  Torch fixtures are also
run in PyTorch, on the saved input and on other batch sizes and lengths (to
prove the dynamic axes work); the script fails if ONNX Runtime and PyTorch
disagree by more than 1e-5.  Each fixture is seeded from its name (a torch model's two exports
from the model's name), so the files are reproducible and adding a fixture
does not change the others.

Needs PyTorch, onnx, onnxscript and onnxruntime, which edgelstm does not depend
on; run it from a scratch environment, from the repo root::

    python3 -m venv /work/onnxvenv
    /work/onnxvenv/bin/pip install torch==2.13.0 onnx onnxruntime onnxscript numpy
    /work/onnxvenv/bin/python tools/make_onnx_models.py                  # all fixtures
    /work/onnxvenv/bin/python tools/make_onnx_models.py lstm_last_dynamo # only these
                                                                         # (manifest updated)
"""

from __future__ import annotations

import contextlib
import io
import zipfile
import logging
import multiprocessing
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fixture_manifest import write_fixtures
import h5py
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import nn

OUT_DIR = Path(__file__).resolve().parent.parent / "models" / "onnx"

BATCH, STEPS, FEATURES = 3, 7, 4
VOCAB = 50
SEQ_LENS = (7, 4, 2)  # sequence_lens of the hand-built fixture
OPSET = 17  # hand-built graphs and the TorchScript exporter
INT64_MAX = np.iinfo(np.int64).max
ATOL = 1e-5


# --------------------------------------------------------------------------
# Fixtures: a builder gives an Artifact; main() saves, runs and checks it
# --------------------------------------------------------------------------


@dataclass
class Artifact:
    write: Callable[[Path], None]  # writes <name>.onnx (and any side file) at the path
    x: np.ndarray | None = None  # saved input (None for negatives)
    expected: np.ndarray | None = None  # PyTorch's output, checked against ONNX Runtime
    # More (input, PyTorch output) pairs with other batch sizes / lengths, checked, not saved:
    # they prove the dynamic axes really are dynamic.
    probes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # An equivalent graph that ONNX Runtime can run when it cannot run the fixture itself;
    # its output is then also checked against onnx's reference evaluator on the fixture.
    ort_twin: onnx.ModelProto | None = None


@dataclass
class Fixture:
    name: str
    producer: str
    build: Callable[[np.random.Generator], Artifact]
    notes: str
    seed_name: str = ""  # seed from this name instead of the fixture's (torch export pairs)
    batch_first: bool | None = None
    expect_error: str | None = None
    keras_model: str | None = None  # the Keras fixture this one is a twin of


def seed_for(name: str) -> int:
    return zlib.crc32(name.encode())


def seq_input(rng: np.random.Generator, batch_first: bool = True, batch: int = BATCH,
              steps: int = STEPS, features: int = FEATURES) -> np.ndarray:
    shape = (batch, steps, features) if batch_first else (steps, batch, features)
    return rng.normal(0.0, 1.0, shape).astype(np.float32)


def token_input(rng: np.random.Generator, batch: int = BATCH, steps: int = STEPS) -> np.ndarray:
    return rng.integers(0, VOCAB, (batch, steps)).astype(np.int64)


def proto_writer(model: onnx.ModelProto) -> Callable[[Path], None]:
    # Serialized directly: onnx.save would try to resolve external-data entries.
    return lambda path: path.write_bytes(model.SerializeToString())


# --------------------------------------------------------------------------
# PyTorch models, each exported twice (TorchScript and dynamo)
# --------------------------------------------------------------------------


class SeqModel(nn.Module):
    """[Embedding ->] recurrent layer [-> last step] [-> Linear] [-> (log_)softmax].

    ``h0``/``c0`` (optional) become registered buffers passed as the initial
    state; with ``expand_state`` they are [layers*dirs, 1, hidden] and expanded
    to the batch at run time, otherwise they fix the batch size.
    """

    def __init__(self, rnn: nn.RNNBase, head: nn.Module | None = None, *, last_step=False,
                 embedding: nn.Embedding | None = None, out_fn: Callable | None = None,
                 h0: torch.Tensor | None = None, c0: torch.Tensor | None = None,
                 expand_state=False):
        super().__init__()
        self.embedding, self.rnn, self.head = embedding, rnn, head
        self.last_step, self.out_fn, self.expand_state = last_step, out_fn, expand_state
        self.has_state, self.has_cell = h0 is not None, c0 is not None
        if h0 is not None:
            self.register_buffer("h0", h0)
        if c0 is not None:
            self.register_buffer("c0", c0)

    def _state(self, batch: int):
        states = [self.h0] + ([self.c0] if self.has_cell else [])
        if self.expand_state:
            # .contiguous(): torch.export cannot trace an LSTM (dynamic time) fed a
            # stride-0 expanded state
            states = [s.expand(-1, batch, -1).contiguous() for s in states]
        return tuple(states) if self.has_cell else states[0]

    def forward(self, x):
        if self.embedding is not None:
            x = self.embedding(x)
        batch_axis = 0 if self.rnn.batch_first else 1
        if self.has_state:
            out, _ = self.rnn(x, self._state(x.shape[batch_axis]))
        else:
            out, _ = self.rnn(x)
        if self.last_step:
            out = out[:, -1] if self.rnn.batch_first else out[-1]
        if self.head is not None:
            out = self.head(out)
        if self.out_fn is not None:
            out = self.out_fn(out, dim=-1)
        return out


class LastLayerState(nn.Module):
    """h_n[-1] of a 2-layer LSTM -> Linear: the usual PyTorch classifier head."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(FEATURES, 6, num_layers=2, batch_first=True), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[1][0][-1])


class LearnedSecondState(nn.Module):
    """A 2-layer LSTM whose second layer starts from a learned state: cat([zeros, h1.expand])."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 6, num_layers=2, batch_first=True)
        self.h1 = nn.Parameter(torch.rand(1, 1, 6) - 0.5)

    def forward(self, x):
        zeros = torch.zeros(1, x.shape[0], 6)
        h0 = torch.cat([zeros, self.h1.expand(1, x.shape[0], 6)], 0)
        return self.rnn(x, (h0, torch.zeros(2, x.shape[0], 6)))[0][:, -1]


class ResidualSigmoid(nn.Module):
    """sigmoid(y.unsqueeze(1)).squeeze(1) + y: the sigmoid must not fold into y's Linear."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(FEATURES, 6, batch_first=True), nn.Linear(6, 3)

    def forward(self, x):
        y = self.head(self.rnn(x)[0][:, -1])
        return torch.sigmoid(y.unsqueeze(1)).squeeze(1) + y


class SqueezedOutput(nn.Module):
    """A one-unit Linear whose output is squeezed to [batch]."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(FEATURES, 6, batch_first=True), nn.Linear(6, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1]).squeeze(-1)


@dataclass
class TorchModel:
    name: str
    make: Callable[[], SeqModel]  # called right after torch.manual_seed(seed)
    notes: str
    batch_first: bool = True
    tokens: bool = False
    fixed_batch: bool = False  # no dynamic batch axis (state buffers sized for BATCH)
    dynamo_fixed_time: bool = False  # the dynamo export has a fixed time axis (see dynamo_notes)
    dynamo_notes: str = ""
    dynamo_expect_error: str | None = None  # the dynamo export is one edgelstm must refuse
    keras_twin: str | None = None  # take weights and input from this Keras fixture in models/
    features: int = FEATURES

    def input(self, rng: np.random.Generator, batch: int = BATCH, steps: int = STEPS) -> np.ndarray:
        if self.tokens:
            return token_input(rng, batch, steps)
        return seq_input(rng, self.batch_first, batch, steps, self.features)

    def axes(self, dynamo: bool) -> dict[int, str]:
        """The dynamic axes of x."""
        axes = {0: "batch", 1: "time"} if self.batch_first else {0: "time", 1: "batch"}
        fixed = {"batch"} if self.fixed_batch else set()
        fixed |= {"time"} if dynamo and self.dynamo_fixed_time else set()
        return {a: n for a, n in axes.items() if n not in fixed}

    def probe_sizes(self, dynamo: bool) -> list[tuple[int, int]]:
        """(batch, time) sizes, other than the saved input's, that the export must accept."""
        batches = [BATCH] if self.fixed_batch else [1, 5]
        times = [STEPS] if dynamo and self.dynamo_fixed_time else [1, 12]
        return [(b, t) for b in batches for t in times]


def init_state(*shape: int) -> torch.Tensor:
    """Nonzero initial state in [-0.5, 0.5) (torch RNG, seeded per model)."""
    return torch.rand(shape) - 0.5


DYNAMO_RNN_UNROLLED = (
    "; the dynamo exporter unrolls nn.RNN over the example length into per-step "
    f"MatMul/Add/activation nodes (no RNN node), so its time axis is fixed at {STEPS}")

TORCH_MODELS = [
    TorchModel("hn_last_2layer", LastLayerState, "2-layer LSTM -> h_n[-1] -> Linear(6,2) (Concat of the "
               "layers' Y_h along the direction axis, then Gather -1)"),
    TorchModel("learned_h0_layer2", LearnedSecondState, "2-layer LSTM, layer 2 starts from a learned state: "
               "h0 = cat([zeros(1,B,6), h1.expand(1,B,6)]) -> out[:,-1]"),
    TorchModel("sigmoid_residual", ResidualSigmoid, "LSTM -> out[:,-1] -> Linear(6,3) = y -> "
               "sigmoid(y.unsqueeze(1)).squeeze(1) + y"),
    TorchModel("squeezed_output", SqueezedOutput, "LSTM -> out[:,-1] -> Linear(6,1) -> squeeze(-1): output [B]"),
    TorchModel("lstm_last", lambda: SeqModel(nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 1),
                                             last_step=True),
               "LSTM(4,8,batch_first) -> out[:,-1] -> Linear(8,1)"),
    TorchModel("sensor_forecast_twin", lambda: SeqModel(nn.LSTM(1, 32, batch_first=True), nn.Linear(32, 1),
                                                        last_step=True),
               "PyTorch twin of the shipped Keras example models/sensor_forecast.keras (LSTM(32) -> Dense(1)), "
               "its weights copied over; input [8, 50, 1]", keras_twin="sensor_forecast", features=1),
    TorchModel("gru_last", lambda: SeqModel(nn.GRU(4, 8, batch_first=True), nn.Linear(8, 1),
                                            last_step=True),
               "GRU(4,8,batch_first) -> out[:,-1] -> Linear(8,1)"),
    TorchModel("rnn_tanh_seq", lambda: SeqModel(nn.RNN(4, 8, nonlinearity="tanh", batch_first=True),
                                                nn.Linear(8, 2)),
               "RNN(4,8,tanh,batch_first) -> full sequence -> Linear(8,2) per step",
               dynamo_fixed_time=True, dynamo_notes=DYNAMO_RNN_UNROLLED, dynamo_expect_error="unrolled"),
    TorchModel("rnn_relu_seq", lambda: SeqModel(nn.RNN(4, 8, nonlinearity="relu", batch_first=True),
                                                nn.Linear(8, 2)),
               "RNN(4,8,relu,batch_first) -> full sequence -> Linear(8,2) per step",
               dynamo_fixed_time=True, dynamo_notes=DYNAMO_RNN_UNROLLED, dynamo_expect_error="unrolled"),
    TorchModel("lstm_bidir2_seq",
               lambda: SeqModel(nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
                                nn.Linear(12, 3)),
               "LSTM(4,6,num_layers=2,bidirectional,batch_first) -> full sequence [B,T,12] "
               "-> Linear(12,3) per step"),
    TorchModel("lstm_time_major_seq", lambda: SeqModel(nn.LSTM(4, 8)),
               "LSTM(4,8,batch_first=False): input [T,B,4], output the full sequence [T,B,8]",
               batch_first=False, dynamo_fixed_time=True,
               dynamo_notes=f"; time fixed at {STEPS} in the dynamo export: with a dynamic time "
               "axis the exporter declares x [time,batch,4] but bakes the example length into "
               f"the output Reshape (shape [{STEPS},-1,8]), which fails for any other length"),
    TorchModel("text_lstm_logsoftmax",
               lambda: SeqModel(nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 4), last_step=True,
                                embedding=nn.Embedding(VOCAB, 8), out_fn=torch.log_softmax),
               "Embedding(50,8) on int64 ids -> LSTM(8,8,batch_first) -> out[:,-1] "
               "-> Linear(8,4) -> log_softmax", tokens=True),
    TorchModel("text_lstm_softmax",
               lambda: SeqModel(nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 4), last_step=True,
                                embedding=nn.Embedding(VOCAB, 8), out_fn=torch.softmax),
               "Embedding(50,8) on int64 ids -> LSTM(8,8,batch_first) -> out[:,-1] "
               "-> Linear(8,4) -> softmax", tokens=True),
    TorchModel("lstm_h0_buffers",
               lambda: SeqModel(nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 2), last_step=True,
                                h0=init_state(1, BATCH, 8), c0=init_state(1, BATCH, 8)),
               f"LSTM(4,8,batch_first) with nonzero registered buffers h0/c0 [1,{BATCH},8] as "
               f"initial state -> out[:,-1] -> Linear(8,2); fixed batch {BATCH} (the buffers "
               "fix it), dynamic time", fixed_batch=True),
    TorchModel("lstm_h0_expanded",
               lambda: SeqModel(nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 2), last_step=True,
                                h0=init_state(1, 1, 8), c0=init_state(1, 1, 8), expand_state=True),
               "LSTM(4,8,batch_first) with nonzero registered buffers h0/c0 [1,1,8] expanded to "
               "the batch (h0.expand(-1, B, -1).contiguous()) as initial state -> out[:,-1] "
               "-> Linear(8,2)"),
    TorchModel("gru_bidir2_last",
               lambda: SeqModel(nn.GRU(4, 6, num_layers=2, bidirectional=True, batch_first=True),
                                nn.Linear(12, 3), last_step=True),
               "GRU(4,6,num_layers=2,bidirectional,batch_first) -> out[:,-1] (forward final "
               "state ++ backward output at the last step) -> Linear(12,3)"),
]


def instantiate(spec: TorchModel, rng: np.random.Generator) -> tuple[SeqModel, np.ndarray]:
    x = spec.input(rng)
    torch.manual_seed(int(rng.integers(2**31)))
    module = spec.make().eval()
    if spec.keras_twin:
        load_keras_weights(module, spec.keras_twin)
        x = np.load(OUT_DIR.parent / f"{spec.keras_twin}.input.npy")
    return module, x


def load_keras_weights(module: SeqModel, name: str) -> None:
    """Copy a Keras LSTM -> Dense fixture's weights (read from its .keras with h5py) into the
    torch twin. Both order LSTM gates i, f, g/c, o; Keras keeps one bias, torch two (b_hh = 0)."""
    with zipfile.ZipFile(OUT_DIR.parent / f"{name}.keras") as archive, \
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        kernel, recurrent, bias = (np.asarray(h5[f"layers/lstm/cell/vars/{i}"]) for i in range(3))
        dense_kernel, dense_bias = (np.asarray(h5[f"layers/dense/vars/{i}"]) for i in range(2))
    with torch.no_grad():
        module.rnn.weight_ih_l0.copy_(torch.from_numpy(kernel.T))
        module.rnn.weight_hh_l0.copy_(torch.from_numpy(recurrent.T))
        module.rnn.bias_ih_l0.copy_(torch.from_numpy(bias))
        module.rnn.bias_hh_l0.zero_()
        module.head.weight.copy_(torch.from_numpy(dense_kernel.T))
        module.head.bias.copy_(torch.from_numpy(dense_bias))


def torch_export(spec: TorchModel, dynamo: bool) -> Callable[[np.random.Generator], Artifact]:
    def build(rng: np.random.Generator) -> Artifact:
        module, x = instantiate(spec, rng)
        run = torch.no_grad()(lambda xs: module(torch.from_numpy(xs)).numpy())
        sizes = spec.probe_sizes(dynamo)
        probes = [(px, run(px)) for px in (spec.input(rng, b, t) for b, t in sizes)]
        if dynamo:
            write = lambda path: in_fresh_process(export_dynamo, spec.name, str(path))
        else:
            buffer = io.BytesIO()
            with quiet():
                torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=False,
                                  opset_version=OPSET, dynamic_axes={"x": spec.axes(dynamo=False)},
                                  input_names=["x"], output_names=["y"])
            write = lambda path: path.write_bytes(buffer.getvalue())
        return Artifact(write, x, run(x), probes)

    return build


def export_dynamo(spec_name: str, path: str) -> None:
    """Dynamo-export a TORCH_MODELS entry to ``path`` and ``path``.data.

    Run in a fresh process: with torch 2.13, each dynamo export of an LSTM after the first
    one in a process silently specializes the time axis to the example length.
    """
    silence_logs()
    spec = next(s for s in TORCH_MODELS if s.name == spec_name)
    module, x = instantiate(spec, np.random.default_rng(seed_for(spec.name)))
    dims = {axis: torch.export.Dim(name) for axis, name in spec.axes(dynamo=True).items()}
    with quiet():
        program = torch.onnx.export(module, (torch.from_numpy(x),), dynamo=True,
                                    dynamic_shapes=(dims,), verbose=False,
                                    input_names=["x"], output_names=["y"])
    program.save(path, external_data=True)


def in_fresh_process(target: Callable, *args) -> None:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{args} failed (exit code {process.exitcode})")


def silence_logs() -> None:
    for name in ("torch", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)


@contextlib.contextmanager
def quiet():
    """Silence the exporters' progress lines and deprecation warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def torch_fixtures() -> list[Fixture]:
    fixtures = []
    for spec in TORCH_MODELS:
        for suffix, producer, dynamo in (("script", "torch-script", False),
                                         ("dynamo", "torch-dynamo", True)):
            extra = spec.dynamo_notes if dynamo else ""
            expect_error = spec.dynamo_expect_error if dynamo else None
            fixtures.append(Fixture(f"{spec.name}_{suffix}", producer, torch_export(spec, dynamo),
                                    spec.notes + extra, seed_name=spec.name,
                                    batch_first=None if expect_error else spec.batch_first,
                                    expect_error=expect_error, keras_model=spec.keras_twin))
    return fixtures


# --------------------------------------------------------------------------
# Hand-built graphs (onnx.helper, opset 17)
# --------------------------------------------------------------------------

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def weights(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def make_model(nodes, inputs, outputs, initializers, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, producer_name="edgelstm-fixtures",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # opset 17's IR version, readable by older runtimes
    onnx.checker.check_model(model, full_check=True)
    return model


def x_info(dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info("x", elem, dims)


def y_info(dims):
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)


def recurrent(rng: np.random.Generator, op: str, x: str, out: list[str], *, input_size: int,
              hidden: int, direction: str = "forward", prefix: str = "rnn", batch: int = BATCH,
              peepholes=False, initial_state=False, seq_lens=None, weight_scale=0.5, **attrs):
    """One LSTM/GRU/RNN node with random W, R, B (and the optional inputs) as
    initializers.  ``out`` names the node outputs (Y, Y_h[, Y_c]); "" skips one."""
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op] * hidden
    inits = [init(f"{prefix}.W", weights(rng, dirs, gates, input_size, scale=weight_scale)),
             init(f"{prefix}.R", weights(rng, dirs, gates, hidden, scale=weight_scale)),
             init(f"{prefix}.B", weights(rng, dirs, 2 * gates))]
    inputs = [x] + [t.name for t in inits] + ["", "", "", ""][: 4 if op == "LSTM" else 2]
    if seq_lens is not None:
        inits.append(init(f"{prefix}.sequence_lens", np.array(seq_lens, np.int32)))
        inputs[4] = inits[-1].name
    if initial_state:
        for slot, state_name in ((5, "initial_h"), (6, "initial_c"))[: 2 if op == "LSTM" else 1]:
            inits.append(init(f"{prefix}.{state_name}", weights(rng, dirs, batch, hidden)))
            inputs[slot] = inits[-1].name
    if peepholes:
        inits.append(init(f"{prefix}.P", weights(rng, dirs, 3 * hidden)))
        inputs[7] = inits[-1].name
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node(op, inputs, out, name=f"{prefix}.{op}", hidden_size=hidden,
                            direction=direction, **attrs)
    return node, inits


def single_recurrent(op: str, *, output: str = "Y", layout: int = 0, hidden: int = 5,
                     fixed_batch=False, **kwargs):
    """Builder: x -> one LSTM/GRU/RNN node -> y = its output Y, Y_h or Y_c."""

    def build(rng: np.random.Generator) -> Artifact:
        batch = BATCH if fixed_batch else "batch"
        slot = {"Y": 0, "Y_h": 1, "Y_c": 2}[output]
        out = [""] * slot + ["y"]
        node, inits = recurrent(rng, op, "x", out, input_size=FEATURES, hidden=hidden,
                                layout=layout, **kwargs)
        dirs = 2 if kwargs.get("direction") == "bidirectional" else 1
        if layout == 0:
            x_dims = ["time", batch, FEATURES]
            y_dims = ["time", dirs, batch, hidden] if slot == 0 else [dirs, batch, hidden]
        else:
            x_dims = [batch, "time", FEATURES]
            y_dims = [batch, "time", dirs, hidden] if slot == 0 else [batch, dirs, hidden]
        graph_io = [x_info(x_dims)], [y_info(y_dims)]
        model = make_model([node], *graph_io, inits, f"{op.lower()}_fixture")
        twin = None
        if layout == 1:  # ONNX Runtime has no layout=1 kernel: run a time-major twin instead
            node_tm = onnx.NodeProto()
            node_tm.CopyFrom(node)
            node_tm.input[0], node_tm.output[slot] = "x_tm", "y_tm"
            next(a for a in node_tm.attribute if a.name == "layout").i = 0
            nodes = [helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]), node_tm,
                     helper.make_node("Transpose", ["y_tm"], ["y"],
                                      perm=[2, 0, 1, 3] if slot == 0 else [1, 0, 2])]
            twin = make_model(nodes, *graph_io, inits, f"{op.lower()}_layout0_twin")
        return Artifact(proto_writer(model), seq_input(rng, batch_first=layout == 1),
                        ort_twin=twin)

    return build


def ops_last_step(rng: np.random.Generator) -> Artifact:
    """What exporters do around a batch-first LSTM classifier head."""
    nodes, inits = [], []
    hidden, classes = 6, 3
    nodes.append(helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]))
    node, w = recurrent(rng, "LSTM", "x_tm", ["Y"], input_size=FEATURES, hidden=hidden)
    nodes.append(node)
    inits += w
    inits += [init("axes1", np.array([1], np.int64)), init("start", np.array([-1], np.int64)),
              init("end", np.array([INT64_MAX], np.int64)),
              init("fc.weight", weights(rng, classes, hidden)),
              init("fc.bias", weights(rng, classes))]
    nodes += [
        helper.make_node("Squeeze", ["Y", "axes1"], ["seq_tm"]),  # [T,B,H]
        helper.make_node("Transpose", ["seq_tm"], ["seq"], perm=[1, 0, 2]),  # [B,T,H]
        helper.make_node("Slice", ["seq", "start", "end", "axes1"], ["last3"]),  # [B,1,H]
        helper.make_node("Flatten", ["last3"], ["last"], axis=1),  # [B,H]
        helper.make_node("Gemm", ["last", "fc.weight", "fc.bias"], ["logits"], transB=1,
                         alpha=0.75, beta=1.5),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    model = make_model(nodes, [x_info(["batch", "time", FEATURES])], [y_info(["batch", classes])],
                       inits, "ops_last_step")
    return Artifact(proto_writer(model), seq_input(rng))


def ops_text(rng: np.random.Generator) -> Artifact:
    """Embedding lookup (Gather on int64 ids) -> LSTM -> last step by Gather -> MatMul+Add."""
    nodes, inits = [], []
    embed, hidden, classes = 8, 5, 4
    inits += [init("embedding", weights(rng, VOCAB, embed, scale=1.0)),
              init("dropout.ratio", np.array(0.25, np.float32)),
              init("axes1", np.array([1], np.int64)), init("last_index", np.array(-1, np.int64)),
              init("fc.weight_t", weights(rng, hidden, classes)),
              init("fc.bias", weights(rng, classes))]
    nodes += [
        helper.make_node("Gather", ["embedding", "x"], ["emb"], axis=0),  # [B,T,E]
        helper.make_node("Cast", ["emb"], ["emb_f"], to=TensorProto.FLOAT),
        helper.make_node("Dropout", ["emb_f", "dropout.ratio"], ["emb_d"]),  # inference: identity
        helper.make_node("Transpose", ["emb_d"], ["emb_tm"], perm=[1, 0, 2]),
    ]
    node, w = recurrent(rng, "LSTM", "emb_tm", ["Y"], input_size=embed, hidden=hidden)
    nodes.append(node)
    inits += w
    nodes += [
        helper.make_node("Squeeze", ["Y", "axes1"], ["seq_tm"]),  # [T,B,H]
        helper.make_node("Gather", ["seq_tm", "last_index"], ["last"], axis=0),  # [B,H]
        helper.make_node("MatMul", ["last", "fc.weight_t"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.bias"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["logp"], axis=-1),
        helper.make_node("Identity", ["logp"], ["y"]),
    ]
    model = make_model(nodes, [x_info(["batch", "time"], TensorProto.INT64)],
                       [y_info(["batch", classes])], inits, "ops_text")
    return Artifact(proto_writer(model), token_input(rng))


def ops_sequence(rng: np.random.Generator) -> Artifact:
    """Normalized input -> LSTM -> per-step gated head, sequence output."""
    nodes, inits = [], []
    hidden, half, out = 6, 3, 2
    inits += [init("norm.mean", weights(rng, FEATURES)),
              init("norm.std", rng.uniform(0.5, 2.0, FEATURES).astype(np.float32)),
              init("axes01", np.array([0, 1], np.int64)),
              init("merge_shape", np.array([0, 0, -1], np.int64)),
              init("split", np.array([half, half], np.int64)),
              init("fc.weight_t", weights(rng, 2 * half, out)), init("fc.bias", weights(rng, out))]
    nodes += [
        helper.make_node("Unsqueeze", ["norm.mean", "axes01"], ["mean3"]),  # [1,1,F]
        helper.make_node("Sub", ["x", "mean3"], ["centered"]),
        helper.make_node("Div", ["centered", "norm.std"], ["normed"]),
        helper.make_node("Transpose", ["normed"], ["x_tm"], perm=[1, 0, 2]),
    ]
    node, w = recurrent(rng, "LSTM", "x_tm", ["Y"], input_size=FEATURES, hidden=hidden)
    nodes.append(node)
    inits += w
    nodes += [
        helper.make_node("Transpose", ["Y"], ["Y_bt"], perm=[2, 0, 1, 3]),  # [B,T,1,H]
        helper.make_node("Reshape", ["Y_bt", "merge_shape"], ["seq"]),  # [B,T,H]
        helper.make_node("Split", ["seq", "split"], ["a", "b"], axis=-1),
        helper.make_node("Sigmoid", ["a"], ["gate"]),
        helper.make_node("Tanh", ["b"], ["cand"]),
        helper.make_node("Mul", ["gate", "cand"], ["gated"]),
        helper.make_node("Relu", ["a"], ["skip"]),
        helper.make_node("Concat", ["gated", "skip"], ["feat"], axis=-1),
        helper.make_node("MatMul", ["feat", "fc.weight_t"], ["mm"]),
        helper.make_node("Add", ["mm", "fc.bias"], ["y"]),
    ]
    model = make_model(nodes, [x_info(["batch", "time", FEATURES])],
                       [y_info(["batch", "time", out])], inits, "ops_sequence")
    return Artifact(proto_writer(model), seq_input(rng))


# --------------------------------------------------------------------------
# Negatives
# --------------------------------------------------------------------------


def neg_loop(rng: np.random.Generator) -> Artifact:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Tanh", ["v"], ["v_out"])], "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    inits = [init("trip_count", np.array(3, np.int64)), init("cond", np.array(True))]
    node = helper.make_node("Loop", ["trip_count", "cond", "x"], ["y"], name="loop", body=body)
    dims = ["batch", "time", FEATURES]
    model = make_model([node], [x_info(dims)], [y_info(dims)], inits, "neg_loop")
    return Artifact(proto_writer(model))


def neg_scan(rng: np.random.Generator) -> Artifact:
    """A recurrence unrolled as Scan over the time axis (running sum -> tanh)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x_t"], ["s_out"]),
         helper.make_node("Tanh", ["s_out"], ["y_t"])], "scan_body",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [BATCH, FEATURES]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [BATCH, FEATURES])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [BATCH, FEATURES]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [BATCH, FEATURES])])
    inits = [init("s0", weights(rng, BATCH, FEATURES))]
    node = helper.make_node("Scan", ["s0", "x"], ["s_final", "y"], name="scan", body=body,
                            num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])
    dims = [BATCH, "time", FEATURES]
    model = make_model([node], [x_info(dims)], [y_info(dims)], inits, "neg_scan")
    return Artifact(proto_writer(model))


def neg_if(rng: np.random.Generator) -> Artifact:
    def branch(op):
        return helper.make_graph([helper.make_node(op, ["x"], [f"{op.lower()}_out"])], op.lower(),
                                 [], [helper.make_tensor_value_info(f"{op.lower()}_out",
                                                                    TensorProto.FLOAT, None)])

    node = helper.make_node("If", ["flag"], ["y"], name="if", then_branch=branch("Relu"),
                            else_branch=branch("Tanh"))
    dims = ["batch", "time", FEATURES]
    model = make_model([node], [x_info(dims)], [y_info(dims)], [init("flag", np.array(True))],
                       "neg_if")
    return Artifact(proto_writer(model))


def neg_conv2d(rng: np.random.Generator) -> Artifact:
    """LSTM -> [B,1,T,H] -> Conv with a 3x3 kernel (a 4-D convolution)."""
    node, inits = recurrent(rng, "LSTM", "x", ["Y"], input_size=FEATURES, hidden=5)
    inits.append(init("conv.weight", weights(rng, 2, 1, 3, 3)))
    nodes = [node,
             helper.make_node("Transpose", ["Y"], ["img"], perm=[2, 1, 0, 3]),
             helper.make_node("Conv", ["img", "conv.weight"], ["y"], name="conv2d",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = make_model(nodes, [x_info(["time", "batch", FEATURES])],
                       [y_info(["batch", 2, "time", 5])], inits, "neg_conv2d")
    return Artifact(proto_writer(model))


def corrupt_truncated(rng: np.random.Generator) -> Artifact:
    data = single_recurrent("LSTM")(rng).write  # build a valid model, keep its bytes
    with tempfile.TemporaryDirectory() as tmp:
        data(Path(tmp) / "m.onnx")
        full = (Path(tmp) / "m.onnx").read_bytes()
    cut = full[: len(full) // 2]
    try:
        onnx.load_from_string(cut)
    except Exception:  # noqa: BLE001 -- any parse error is what we want
        return Artifact(lambda path: path.write_bytes(cut))
    raise RuntimeError("corrupt_truncated: the truncated bytes still parse")


def neg_missing_external_data(rng: np.random.Generator) -> Artifact:
    """lstm_last's dynamo export saved under this name, without its side file."""
    spec = next(s for s in TORCH_MODELS if s.name == "lstm_last")
    write_full = torch_export(spec, dynamo=True)(rng).write

    def write(path: Path):
        with tempfile.TemporaryDirectory() as tmp:
            write_full(Path(tmp) / "m.onnx")
            model = onnx.load(Path(tmp) / "m.onnx", load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = path.name + ".data"
        path.write_bytes(model.SerializeToString())

    return Artifact(write)


def neg_external_data_escape(rng: np.random.Generator) -> Artifact:
    """A valid-looking LSTM whose W points at external data outside the model's folder."""
    node, inits = recurrent(rng, "LSTM", "x", ["y"], input_size=FEATURES, hidden=5)
    model = make_model([node], [x_info(["time", "batch", FEATURES])],
                       [y_info(["time", 1, "batch", 5])], inits, "neg_external_data_escape")
    w = model.graph.initializer[0]
    size = len(w.raw_data)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../escape.data"), ("offset", "0"), ("length", str(size))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return Artifact(proto_writer(model))


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def helper_fixture(name, build, notes, batch_first=False, expect_error=None) -> Fixture:
    return Fixture(name, "onnx-helper", build, notes,
                   batch_first=None if expect_error else batch_first, expect_error=expect_error)


TM = "x [T,B,4] time-major, y = Y [T,dirs,B,H]"
TM_FIXED = f"x [T,{BATCH},4] time-major (fixed batch {BATCH}), y = Y [T,dirs,{BATCH},H]"
HARDSIG = {"activations": ["HardSigmoid", "Tanh", "Tanh"],
           "activation_alpha": [0.2], "activation_beta": [0.5]}

HELPER_FIXTURES = [
    helper_fixture("onnx_lstm_forward", single_recurrent("LSTM"), f"LSTM forward, H=5; {TM}"),
    helper_fixture("onnx_lstm_reverse", single_recurrent("LSTM", direction="reverse"),
                   f"LSTM direction=reverse, H=5; {TM}"),
    helper_fixture("onnx_lstm_bidirectional", single_recurrent("LSTM", direction="bidirectional"),
                   f"LSTM direction=bidirectional, H=5; {TM}"),
    helper_fixture("onnx_lstm_layout1", single_recurrent("LSTM", layout=1),
                   "LSTM layout=1, H=5; x [B,T,4] batch-first, y = Y [B,T,1,H]. ONNX Runtime "
                   "has no layout=1 kernel: the output is ONNX Runtime's on a layout=0 twin "
                   "(Transpose -> LSTM -> Transpose), checked against onnx.reference on this file",
                   batch_first=True),
    helper_fixture("onnx_lstm_clip", single_recurrent("LSTM", clip=0.5, weight_scale=1.0),
                   f"LSTM clip=0.5 (pre-activations clipped to [-0.5,0.5]), W/R in [-1,1]; {TM}"),
    helper_fixture("onnx_lstm_input_forget", single_recurrent("LSTM", input_forget=1),
                   f"LSTM input_forget=1 (coupled gates: f = 1 - i); {TM}"),
    helper_fixture("onnx_lstm_peepholes", single_recurrent("LSTM", peepholes=True),
                   f"LSTM with peepholes P [1,3H] (order i,o,f); {TM}"),
    helper_fixture("onnx_lstm_initial_state",
                   single_recurrent("LSTM", initial_state=True, fixed_batch=True),
                   f"LSTM with nonzero initial_h/initial_c constant initializers [1,{BATCH},5]; "
                   f"{TM_FIXED}"),
    helper_fixture("onnx_lstm_sequence_lens",
                   single_recurrent("LSTM", direction="bidirectional", seq_lens=SEQ_LENS,
                                    fixed_batch=True),
                   f"bidirectional LSTM with sequence_lens {list(SEQ_LENS)} as a constant int32 "
                   f"initializer; Y is 0 past each length, the reverse direction starts at "
                   f"step len-1; {TM_FIXED}"),
    helper_fixture("onnx_lstm_hardsigmoid", single_recurrent("LSTM", **HARDSIG),
                   "LSTM activations [HardSigmoid,Tanh,Tanh], activation_alpha [0.2], "
                   f"activation_beta [0.5] (HardSigmoid = clip(0.2x+0.5,0,1)); {TM}"),
    helper_fixture("onnx_lstm_relu",
                   single_recurrent("LSTM", activations=["Sigmoid", "Relu", "Relu"]),
                   f"LSTM activations [Sigmoid,Relu,Relu]; {TM}"),
    helper_fixture("onnx_lstm_sigmoid_h",
                   single_recurrent("LSTM", activations=["Sigmoid", "Tanh", "Sigmoid"]),
                   f"LSTM activations [Sigmoid,Tanh,Sigmoid] (h = o*sigmoid(c)); {TM}"),
    helper_fixture("onnx_lstm_y_h",
                   single_recurrent("LSTM", direction="bidirectional", output="Y_h"),
                   "bidirectional LSTM, H=5; x [T,B,4], y = Y_h [2,B,H] (Y not produced)"),
    helper_fixture("onnx_lstm_y_c", single_recurrent("LSTM", output="Y_c"),
                   "LSTM forward, H=5; x [T,B,4], y = Y_c [1,B,H] (Y and Y_h not produced): the cell "
                   "state is not an output edgelstm models give", expect_error="Y_c"),
    helper_fixture("onnx_gru_lbr0", single_recurrent("GRU", linear_before_reset=0),
                   f"GRU linear_before_reset=0 (reset applied before R*h); {TM}"),
    helper_fixture("onnx_gru_lbr1", single_recurrent("GRU", linear_before_reset=1),
                   f"GRU linear_before_reset=1 (PyTorch/Keras reset_after); {TM}"),
    helper_fixture("onnx_gru_bidirectional",
                   single_recurrent("GRU", direction="bidirectional", linear_before_reset=1),
                   f"GRU bidirectional, linear_before_reset=1; {TM}"),
    helper_fixture("onnx_rnn_relu", single_recurrent("RNN", activations=["Relu"]),
                   f"RNN activations [Relu]; {TM}"),
    helper_fixture("onnx_rnn_tanh", single_recurrent("RNN"),
                   f"RNN with the default activation (Tanh); {TM}"),
    helper_fixture("onnx_ops_last_step", ops_last_step,
                   "x [B,T,4] -> Transpose -> LSTM(H=6) -> Squeeze(axes [1]) -> Transpose -> "
                   "Slice(last step, axis 1) -> Flatten -> Gemm(transB=1, alpha=0.75, beta=1.5) "
                   "-> Softmax(axis -1)", batch_first=True),
    helper_fixture("onnx_ops_text", ops_text,
                   "int64 ids x [B,T] -> Gather(embedding [50,8], ids) -> Cast(float) -> "
                   "Dropout(ratio 0.25, inference) -> Transpose -> LSTM(H=5) -> Squeeze(axes [1]) "
                   "-> Gather(index -1, axis 0) -> MatMul -> Add -> LogSoftmax(axis -1) -> "
                   "Identity", batch_first=True),
    helper_fixture("onnx_ops_sequence", ops_sequence,
                   "x [B,T,4] -> Sub(Unsqueeze(mean)) -> Div(std) -> Transpose -> LSTM(H=6) -> "
                   "Transpose(perm 2,0,1,3) -> Reshape([0,0,-1]) -> Split(axis -1, [3,3]) -> "
                   "Mul(Sigmoid(a), Tanh(b)) ++ Relu(a) via Concat(axis -1) -> MatMul -> Add, "
                   "per step y [B,T,2]", batch_first=True),
    helper_fixture("neg_loop", neg_loop, "Loop (3 iterations of Tanh) on x; must be refused",
                   expect_error="Loop"),
    helper_fixture("neg_scan", neg_scan,
                   "recurrence as Scan over the time axis (running sum -> Tanh), fixed batch "
                   f"{BATCH}; must be refused", expect_error="Scan"),
    helper_fixture("neg_if", neg_if, "If on a constant condition (Relu / Tanh branches); must be "
                   "refused", expect_error="If"),
    helper_fixture("neg_conv2d", neg_conv2d,
                   "LSTM -> Transpose to [B,1,T,H] -> Conv 3x3 (4-D); the Conv must be refused",
                   expect_error="Conv"),
    helper_fixture("corrupt_truncated", corrupt_truncated,
                   "onnx_lstm_forward-like model cut after half its bytes (protobuf parse fails)",
                   expect_error="corrupt"),
    Fixture("neg_missing_external_data", "torch-dynamo", neg_missing_external_data,
            "lstm_last_dynamo.onnx (same weights) saved under this name without its side file: "
            "its initializers point at neg_missing_external_data.onnx.data, which does not exist",
            seed_name="lstm_last", expect_error="external data"),
    helper_fixture("neg_external_data_escape", neg_external_data_escape,
                   "LSTM whose W initializer is external data at location '../escape.data' "
                   "(outside the model's folder; the file does not exist); must be refused "
                   "without reading it", expect_error="external data"),
]

FIXTURES = torch_fixtures() + HELPER_FIXTURES


# --------------------------------------------------------------------------
# Saving and checking
# --------------------------------------------------------------------------


def fixture_files(name: str) -> list[Path]:
    suffixes = (".onnx", ".onnx.data", ".input.npy", ".output.npy")
    return [OUT_DIR / f"{name}{s}" for s in suffixes]


def run_ort(model: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], {"x": x})[0], dtype=np.float32)


def opset_of(path: Path) -> int | None:
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 -- the corrupt fixture
        return None
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


FILE_ERRORS = ("corrupt", "external data")  # negatives that no reader can load


def check_negative(fx: Fixture, path: Path) -> None:
    """Op-level negatives must be valid models that ONNX Runtime loads (refusing them is the
    converter's choice); file-level ones must fail to load there too."""
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        loaded = True
    except Exception:  # noqa: BLE001
        loaded = False
    if loaded == (fx.expect_error in FILE_ERRORS):
        state = "loads" if loaded else "does not load"
        raise RuntimeError(f"{fx.name}: negative fixture {state} in ONNX Runtime")


def op_types(path: Path) -> list[str]:
    """The graph's op types in order of first appearance."""
    nodes = onnx.load(path, load_external_data=False).graph.node
    return list(dict.fromkeys(n.op_type for n in nodes))


def external_data_note(name: str, path: Path) -> str:
    side = path.with_name(path.name + ".data")
    if not side.exists():
        raise RuntimeError(f"{name}: the dynamo export wrote no external data file")
    inits = onnx.load(path, load_external_data=False).graph.initializer
    external = [t.name for t in inits if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return (f"; {side.name} is written but empty: every initializer is <= 256 bytes, "
                "which the exporter keeps inline")
    return (f"; {len(external)} of {len(inits)} initializers ({', '.join(external)}) in external "
            f"data {side.name}, the others (<= 256 bytes) inline")


def make_fixture(fx: Fixture) -> dict:
    rng = np.random.default_rng(seed_for(fx.seed_name or fx.name))
    for stale in fixture_files(fx.name):
        stale.unlink(missing_ok=True)
    artifact = fx.build(rng)
    path = OUT_DIR / f"{fx.name}.onnx"
    artifact.write(path)
    entry = {"name": fx.name, "file": path.name, "input": None, "output": None,
             "producer": fx.producer, "opset": opset_of(path), "notes": fx.notes}
    if fx.expect_error is not None:
        entry["expect_error"] = fx.expect_error
        check_negative(fx, path)
        return entry
    entry["batch_first"] = fx.batch_first
    if fx.keras_model:
        entry["keras_model"] = fx.keras_model
    entry["notes"] += "; ops: " + ", ".join(op_types(path))
    if fx.producer == "torch-dynamo":
        entry["notes"] += external_data_note(fx.name, path)

    if artifact.ort_twin is None:
        y = run_ort(path, artifact.x)
    else:
        y = run_ort(artifact.ort_twin.SerializeToString(), artifact.x)
        reference = ReferenceEvaluator(str(path)).run(["y"], {"x": artifact.x})[0]
        if not np.allclose(y, reference, rtol=0, atol=ATOL):
            raise RuntimeError(f"{fx.name}: the ONNX Runtime twin disagrees with onnx.reference")
    if not np.all(np.isfinite(y)) or not np.any(y):
        raise RuntimeError(f"{fx.name}: ONNX Runtime output is non-finite or all zero")
    checks = [(artifact.x, y, artifact.expected)] if artifact.expected is not None else []
    checks += [(px, run_ort(path, px), py) for px, py in artifact.probes]
    for px, got, want in checks:
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=ATOL):
            diff = np.max(np.abs(got - want)) if got.shape == want.shape \
                else f"shape {got.shape}, PyTorch {want.shape}"
            raise RuntimeError(f"{fx.name}: ONNX Runtime disagrees with PyTorch on input "
                               f"{list(px.shape)} ({diff})")
    for suffix, array in (("input", artifact.x), ("output", y)):
        entry[suffix] = f"{fx.name}.{suffix}.npy"
        np.save(OUT_DIR / entry[suffix], array)
    return entry


# Plain ops the hand-built fixtures must cover between them (besides LSTM, GRU, RNN).
PLAIN_OPS = {"Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Softmax",
             "LogSoftmax", "Gather", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
             "Slice", "Concat", "Split", "Identity", "Cast", "Dropout"}


def check_op_coverage(entries: list[dict]) -> None:
    covered = {op for e in entries if e["producer"] == "onnx-helper" and e["input"]
               for op in op_types(OUT_DIR / e["file"])}
    if PLAIN_OPS - covered:
        raise RuntimeError(f"no hand-built fixture uses {sorted(PLAIN_OPS - covered)}")


def main(argv: list[str]) -> int:
    silence_logs()
    only = set(argv[1:])
    entries = write_fixtures(OUT_DIR, FIXTURES, only, make_fixture, (".onnx", ".onnx.data", ".npy", ".json"),
                             lambda fx, e: f"{fx.name:32s} {fx.producer:13s} opset {e['opset']}")
    if not only:
        check_op_coverage(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
