"""Learning-rate schedules evaluated per step, so a resumed run continues on the same curve.

The optimizer's iteration counter is saved with its state; a schedule that depends only on it needs no
callback and survives BackupAndRestore.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_cifar")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_lr`, then one of: linear decay to zero (one-cycle), cosine decay to zero,
    step drops at fractions of training, or constant."""

    def __init__(
        self,
        peak_lr,
        total_steps,
        warmup_steps=0,
        kind="onecycle",
        milestones=(0.5, 0.75),
        gamma=0.1,
        start_factor=0.0,
        final_factor=0.0,
    ):
        self.start_factor = float(start_factor)
        self.final_factor = float(final_factor)
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.kind = kind
        self.milestones = tuple(float(m) for m in milestones)
        self.gamma = float(gamma)

    def _after_warmup(self, progress):
        """LR factor at `progress` in [0, 1] of the post-warm-up phase."""
        if self.kind == "onecycle":
            return 1.0 - (1.0 - self.final_factor) * progress
        if self.kind == "cosine":
            return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        if self.kind == "step":
            drops = sum(ops.cast(progress >= m, "float32") for m in self.milestones)
            return ops.power(self.gamma, drops)
        return ops.ones_like(progress)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rest = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / rest, 0.0, 1.0)
        rising = self.start_factor + (1.0 - self.start_factor) * (step + 1.0) / warmup
        factor = ops.where(step < self.warmup_steps, rising, self._after_warmup(progress))
        return self.peak_lr * factor

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "start_factor": self.start_factor,
            "final_factor": self.final_factor,
        }


def total_steps(epochs: float, steps_per_epoch: int) -> int:
    """The steps `epochs` train: a fraction of an epoch rounds up to a whole step, as airbench counts its 9.9.
    (Rounded first, so a float's 3.0000000000000004 is 3 steps, not 4.)"""
    return max(1, math.ceil(round(epochs * steps_per_epoch, 6)))


def learning_rate(config, steps_per_epoch: int, epochs: float):
    """The optimizer's learning rate for a config: a schedule, or a float that ReduceLROnPlateau may lower."""
    if config.schedule == "plateau":
        return config.lr
    total = total_steps(epochs, steps_per_epoch)
    # At most half the run warms up, so a recipe's warm-up still leaves a decay when --epochs is cut short.
    warmup = (
        0 if config.schedule in ("step", "constant") else min(round(config.warmup_epochs * steps_per_epoch), total // 2)
    )
    return WarmupSchedule(
        config.lr,
        total,
        warmup,
        config.schedule,
        config.step_milestones,
        config.step_gamma,
        config.warmup_start_factor,
        config.final_lr_factor,
    )
