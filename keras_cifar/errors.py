"""Errors a user can cause.

Every one says what went wrong and what to do about it; the command-line entry points print the message
without a traceback and exit non-zero (see `keras_cifar.cli`).
"""


class KerasCifarError(Exception):
    """Base of every error caused by input, configuration or files rather than by a bug."""


class DataError(KerasCifarError):
    """The dataset is missing, partial or corrupt."""


class ConfigError(KerasCifarError):
    """A setting is unknown, has the wrong type or is out of range."""


class CheckpointError(KerasCifarError):
    """A saved model or training checkpoint cannot be read."""


class TrainingError(KerasCifarError):
    """Training stopped on its own for a reason the user must know (for example a NaN loss)."""
