"""The CUDA backend against the frameworks' outputs and the other backends.

On a machine without a GPU these run in Numba's CUDA simulator (tests/conftest.py switches it on
before numba is imported), on small shapes; on a GPU the same tests run the real kernels. Kernel
typing, which the simulator does not check, is checked by compiling every kernel to PTX for
Jetson's compute capabilities when numba-cuda's compiler is installed.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from numba import config

import edgelstm
from edgelstm.errors import BackendError
from edgelstm.passes.quantize import quantize
from edgelstm.runtime import Model, resolve_backend, select_backend

from .conftest import MODELS, manifest, small_graph
from .test_quantize import recurrent_graph

try:
    select_backend("cuda")
except BackendError as exc:
    pytest.skip(f"the cuda backend cannot run here: {exc}", allow_module_level=True)

SIMULATED = bool(config.ENABLE_CUDASIM)
ATOL = 1e-5
KERAS = [f for f in manifest() if not f.get("expect_error")]


@pytest.fixture(autouse=True, scope="module")
def _fast_simulator():
    """The simulator's block threads poll under the GIL: a short switch interval makes it 5-9x faster."""
    before = sys.getswitchinterval()
    if SIMULATED:
        sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)


def _onnx_fixtures():
    for folder in ("onnx", "tf2onnx"):
        path = MODELS / folder / "manifest.json"
        for f in json.loads(path.read_text()) if path.exists() else []:
            if not f.get("expect_error"):
                yield dict(f, folder=folder)


@pytest.mark.parametrize("fixture", KERAS, ids=lambda f: f["name"])
def test_keras_fixture_matches_framework_on_cuda(fixture):
    model = Model(edgelstm.import_model(MODELS / fixture["file"]), backend="cuda")
    x, expected = np.load(MODELS / fixture["input"]), np.load(MODELS / fixture["output"])
    if model.input_shape[0] is not None and x.shape[1] > model.input_shape[0]:  # stateful: fed in chunks
        got = model.stream(batch=x.shape[0]).step_many(x)
    else:
        rows = 1 if x.shape[1] > 20 else 2  # the simulator runs a thread per CUDA thread: keep it small
        got, expected = model.predict(x[:rows]), expected[:rows]
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", list(_onnx_fixtures()), ids=lambda f: f"{f['folder']}/{f['name']}")
def test_onnx_fixture_matches_cpu_on_cuda(fixture):
    """ONNX models bring the LSTM options Keras lacks (peepholes, clip, coupled gates, lengths)."""
    graph = edgelstm.import_model(MODELS / fixture["folder"] / fixture["file"])
    cpu = Model(graph, backend="cpu")
    x = np.load(MODELS / fixture["folder"] / fixture["input"])
    layout = graph.metadata.get("source_layout")
    if layout is not None:
        x = np.transpose(x, [layout["input"].index(a) for a in ("B", "T", "F")[:x.ndim]])
    if cpu.input_shape[0] is None and "length_mask" not in [layer.kind for layer in graph.layers]:
        x = x[:, :6]  # the batch stays: some models hold initial states or lengths per sequence
    np.testing.assert_allclose(Model(graph, backend="cuda").predict(x), cpu.predict(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind, reset_after, calibrated", [("lstm", None, False), ("lstm", None, True),
                                                          ("gru", True, False), ("gru", False, False),
                                                          ("rnn", None, False)])
def test_int8_models_match_the_cpu_int8_kernels(kind, reset_after, calibrated):
    """int8 products as on the CPU: rows quantized to 8 bits, int32 sums; only the float32
    activations differ (a last-bit difference may move one quantized value by one step)."""
    graph = recurrent_graph(kind, units=64, features=64, steps=3, seed=3)  # the CPU runs int8 from 64 inputs
    if reset_after is not None:
        graph.layers[1].attrs["reset_after"] = reset_after
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 64)).astype(np.float32)
    int8 = quantize(graph, "int8", calibration=x if calibrated else None)
    assert int8.layers[1].weights["recurrent_kernel"].dtype == np.int8
    cpu = Model(int8, backend="cpu").predict(x)
    np.testing.assert_allclose(Model(int8, backend="cuda").predict(x), cpu, atol=2e-4 * np.abs(cpu).max(), rtol=0)
    np.testing.assert_allclose(Model(quantize(graph, "float16"), backend="cuda").predict(x),
                               Model(quantize(graph, "float16"), backend="reference").predict(x), atol=ATOL)


def test_stream_and_chunks_keep_state_on_the_device():
    model = Model(edgelstm.import_model(MODELS / "conv1d_causal.keras"), backend="cuda")
    x = np.load(MODELS / "conv1d_causal.input.npy")[:2]
    whole = model.predict(x)
    stream = model.stream(batch=2)
    steps = [stream.step(x[:, t]) for t in range(3)]
    rest = stream.step_many(x[:, 3:])
    np.testing.assert_allclose(np.concatenate([np.stack(steps, axis=1), rest], axis=1), whole, atol=ATOL, rtol=0)
    stream.reset()
    np.testing.assert_allclose(stream.step_many(x[:, :4]), whole[:, :4], atol=ATOL, rtol=0)


def test_last_state_layer_streams_its_state_per_step():
    graph = small_graph()  # LSTM -> GRU (last state only) -> Dense
    x = np.random.default_rng(2).normal(size=(2, 4, 3)).astype(np.float32)
    chunk = Model(graph, backend="cuda").stream(batch=2).step_many(x)
    reference = Model(graph, backend="reference")
    for t in range(4):
        np.testing.assert_allclose(chunk[:, t], reference.predict(x[:, :t + 1]), atol=ATOL, rtol=0)


def test_unusable_gpu_names_the_cpu_backend(monkeypatch):
    from edgelstm.kernels import cuda

    monkeypatch.setattr(cuda, "unusable", lambda: "no CUDA GPU or driver was found")
    with pytest.raises(BackendError, match="no CUDA GPU.*backend 'cpu'"):
        Model(small_graph(), backend="cuda")


def test_a_layer_past_the_shared_memory_limit_is_refused_at_load():
    from edgelstm.kernels import cuda

    graph = recurrent_graph("rnn", units=cuda.MAX_UNITS + 1, features=1, steps=2)
    with pytest.raises(BackendError, match=f"layer 'cell' has {cuda.MAX_UNITS + 1} units.*up to {cuda.MAX_UNITS}"):
        Model(graph, backend="cuda")


@pytest.mark.skipif(not SIMULATED, reason="a fix to the simulator")
def test_the_threads_of_a_simulated_block_share_one_array_per_line():
    """Unlocked, about one block in eight got two arrays for one line (16 threads released together)."""
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    for _ in range(100):
        shared, release, got = FakeCUDAShared(0), threading.Barrier(16), [None] * 16

        def allocate(tid):
            release.wait()
            first = shared.array(8, np.float32)
            second = shared.array(8, np.float32)  # another line: another array
            got[tid] = first, second

        threads = [threading.Thread(target=allocate, args=(tid,)) for tid in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(first) for first, _ in got}) == 1 and len({id(second) for _, second in got}) == 1
        assert got[0][0] is not got[0][1]


@pytest.mark.skipif(not SIMULATED, reason="with a GPU, auto picks cuda")
def test_auto_never_picks_the_simulator():
    assert resolve_backend("auto") == "cpu"


_PTX_CHECK = r"""
import sys, types
import numpy as np
from numba import cuda
from numba.cuda import dispatcher
# device functions ask for the current device's capability; there is none on a CI machine
cc = tuple(int(v) for v in sys.argv[1].split("."))
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
from edgelstm.kernels import cuda as k

f32, b1, i64 = "float32", "boolean", "int64"
A = lambda t, n: f"{t}[{', '.join([':'] * n)}]"
q8 = "int8[:, :]"
kernels = {
    "_project": (k._project, [A(f32, 2), A(f32, 2), A(f32, 1), "int64", A(f32, 2)]),
    "_project_int8": (k._project_int8, [A(f32, 2), q8, A(f32, 1), f32, A(f32, 1), "int64", A(f32, 2)]),
    "_softmax_rows": (k._softmax_rows, [A(f32, 2), b1]),
    "_activation": (k._activation, [A(f32, 2), "int64", A(f32, 2)]),
    "_embedding": (k._embedding, [A(i64, 2), A(f32, 2), A(f32, 3)]),
    "_masking": (k._masking, [A(f32, 3), f32, A(f32, 3), A(b1, 2)]),
    "_merge_into": (k._merge_into, [A(f32, 1), A(f32, 1), "int64"]),
    "_scale": (k._scale, [A(f32, 1), f32]),
    "_conv1d": (k._conv1d, [A(f32, 3), A(f32, 3), A(f32, 1)] + ["int64"] * 4 + [A(f32, 3)]),
    "_pool1d": (k._pool1d, [A(f32, 3), b1, "int64", "int64", "int64", A(f32, 3)]),
    "_global_pool1d": (k._global_pool1d, [A(f32, 3), A(b1, 2), b1, A(f32, 2)]),
    "_batch_norm": (k._batch_norm, [A(f32, 2), A(f32, 1), A(f32, 1), A(f32, 2)]),
    "_layer_norm": (k._layer_norm, [A(f32, 2), A(f32, 1), A(f32, 1), f32, A(f32, 2)]),
    "_copy_steps": (k._copy_steps, [A(f32, 3), "int64", "int64", A(f32, 3)]),
    "_copy_columns": (k._copy_columns, [A(f32, 2), "int64", A(f32, 2)]),
    "_join_steps": (k._join_steps, [A(f32, 3), A(f32, 3), A(f32, 3)]),
    "_nonzero": (k._nonzero, [A(i64, 1), A(b1, 1)]),
    "_combine": (k._combine, [A(b1, 1), A(b1, 1), b1, A(b1, 1)]),
    "_fill": (k._fill, [A(f32, 1), f32]),
}
state = [A(f32, 2), A(f32, 2), A(f32, 3)]
for cell, general, reset_after, quantized in [(k._LSTM, False, False, False), (k._LSTM, True, False, False),
                                              (k._LSTM, False, False, True), (k._GRU, False, True, False),
                                              (k._GRU, False, False, True), (k._RNN, False, False, False)]:
    run = k._recurrence(cell, 64, quantized, general, reset_after, 3, 2, 3, general, 64)
    u = q8 if quantized else A(f32, 2)
    kernels[f"recurrence {cell} {general} {reset_after} {quantized}"] = (
        run, [A(f32, 3), A(b1, 2), u, A(f32, 1), A(f32, 1), A(f32, 1), f32, b1, b1, b1] + state)
import os, re, subprocess, tempfile
import nvidia.cuda_nvcc
ptxas = os.path.join(nvidia.cuda_nvcc.__path__[0], "bin", "ptxas")
bad = []
for name, (kernel, sig) in kernels.items():
    ptx, _ = cuda.compile_ptx(kernel.py_func, "void(" + ", ".join(sig) + ")", cc=cc)
    if ".f64" in ptx:
        bad.append(f"{name}: float64")
    if name.startswith("recurrence"):  # its block size must fit the register file
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "k.ptx")
            open(source, "w").write(ptx)
            info = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{cc[0]}{cc[1]}", source, "-o", source + ".cubin"],
                                  capture_output=True, text=True).stderr
        registers = int(re.search(r"Used (\d+) registers", info).group(1))
        if registers * k.MAX_THREADS > 65536 or "spill stores" in info and " 0 bytes spill stores" not in info:
            bad.append(f"{name}: {registers} registers x {k.MAX_THREADS} threads, {info}")
print("problems:", bad)
sys.exit(1 if bad else 0)
"""


def _ptx_compiler() -> str | None:
    """Why kernels cannot be compiled to PTX here, or None."""
    try:
        import numba_cuda  # noqa: F401
        from cuda import pathfinder
        pathfinder.load_nvidia_dynamic_lib("nvvm")
    except Exception as exc:  # no numba-cuda, or no NVVM wheel
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.skipif(_ptx_compiler() is not None, reason="numba-cuda's NVVM compiler is not installed")
def test_every_kernel_compiles_for_jetson_in_float32_only():
    """The simulator runs kernels as Python; the GPU compiler types them (here for Orin, sm_87).
    Any float64 instruction (a bare literal) would run at a fraction of float32 speed on Jetson, and
    a recurrence kernel using too many registers for its block size would not launch at all."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", _PTX_CHECK, "8.7"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
