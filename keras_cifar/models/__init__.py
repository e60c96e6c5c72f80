"""CNN architectures for CIFAR, built by name: `build_model("resnet18", width_multiplier=0.5)`."""

from keras_cifar.models.registry import available_models, build_model, canonical_name, expand_names

__all__ = ["available_models", "build_model", "canonical_name", "expand_names"]
