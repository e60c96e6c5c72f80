"""Training: the fit loop, its callbacks and schedules, host detection and the run directory."""

from keras_cifar.training.loop import train

__all__ = ["train"]
