"""Kernels: numpy references, numba CPU twins and the training kernels.

`cache` is imported first: its numba cache locators must be in place before any kernel module
decorates a function.
"""

from . import cache  # noqa: F401
