"""Scalar activations shared by the numba kernels (CPU now, CUDA later).

Kernels take an activation as an integer code (numba compiles plain ints, not strings);
`CODES` maps the IR's names to them. Every function here is plain scalar maths that
`register_jitable` makes callable from ``@njit`` and ``@cuda.jit`` code alike. Softmax and
log-softmax work on a whole vector, so the kernels handle them; they have codes so layers can name them.
"""

import math

import numpy as np
from numba.extending import register_jitable

from ..ir import ACTIVATIONS

CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
(LINEAR, RELU, SIGMOID, TANH, SOFTMAX, ELU, SELU, GELU, SWISH, SOFTPLUS, HARD_SIGMOID, HARD_SIGMOID_LEGACY,
 LOG_SOFTMAX) = range(13)
assert len(CODES) == 13 and CODES["softmax"] == SOFTMAX and CODES["log_softmax"] == LOG_SOFTMAX

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


# tanh as a 13/6 rational function in float32 (the coefficients of Eigen's generic_fast_tanh_float):
# only multiplies, adds, one division and a clamp, so LLVM vectorises loops over it, unlike calls
# to tanh/exp. Within 5 ulp of tanh over the whole float range (tested); beyond the clamp float32
# tanh is +-1 anyway, and below 0.0004 tanh(x) rounds to x.
_F = np.float32
_TANH_P = tuple(_F(c) for c in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                                5.12229709037114e-08, -8.60467152213735e-11, 2.00018790482477e-13,
                                -2.76076847742355e-16))
_TANH_Q = tuple(_F(c) for c in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
                                1.19825839466702e-06))
_TANH_CLAMP, _TANH_TINY, _HALF = _F(7.99881172180175781), _F(0.0004), _F(0.5)


@register_jitable
def tanh32(x):
    """tanh of a float32, to float32 rounding level, in a form LLVM vectorises."""
    v = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    v2 = v * v
    p1, p3, p5, p7, p9, p11, p13 = _TANH_P
    q0, q2, q4, q6 = _TANH_Q
    p = v * (((((((p13 * v2 + p11) * v2 + p9) * v2 + p7) * v2 + p5) * v2 + p3) * v2) + p1)
    q = ((q6 * v2 + q4) * v2 + q2) * v2 + q0
    return v if abs(v) < _TANH_TINY else p / q


@register_jitable
def sigmoid32(x):
    """The logistic function of a float32 as 0.5 + 0.5 tanh(x / 2): absolute error below 2e-7."""
    return _HALF + _HALF * tanh32(_HALF * x)


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
