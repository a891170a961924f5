"""Fuzzing (tests/fuzzing.py): mutated and random files through every reader. Each must give a
model that runs or an EdgeLSTMError: no other exception, no crash."""

import os

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st

import edgelstm
from edgelstm import artifact
from edgelstm.errors import FormatError, InputError, UnsupportedError
from edgelstm.importers.isolated import run_isolated

from .conftest import MODELS
from .fuzzing import EXAMPLES, byte_mutations, elstm_header_mutations, read_and_run

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 1000,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking parses thousands of files
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ELSTM_SEEDS = ["text_classifier", "lstm_autoencoder", "conv1d_causal_dilated", "functional_embedding_mask_stack",
               "bidir_gru_seq", "layernorm_lstm"]


def elstm_bytes(name: str, quantize: str | None = None) -> bytes:
    graph = edgelstm.import_model(MODELS / f"{name}.keras")
    if quantize:
        from edgelstm.passes.quantize import quantize as quantize_graph
        graph = quantize_graph(graph, quantize, min_elements=0)  # int8 tensors even in a small model
    return artifact.to_bytes(graph)


SEEDS = {name: elstm_bytes(name) for name in ELSTM_SEEDS}
SEEDS["text_classifier_int8"] = elstm_bytes("text_classifier", "int8")


@pytest.mark.parametrize("seed", SEEDS)
def test_seeds_are_valid_models(seed):
    assert read_and_run(SEEDS[seed], artifact.SUFFIX) == "ok"


@FUZZ
@given(st.data())
def test_mutated_elstm_bytes_are_refused_or_run(data):
    original = SEEDS[data.draw(st.sampled_from(sorted(SEEDS)))]
    event(read_and_run(data.draw(byte_mutations(original)), artifact.SUFFIX))


@FUZZ
@given(st.data())
def test_mutated_elstm_graphs_and_tensor_tables_are_refused_or_run(data):
    original = SEEDS[data.draw(st.sampled_from(sorted(SEEDS)))]
    event(read_and_run(data.draw(elstm_header_mutations(original)), artifact.SUFFIX))


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([".elstm", ".keras", ".h5", ".onnx"]))
def test_random_bytes_are_refused(data, suffix):
    assert read_and_run(data, suffix) == "refused"


SOURCE_FILES = {suffix: (MODELS / name).read_bytes() for suffix, name in
                [(".keras", "lstm_stacked.keras"), (".h5", "k2_text_classifier.h5"),
                 (".onnx", "onnx/lstm_bidir2_seq_script.onnx")]}


@FUZZ
@given(st.data())
def test_mutated_keras_h5_and_onnx_files_are_refused_or_run(data):
    suffix = data.draw(st.sampled_from(sorted(SOURCE_FILES)))
    event(f"{suffix}: {read_and_run(data.draw(byte_mutations(SOURCE_FILES[suffix])), suffix)}")


def _never_returns(path):
    while True:
        pass


def _dies(path):
    os._exit(3)


def _has_a_bug(path):
    return {}["missing"]


def test_a_reader_that_hangs_crashes_or_fails_is_contained(tmp_path):
    """Keras/HDF5 files are read in a child process (importers/isolated.py): libhdf5 can loop forever
    on a hostile file, which the fuzzer found."""
    path = tmp_path / "m.h5"
    path.write_bytes(b"x")
    with pytest.raises(FormatError, match="did not finish in 1 s"):
        run_isolated(_never_returns, path, seconds=1)
    with pytest.raises(FormatError, match="died on it \\(exit code 3\\)"):
        run_isolated(_dies, path, seconds=30)
    with pytest.raises(RuntimeError, match="KeyError: 'missing'") as failure:
        run_isolated(_has_a_bug, path, seconds=30)
    assert "\n" not in str(failure.value) and "Traceback" in failure.value.__notes__[0]
    with pytest.raises(UnsupportedError, match="Lambda"):
        edgelstm.import_model(MODELS / "neg_lambda.keras")  # errors keep their class across the process


def test_an_onnx_node_without_outputs_is_refused(tmp_path):
    """Found by tools/fuzz_atheris.py: it used to raise IndexError while naming the node."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Foo", ["x"], [])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    with pytest.raises(FormatError, match="no outputs"):
        edgelstm.import_model(tmp_path / "m.onnx")


def _layer_count(path):
    return len(edgelstm.import_model(path).layers)


def test_pool_workers_read_keras_in_process_and_a_bad_timeout_is_named(monkeypatch):
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(1) as pool:  # daemon workers may not start children
        assert pool.apply(_layer_count, (str(MODELS / "lstm_stacked.keras"),)) > 1
    monkeypatch.setenv("EDGELSTM_READ_TIMEOUT", "5s")
    with pytest.raises(InputError, match="EDGELSTM_READ_TIMEOUT='5s'"):
        edgelstm.import_model(MODELS / "lstm_stacked.keras")


def test_an_hdf5_weight_that_would_inflate_past_the_file_is_refused_before_allocation(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bomb.h5"
    path.write_bytes((MODELS / "k2_lstm_basic.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        layer = f["model_weights"]
        group_name = next(k for k in layer if len(layer[k].attrs.get("weight_names", [])))
        group = layer[group_name]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        del group[name]
        group.create_dataset(name, shape=(2**28,), dtype="float32", fillvalue=1.0)  # 1 GiB, never written
    assert path.stat().st_size < 1 << 20
    with pytest.raises(FormatError, match="would inflate to 1073741824 bytes"):
        edgelstm.import_model(path)
