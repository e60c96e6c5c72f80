"""Loading a saved `.keras` model: the one loader that evaluate, compare, export and predict share."""

from __future__ import annotations

from pathlib import Path

from keras_cifar.errors import CheckpointError


def load_model_file(path):
    """Load a saved `.keras` model for inference, with a broken or missing file named in the error.

    The package's custom layers, initialisers and schedules register themselves when their modules are imported;
    importing them here is what lets `keras.saving.load_model` read this project's files."""
    import keras

    import keras_cifar.data.augmentation  # noqa: F401 - the augmentation layers a saved model may hold
    import keras_cifar.training.schedules  # noqa: F401 - the LR schedule inside a compiled model's optimizer
    from keras_cifar.models.registry import load_builders

    load_builders()  # the builders' custom layers and initialisers

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - zip, h5 and config errors all mean an unusable file
        raise CheckpointError(
            f"cannot load the model {path} ({type(exc).__name__}: {str(exc)[:200]}); the file is "
            "truncated, corrupt or not a Keras model: retrain, or restore it from a copy"
        ) from None
