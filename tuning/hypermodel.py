"""The training spine as a KerasTuner HyperModel: a trial is a `train` run on the same split, without its outputs."""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner
import numpy as np

from keras_cifar.data import augmentation_from_config, load_cifar10, split_data
from keras_cifar.data import steps_per_epoch as count_steps
from keras_cifar.errors import ConfigError, TrainingError
from keras_cifar.training.callbacks import control_callbacks
from keras_cifar.training.loop import fit_inputs, fit_model, pipeline_callbacks, prepared_model, resolve_runtime
from tuning.space import Space, declare

OBJECTIVE = keras_tuner.Objective("val_accuracy", direction="max")


class CifarHyperModel(keras_tuner.HyperModel):
    """`build` compiles a trial's model through the spine's compile path; `fit` trains it on the spine's
    train/validation split with the callbacks that steer a run (NaN guard, early stopping, Lookahead, plateau LR)
    and reports the best epoch's validation accuracy. The test images are never read.

    The data is loaded on first use, once per process: a distributed chief only needs the space.
    """

    def __init__(self, base, space: Space):
        super().__init__(name=base.arch)
        self.base, self.space = base, space
        self.runtime = resolve_runtime(base)
        self._split = None
        self._whitened = False

    @property
    def split(self):
        if self._split is None:
            data = load_cifar10(self.base.data_dir, self.base.source)
            self._split = split_data(
                data, self.base.val_split, self.base.seed, self.base.train_limit, self.base.val_limit, test_limit=0
            )
        return self._split

    def trial_config(self, hp):
        """The base config with this trial's values; a combination `TrainConfig` rejects fails only this trial."""
        try:
            return dataclasses.replace(self.base, **declare(self.space, hp)).validate()
        except ConfigError as exc:
            raise keras_tuner.errors.FailedTrialError(f"invalid combination of settings: {exc}") from None

    def steps_per_epoch(self, config) -> int:
        return count_steps(len(self.split.y_train), config.batch_size, config.drop_remainder)

    def build(self, hp):
        config = self.trial_config(hp)
        keras.utils.set_random_seed(config.seed)
        model, self._whitened = prepared_model(
            config,
            self.runtime,
            self.split,
            self.steps_per_epoch(config),
            augmentation_from_config(config),
            _trained_epochs(hp, config),
        )
        return model

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        """Hyperband passes `epochs` and `initial_epoch` (a continued trial starts from its parent's weights);
        the other tuners train `--epochs`."""
        config = self.trial_config(hp)
        train_ds, val_ds, alternating = fit_inputs(config, self.split, self.runtime, augmentation_from_config(config))
        callbacks = [
            *pipeline_callbacks(config, alternating, self._whitened),
            *control_callbacks(config, self.steps_per_epoch(config), _trained_epochs(hp, config)),
            *callbacks,
        ]
        try:
            history = fit_model(
                model,
                config,
                train_ds,
                val_ds,
                callbacks,
                epochs=kwargs.get("epochs", config.epochs),
                initial_epoch=kwargs.get("initial_epoch", 0),
            )
        except TrainingError as exc:
            raise keras_tuner.errors.FailedTrialError(str(exc)) from None
        logs = history.history
        if not logs.get("loss"):
            raise keras_tuner.errors.FailedTrialError("the trial trained no epoch")
        best = int(np.argmax(logs["val_accuracy"]))
        return {**{name: values[best] for name, values in logs.items()}, "epochs": len(logs["loss"])}


def _trained_epochs(hp, config) -> float:
    """The epochs this trial trains, which its LR schedule spans. A Hyperband trial continued from a parent
    restarts the schedule over its own epochs (a warm restart), as it also starts a fresh optimizer."""
    if "tuner/epochs" in hp.values:
        return hp.values["tuner/epochs"] - hp.values["tuner/initial_epoch"]
    return config.epochs
