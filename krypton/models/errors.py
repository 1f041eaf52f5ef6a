"""The one error type model loading raises: the CLI prints its message as a single line."""

from __future__ import annotations


class ModelError(ValueError):
    """A model could not be loaded or does not fit krypton; the message says what to do about it."""
