"""The library's errors: each one something the user can fix, with a message that says what to do.

They are ``ValueError`` subclasses (a bad value is what they report), and :class:`PolarError` is their common base:
the CLI prints a ``PolarError`` as one line and lets any other exception — a bug — keep its traceback.
"""
from __future__ import annotations

__all__ = ["PolarError", "ConfigError", "DatasetError", "CheckpointError"]


class PolarError(ValueError):
    """Something the user can fix: a setting, an argument, a file or a dataset."""


class ConfigError(PolarError):
    """A setting or argument is unknown or out of range; the message names it and says what is allowed."""


class DatasetError(PolarError):
    """The dataset cannot be found or read; the message says what to put where."""


class CheckpointError(PolarError):
    """A checkpoint or saved model cannot be read; the message says which file and what to do."""
