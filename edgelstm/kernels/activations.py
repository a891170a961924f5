"""Scalar activations shared by the numba kernels (CPU now, CUDA later).

Kernels take an activation as an integer code (numba compiles plain ints, not strings);
`CODES` maps the IR's names to them. Every function here is plain scalar maths that
`register_jitable` makes callable from ``@njit`` and ``@cuda.jit`` code alike. Softmax and
log-softmax work on a whole vector, so the kernels handle them; they have codes so layers can name them.
"""

import math

from numba.extending import register_jitable

from ..ir import ACTIVATIONS

CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
(LINEAR, RELU, SIGMOID, TANH, SOFTMAX, ELU, SELU, GELU, SWISH, SOFTPLUS, HARD_SIGMOID, HARD_SIGMOID_LEGACY,
 LOG_SOFTMAX) = range(13)
assert len(CODES) == 13 and CODES["softmax"] == SOFTMAX and CODES["log_softmax"] == LOG_SOFTMAX

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


@register_jitable
def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@register_jitable
def softplus(x):
    # log(1 + e^x) without overflow for large x or loss of precision for very negative x
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@register_jitable
def apply(code, x):
    """The activation `code` applied to the scalar `x` (softmax excluded)."""
    if code == SIGMOID:
        return sigmoid(x)
    if code == TANH:
        return math.tanh(x)
    if code == RELU:
        return max(x, 0.0)
    if code == LINEAR:
        return x
    if code == HARD_SIGMOID:
        return min(max(x / 6.0 + 0.5, 0.0), 1.0)
    if code == HARD_SIGMOID_LEGACY:
        return min(max(0.2 * x + 0.5, 0.0), 1.0)
    if code == ELU:
        return x if x > 0.0 else math.expm1(x)
    if code == SELU:
        return _SELU_SCALE * x if x > 0.0 else _SELU_SCALE * _SELU_ALPHA * math.expm1(x)
    if code == GELU:
        return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
    if code == SWISH:
        return x * sigmoid(x)
    if code == SOFTPLUS:
        return softplus(x)
    return math.nan
