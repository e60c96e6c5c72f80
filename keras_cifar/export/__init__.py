"""Deployment formats: SavedModel and TFLite, their runtimes, and the parity check between them."""

from keras_cifar.export.formats import FORMATS
from keras_cifar.export.runtime import load_predictor

__all__ = ["FORMATS", "load_predictor"]
