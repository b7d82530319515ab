"""The error every loss raises for bad input, so the CLI can print it as one line."""

from videolang.errors import VideolangError


class LossError(VideolangError):
    """A loss got inputs of the wrong shape or values, or an invalid `loss.*` config field."""
