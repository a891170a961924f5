"""The one error hierarchy of edgelstm.

The CLI turns every `EdgeLSTMError` into a single ``Error: ...`` line; anything else is a bug.
"""


class EdgeLSTMError(Exception):
    """Base class of every error edgelstm raises on purpose."""


class FormatError(EdgeLSTMError):
    """A model file is corrupt, truncated, of an unknown kind or of a newer format version."""


class UnsupportedError(EdgeLSTMError):
    """A layer, op, option or activation that edgelstm does not convert (never approximated)."""


class InputError(EdgeLSTMError):
    """Input data a model cannot take: wrong shape, dtype or values (such as token ids out of range)."""


class ShapeError(InputError):
    """An input or weight whose shape or dtype is not the one expected."""


class BackendError(EdgeLSTMError):
    """A backend that cannot run here, or a model that a mode (such as streaming) cannot run."""
