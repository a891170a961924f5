"""Training kernels (distillation students): every backward pass against central finite
differences in float64 (test_distill.py holds the forward passes to the inference runtime)."""

import numpy as np
import pytest

from edgelstm.kernels import train

rng = np.random.default_rng(7)
EPS = 1e-6


def numeric_gradient(loss, array):
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        keep = array[index]
        array[index] = keep + EPS
        up = loss()
        array[index] = keep - EPS
        down = loss()
        array[index] = keep
        grad[index] = (up - down) / (2 * EPS)
    return grad


def recurrent_case(kind, go_backwards, batch=3, steps=5, features=4, units=3):
    gates = 4 if kind == "lstm" else 3
    x = rng.normal(0, 1, (batch, steps, features))
    mask = np.ones((batch, steps), bool)
    mask[1, 3:] = False  # end padding
    mask[2, 1] = False  # a hole
    weights = [rng.normal(0, 0.5, (features, gates * units)), rng.normal(0, 0.5, (units, gates * units)),
               rng.normal(0, 0.3, gates * units)]
    if kind == "gru":
        weights.append(rng.normal(0, 0.3, gates * units))
    return x, mask, weights


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_backward_matches_finite_differences(kind, go_backwards):
    x, mask, weights = recurrent_case(kind, go_backwards)
    forward = train.lstm_forward if kind == "lstm" else train.gru_forward
    backward = train.lstm_backward if kind == "lstm" else train.gru_backward
    d_outputs = rng.normal(0, 1, (x.shape[0], x.shape[1], weights[1].shape[0]))
    d_last = rng.normal(0, 1, (x.shape[0], weights[1].shape[0]))

    def loss():
        outputs, _ = forward(x, mask, *weights, go_backwards)
        return float(np.sum(outputs * d_outputs) + np.sum(outputs[:, -1] * d_last))

    outputs, cache = forward(x, mask, *weights, go_backwards)
    grads = tuple(np.zeros_like(w) for w in weights)
    d_x = backward(d_outputs, d_last, x, mask, weights[0], weights[1], go_backwards, cache, grads)
    for analytic, array in [(d_x, x), *zip(grads, weights)]:
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array), rtol=1e-5, atol=1e-8)


def test_dense_and_embedding_backward_match_finite_differences():
    x = rng.normal(0, 1, (6, 4))
    kernel, bias = rng.normal(0, 1, (4, 3)), rng.normal(0, 1, 3)
    d_out = rng.normal(0, 1, (6, 3))
    grads = (np.zeros_like(kernel), np.zeros_like(bias))
    d_x = train.dense_backward(d_out, x, kernel, grads)
    loss = lambda: float(np.sum(train.dense_forward(x, kernel, bias) * d_out))  # noqa: E731
    for analytic, array in ((d_x, x), (grads[0], kernel), (grads[1], bias)):
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array), rtol=1e-6, atol=1e-9)

    ids = np.array([[1, 2, 2, 0], [3, 1, 0, 0]])
    table = rng.normal(0, 1, (5, 2))
    d_emb = rng.normal(0, 1, (2, 4, 2))
    d_table = np.zeros_like(table)
    train.embedding_backward(d_emb, ids, d_table)
    loss = lambda: float(np.sum(train.embedding_forward(ids, table) * d_emb))  # noqa: E731
    np.testing.assert_allclose(d_table, numeric_gradient(loss, table), rtol=1e-6, atol=1e-9)
