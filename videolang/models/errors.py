"""Errors of the models stage: bad model folders, presets and input tensors."""

from videolang.errors import VideolangError


class ModelError(VideolangError):
    """A model folder, preset or input is invalid; the message names the file or argument."""
