"""The callbacks of a run, Keras's own wherever Keras has one."""

from __future__ import annotations

import time
from pathlib import Path

import keras

from keras_cifar.errors import CheckpointError


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's crash-recovery backup, with an unreadable backup reported as the user's file to remove."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except Exception as exc:  # noqa: BLE001 - h5py, JSON and shape errors all mean a broken backup
            raise CheckpointError(f"cannot restore the training backup in {self.backup_dir} ({type(exc).__name__}: "
                                  f"{exc}); delete that folder to restart the run from epoch 0") from None


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate, epoch wall time and training images/second to each epoch's logs.

    Placed before CSVLogger, so history.csv carries them: the time-to-accuracy curve and throughput of a run
    are read from its history, not re-measured. Throughput counts the training steps only; the epoch time
    includes validation, as a wall clock would.
    """

    def __init__(self, train_images: int):
        super().__init__()
        self.train_images = train_images
        self._start = self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self._train_end = self._train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        now = time.perf_counter()
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        logs["epoch_seconds"] = now - self._start
        logs["images_per_second"] = self.train_images / ((self._train_end or now) - self._start)


def build_callbacks(config, run_dir: Path, train_images: int, best_val_accuracy=None) -> list:
    """Order matters: EpochStats fills the logs before CSVLogger writes them, and the backup comes last, so an
    epoch the backup holds is always in history.csv and in the best-model checkpoint too. (Restoring happens
    at train begin, before any epoch, whatever the order.)"""
    has_val = config.val_split > 0
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        EpochStats(train_images),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "model.keras"),
            monitor="val_accuracy" if has_val else "loss",
            mode="max" if has_val else "min",
            save_best_only=has_val,
            initial_value_threshold=best_val_accuracy if has_val else None,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", restore_best_weights=True,
                                                       patience=config.early_stopping_patience))
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.step_gamma,
                                                           patience=max(2, config.epochs // 10), min_lr=config.lr * 1e-3))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    callbacks.append(BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False))
    return callbacks
