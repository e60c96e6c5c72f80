"""Getting CIFAR-10 into memory and into Keras."""

from keras_cifar.data.augmentation import (
    RandomPadCrop,
    augmentation_from_config,
    build_augmentation,
    build_label_mixing,
    label_mixing_from_config,
)
from keras_cifar.data.pipeline import (
    AlternatingFlip,
    Split,
    evaluation_dataset,
    split_data,
    steps_per_epoch,
    stratified_holdout,
    training_dataset,
)
from keras_cifar.data.sources import CLASS_NAMES, SOURCES, Cifar10, load_cifar10, resolve_data_dir

__all__ = [
    "AlternatingFlip",
    "CLASS_NAMES",
    "SOURCES",
    "Cifar10",
    "RandomPadCrop",
    "Split",
    "augmentation_from_config",
    "build_augmentation",
    "build_label_mixing",
    "evaluation_dataset",
    "label_mixing_from_config",
    "load_cifar10",
    "resolve_data_dir",
    "split_data",
    "steps_per_epoch",
    "stratified_holdout",
    "training_dataset",
]
