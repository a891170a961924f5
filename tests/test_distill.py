"""Distillation: the student's training forward pass is the runtime's, its gradients are the
loss's (finite differences, float64), training learns, a seed gives the same student, and the
CLI runs end to end on the shipped teachers."""

import numpy as np
import pytest
from click.testing import CliRunner

import edgelstm
from edgelstm.cli import main
from edgelstm.errors import InputError, UnsupportedError
from edgelstm.ir import Graph, Layer
from edgelstm.passes import distill as D
from edgelstm.runtime import Model

from .conftest import MODELS

rng = np.random.default_rng(3)
TEXT = edgelstm.import_model(MODELS / "text_classifier.keras")
FORECAST = edgelstm.import_model(MODELS / "sensor_forecast.keras")


def sequence_teacher(head: str, outputs: int = 3, features: int = 2) -> Graph:
    """Input [T, F] -> LSTM(4, sequences) -> Dense(outputs, head): a teacher with per-step outputs."""
    r = np.random.default_rng(0)
    return Graph([
        Layer("input", "input", [], {"shape": [None, features], "dtype": "float32"}),
        Layer("lstm", "lstm", ["input"], {"units": 4, "return_sequences": True, "go_backwards": False,
                                          "stateful": False, "zero_output_for_mask": False, "activation": "tanh",
                                          "recurrent_activation": "sigmoid", "output_activation": "tanh",
                                          "clip": 0.0, "input_forget": False},
              {"kernel": r.normal(0, 0.5, (features, 16)).astype(np.float32),
               "recurrent_kernel": r.normal(0, 0.5, (4, 16)).astype(np.float32),
               "bias": np.zeros(16, np.float32)}),
        Layer("head", "dense", ["lstm"], {"activation": head},
              {"kernel": r.normal(0, 1, (4, outputs)).astype(np.float32), "bias": np.zeros(outputs, np.float32)}),
    ], "head")


CASES = {
    "lstm, last step": (FORECAST, D.Options(hidden=5, cell="lstm")),
    "gru, 2 layers": (FORECAST, D.Options(hidden=4, layers=2, cell="gru")),
    "bidirectional lstm, tokens with mask": (TEXT, D.Options(hidden=3, bidirectional=True)),
    "bidirectional gru x2, tokens": (TEXT, D.Options(hidden=3, layers=2, cell="gru", bidirectional=True)),
    "lstm, sequence output": (sequence_teacher("softmax"), D.Options(hidden=4, layers=2)),
}


def inputs_for(teacher: Graph, batch: int, steps: int = 9) -> np.ndarray:
    if teacher.input.attrs["dtype"] == "int32":
        ids = rng.integers(1, 20, (batch, steps)).astype(np.int32)
        ids[0, 6:] = 0  # padding: masked steps
        ids[1, 2] = 0
        return ids
    shape = tuple(steps if d is None else d for d in teacher.input.shape)
    return rng.normal(0, 1, (batch,) + shape).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_training_forward_is_the_runtime_forward(case):
    teacher, options = CASES[case]
    interface = D.teacher_interface(teacher)
    params = D.init_params(interface, options, np.random.default_rng(1))
    for name, value in params.items():  # move off the initial values so every weight matters
        value += np.random.default_rng(2).normal(0, 0.2, value.shape).astype(np.float32)
    student = D.build_student(teacher, params, interface, options)
    x = inputs_for(teacher, 4)
    z, _ = D.forward(params, x, interface, options)
    np.testing.assert_allclose(D._apply_head(z, interface.head), Model(student).predict(x), atol=2e-5)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_student_gradients_match_finite_differences(case):
    teacher, options = CASES[case]
    interface = D.teacher_interface(teacher)
    params = {k: v.astype(np.float64) for k, v in D.init_params(interface, options, np.random.default_rng(1)).items()}
    x = inputs_for(teacher, 3, steps=5)
    soft = D.soft_targets(Model(teacher).predict(x).astype(np.float64), interface.head, options.temperature)

    def loss():
        return D.loss_and_gradient(D.forward(params, x, interface, options)[0], soft, None, interface.head, options)[0]

    z, tape = D.forward(params, x, interface, options)
    grads = D.backward(D.loss_and_gradient(z, soft, None, interface.head, options)[1], params, interface, options, tape)
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            keep = value[index]
            value[index] = keep + 1e-6
            up = loss()
            value[index] = keep - 1e-6
            numeric[index] = (up - loss()) / 2e-6
            value[index] = keep
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-4, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "linear", "tanh"])
@pytest.mark.parametrize("with_truth", [False, True])
def test_loss_gradients_match_finite_differences(head, with_truth):
    options = D.Options(temperature=3.0, targets_weight=0.3)
    z = rng.normal(0, 2, (5, 4))
    teacher = {"softmax": D._softmax, "sigmoid": D._sigmoid, "linear": lambda v: v, "tanh": np.tanh}[head](
        rng.normal(0, 2, (5, 4)))
    soft = D.soft_targets(teacher, head, options.temperature)
    truth = None
    if with_truth:
        truth = {"softmax": rng.integers(0, 4, 5), "sigmoid": (rng.uniform(size=(5, 4)) > 0.5).astype(float)}.get(
            head, rng.normal(0, 1, (5, 4)))
    _, grad = D.loss_and_gradient(z, soft, truth, head, options)
    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        keep = z[index]
        z[index] = keep + 1e-6
        up = D.loss_and_gradient(z, soft, truth, head, options)[0]
        z[index] = keep - 1e-6
        numeric[index] = (up - D.loss_and_gradient(z, soft, truth, head, options)[0]) / 2e-6
        z[index] = keep
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def transfer(count=400, steps=50, seed=0):
    r = np.random.default_rng(seed)
    t = np.arange(steps)[None, :] * 0.2 + r.uniform(0, 6, (count, 1))
    return (np.sin(t) + 0.1 * r.normal(size=t.shape)).astype(np.float32)[:, :, None]


def test_training_learns_a_teacher_and_is_deterministic():
    x = transfer()
    runs = [D.train_student(FORECAST, x, D.Options(hidden=8, epochs=8, seed=5)) for _ in range(2)]
    history = runs[0].history
    assert history[-1].val_metric < 0.2 * history[0].val_metric  # MSE against the teacher
    assert [e.val_loss for e in history] == [e.val_loss for e in runs[1].history]
    for a, b in zip(runs[0].student.layers, runs[1].student.layers):
        for name in a.weights:
            np.testing.assert_array_equal(a.weights[name], b.weights[name])
    other = D.train_student(FORECAST, x, D.Options(hidden=8, epochs=2, seed=6))
    assert other.history[0].val_loss != history[0].val_loss


def test_int8_distillation_fine_tunes_with_rounded_weights():
    x = transfer(200)
    result = D.train_student(FORECAST, x, D.Options(hidden=16, epochs=4, qat_epochs=2, quantize="int8"))
    assert [e.fake_quantized for e in result.history] == [False, False, True, True]
    recurrent = result.student.layers[1].weights["recurrent_kernel"]  # 16 x 64: int8 from 1024 weights
    assert recurrent.dtype == np.int8


def test_cli_distils_the_shipped_text_classifier(tmp_path):
    ids = rng.integers(1, 50, (160, 7)).astype(np.int32)
    ids[::3, 5:] = 0
    np.save(tmp_path / "ids.npy", ids)
    result = CliRunner().invoke(main, ["distill", str(MODELS / "text_classifier.keras"), "--data",
                                       str(tmp_path / "ids.npy"), "-o", str(tmp_path / "s.elstm"), "--hidden", "2",
                                       "--bidirectional", "--epochs", "3", "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert "picks the teacher's class on" in result.output and "smaller" in result.output
    student = edgelstm.load(tmp_path / "s.elstm")
    assert student.predict(ids[:4]).shape == (4, 4)
    assert student.graph.metadata["distillation"]["report"]["metric"] == "agreement"
    described = CliRunner().invoke(main, ["inspect", str(tmp_path / "s.elstm")])
    assert "distilled student: 1 x bidirectional LSTM(2)" in described.output and "picks the teacher's class" in described.output


def test_bad_requests_are_clear_errors(tmp_path):
    ids = rng.integers(1, 50, (20, 7)).astype(np.int32)
    with pytest.raises(InputError, match="token ids"):
        D.distill(TEXT, ids, D.Options(epochs=1, augment="noise"))
    with pytest.raises(UnsupportedError, match="augment 'mixup'"):
        D.distill(FORECAST, transfer(20), D.Options(epochs=1, augment="mixup"))
    with pytest.raises(InputError, match="none to train on"):
        D.train_student(FORECAST, transfer(1), D.Options(val_split=0.5))
    broken = transfer(20)
    broken[3, 7, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        D.train_student(FORECAST, broken, D.Options(epochs=1))
    with pytest.raises(InputError, match="temperature"):
        D.train_student(TEXT, ids, D.Options(temperature=0.0))
    with pytest.raises(InputError, match="class ids"):
        D.train_student(TEXT, ids, D.Options(epochs=1), truth=np.full(20, 9))
    with pytest.raises(InputError, match="shape"):
        D.train_student(FORECAST, transfer(20), D.Options(epochs=1), truth=np.zeros((20, 3)))
    with pytest.raises(InputError, match="jitter"):
        D.train_student(FORECAST, transfer(20), D.Options(epochs=1, augment="jitter"), truth=np.zeros((20, 1)))
    masked = sequence_teacher("linear")
    masked.layers.insert(1, Layer("mask", "masking", ["input"], {"mask_value": 0.0}))
    masked.layers[2].inputs = ["mask"]
    with pytest.raises(UnsupportedError, match="masks its float inputs"):
        D.teacher_interface(masked)
    relu_head = sequence_teacher("relu")
    with pytest.raises(UnsupportedError, match="output activation is 'relu'"):
        D.teacher_interface(relu_head)
    np.save(tmp_path / "x.npy", transfer(30)[:, :20])
    result = CliRunner().invoke(main, ["distill", str(MODELS / "sensor_forecast.keras"), "--data",
                                       str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.elstm")])
    assert result.exit_code == 1 and "expected" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.elstm").exists()
    for target, message in ((MODELS / "sensor_forecast.keras", "overwrite the teacher"),
                            (tmp_path / "missing" / "s.elstm", "folder does not exist")):
        with pytest.raises(InputError, match=message):
            edgelstm.distill(MODELS / "sensor_forecast.keras", transfer(30), target)


def test_augmented_copies_train_and_never_validate():
    x = transfer(100)
    result = D.train_student(FORECAST, x, D.Options(hidden=4, epochs=2, augment="noise", val_split=0.2))
    assert len(result.validation) == 20 and result.validation.max() < 100 and result.held_out
    np.testing.assert_array_equal(result.validation_inputs, x[result.validation])
    shifted = D.augment(x, "jitter", np.random.default_rng(0))
    assert not np.any(np.all(shifted == x, axis=(1, 2)))  # every copy moves


def test_early_stopping_keeps_the_best_epoch_and_targets_train_too():
    x = transfer(120)
    result = D.train_student(FORECAST, x, D.Options(hidden=4, epochs=30, lr=0.3, patience=2, seed=1))
    losses = [e.val_loss for e in result.history]
    assert len(losses) < 30 and result.best_epoch == 1 + int(np.argmin(losses))
    assert len(losses) - result.best_epoch == 2
    truth = Model(FORECAST).predict(x) + 0.05
    with_truth = D.train_student(FORECAST, x, D.Options(hidden=4, epochs=2, seed=1), truth=truth)
    plain = D.train_student(FORECAST, x, D.Options(hidden=4, epochs=2, seed=1))
    assert with_truth.history[0].train_loss != plain.history[0].train_loss


def test_tiny_data_still_holds_a_row_out():
    result = D.train_student(FORECAST, transfer(4), D.Options(hidden=2, epochs=1))
    assert result.held_out and len(result.validation) == 1


def test_shipped_text_teacher_distils_into_a_quarter_size_student_that_agrees(tmp_path):
    """tools/make_distill_teachers.py: BiLSTM(64) -> BiLSTM(16) on a short run (the full run is in
    bench/distill.py: 99% agreement)."""
    folder = MODELS / "distill"
    ids = np.load(folder / "text.transfer.npy").astype(np.int32)[:3000]
    test = np.load(folder / "text.test.npy").astype(np.int32)
    report = edgelstm.distill(folder / "text_teacher.keras", ids, tmp_path / "s.elstm", hidden=16,
                              bidirectional=True, epochs=6)
    teacher, student = edgelstm.load(folder / "text_teacher.keras"), edgelstm.load(tmp_path / "s.elstm")
    agreement = np.mean(teacher.predict(test).argmax(-1) == student.predict(test).argmax(-1))
    assert agreement >= 0.95 and report.student_params * 4 < report.teacher_params


def test_ctrl_c_keeps_the_best_student_so_far():
    def interrupt(epoch):
        if epoch.epoch == 2:
            raise KeyboardInterrupt

    result = D.train_student(FORECAST, transfer(60), D.Options(hidden=3, epochs=10), progress=interrupt)
    assert result.interrupted and len(result.history) == 2 and result.best_epoch in (1, 2)
    assert Model(result.student).predict(transfer(2)).shape == (2, 1)
