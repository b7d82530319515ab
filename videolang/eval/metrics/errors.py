"""Errors of the metric functions: malformed predictions, labels or score matrices."""

from videolang.errors import VideolangError


class MetricInputError(VideolangError):
    """A metric got inputs it cannot score; the message names the argument and what is wrong."""
