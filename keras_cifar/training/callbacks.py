"""The callbacks of a run, Keras's own wherever Keras has one."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import keras

from keras_cifar.errors import CheckpointError
from keras_cifar.run import BACKUP_CURRENT, MachineShare, RunDir, write_json
from keras_cifar.training.schedules import total_steps


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's crash-recovery backup, written atomically, with an unreadable backup reported as the user's
    folder to remove.

    Keras overwrites its backup in place, so a kill during the write leaves a torn weights file and a run
    that cannot continue. Here each backup is written whole into its own folder (`ROOT/epoch-N/`) and then
    published by atomically re-pointing the symlink `ROOT/current` at it: a kill at any moment leaves the
    previous backup or the new one. Keras reads through the link.
    """

    def __init__(self, root, **kwargs):
        self.root = Path(root)
        super().__init__(str(self.root / BACKUP_CURRENT), **kwargs)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except Exception as exc:  # noqa: BLE001 - h5py, JSON and shape errors all mean a broken backup
            raise CheckpointError(
                f"cannot restore the training backup in {self.root} ({type(exc).__name__}: "
                f"{exc}); delete that folder to restart the run from epoch 0"
            ) from None

    def _save_model(self):
        target = self.root / f"epoch-{self._current_epoch}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        self.model.save_weights(str(target / "latest.weights.h5"))
        write_json(target / "training_metadata.json", {"epoch": self._current_epoch, "batch": self._last_batch_seen})
        link = self.root / f"{BACKUP_CURRENT}.new"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.name)
        os.replace(link, self.root / BACKUP_CURRENT)  # the atomic step
        for old in self.root.glob("epoch-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's checkpoint, written beside the target and renamed over it: a kill while saving leaves the previous
    model whole (Keras writes the file in place)."""

    def _save_model(self, epoch, batch, logs):
        target = Path(self._get_file_path(epoch, batch, logs))
        if self._should_save_model(epoch, batch, logs, str(target)):
            partial = target.with_name(f".{target.stem}.partial{target.suffix}")
            self.model.save(partial, overwrite=True)
            os.replace(partial, target)


class EpochStats(keras.callbacks.Callback):
    """Adds the learning rate, epoch wall time, training images/second and the machine's load to each epoch's logs.

    Placed before CSVLogger, so history.csv carries them: the time-to-accuracy curve and throughput of a run
    are read from its history, not re-measured. Throughput counts the training steps taken (a fractional run's
    last epoch is short); the epoch time includes validation, as a wall clock would. `others_cpu` is the share
    of the cores other processes used during the epoch: a time measured beside other work is flagged in the
    results tables.
    """

    def __init__(self, train_images: int, batch_size: int):
        super().__init__()
        self.train_images, self.batch_size = train_images, batch_size
        self._start = self._train_end = None
        self._share = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None
        self._share = MachineShare()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        self._train_end = self._train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        now = time.perf_counter()
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        logs["epoch_seconds"] = now - self._start
        images = min(self.train_images, self._steps * self.batch_size)
        logs["images_per_second"] = images / ((self._train_end or now) - self._start)
        others = self._share.others()
        logs["others_cpu"] = float("nan") if others is None else others
        logs["load_1min"] = os.getloadavg()[0]


def build_callbacks(
    config, run: RunDir, train_images: int, steps_per_epoch: int, epochs: float, best_val_accuracy=None
) -> list:
    """Order matters: EpochStats fills the logs before CSVLogger writes them, and the backup comes last, so an
    epoch the backup holds is always in history.csv and in the best-model checkpoint too. (Restoring happens
    at train begin, before any epoch, whatever the order.)"""
    has_val = config.val_split > 0
    callbacks = [
        *_step_controls(config, steps_per_epoch, epochs),
        EpochStats(train_images, config.batch_size),
        ModelCheckpoint(
            str(run.model_file),
            monitor="val_accuracy" if has_val else "loss",
            mode="max" if has_val else "min",
            save_best_only=has_val,
            initial_value_threshold=best_val_accuracy if has_val else None,
        ),
        keras.callbacks.CSVLogger(str(run.history_file), append=True),
        *_epoch_controls(config, epochs),
    ]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False))
    callbacks.append(BackupAndRestore(str(run / RunDir.BACKUP), delete_checkpoint=False))
    return callbacks


def control_callbacks(config, steps_per_epoch: int, epochs: float) -> list:
    """The callbacks that change how a run trains (NaN guard, a fractional last epoch, Lookahead, early
    stopping, plateau LR), without the ones that record it: a search trial trains exactly as `train` would and
    writes nothing of its own."""
    return [*_step_controls(config, steps_per_epoch, epochs), *_epoch_controls(config, epochs)]


def _step_controls(config, steps_per_epoch: int, epochs: float) -> list:
    steps = total_steps(epochs, steps_per_epoch)
    controls = [keras.callbacks.TerminateOnNaN()]
    if epochs != int(epochs):
        controls.append(StopAtStep(steps))
    if config.lookahead:
        controls.insert(0, Lookahead(steps))
    return controls


def _epoch_controls(config, epochs: float) -> list:
    controls = []
    if config.early_stopping_patience:
        controls.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", restore_best_weights=True, patience=config.early_stopping_patience
            )
        )
    if config.schedule == "plateau":
        controls.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=config.step_gamma, patience=max(2, epochs // 10), min_lr=config.lr * 1e-3
            )
        )
    return controls


class StopAtStep(keras.callbacks.Callback):
    """Ends a fractional run (`--epochs 8.5`) inside its last epoch, once the optimizer has taken `total_steps`,
    where its schedule ends. The optimizer's count, not this epoch's batches: it is saved in the backup, so a
    resumed run stops at the same step. Keras still scores and records that last epoch."""

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) >= self.total_steps:
            self.model.stop_training = True


class Lookahead(keras.callbacks.Callback):
    """airbench's Lookahead: every `every` steps the weights move to an exponential average of themselves.

    The average's decay grows as `decay * (step / total_steps) ** power`: early on the weights run free,
    late in training they are smoothed heavily, and after the last step they are set to the average. All float
    weights take part, batch-norm statistics included. After a restart the average starts again from the
    restored weights (it is not in the backup); the effect on the final weights is small because the
    average is written into the weights every `every` steps.
    """

    def __init__(self, total_steps, every=5, decay=0.95**5, power=3):
        super().__init__()
        self.total_steps, self.every, self.decay, self.power = total_steps, every, decay, power
        self._average = None

    def _variables(self):
        return [v for v in self.model.weights if "float" in str(v.dtype)]

    def on_train_begin(self, logs=None):
        self._average = None

    def on_train_batch_begin(self, batch, logs=None):
        # Started here rather than at train begin, so a resumed run averages its restored weights.
        if self._average is None:
            self._average = [keras.ops.convert_to_numpy(v).copy() for v in self._variables()]

    def _update(self, decay):
        for variable, average in zip(self._variables(), self._average):
            average += (1.0 - decay) * (keras.ops.convert_to_numpy(variable) - average)
            variable.assign(average)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.every == 0:
            self._update(self.decay * min(step / self.total_steps, 1.0) ** self.power)
        if step >= self.total_steps:  # the last step: the weights become the average, before they are saved
            self._update(1.0)
