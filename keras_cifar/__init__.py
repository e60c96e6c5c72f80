"""keras-cifar: train, evaluate, export and serve CNNs for CIFAR-10 with Keras 3."""

__version__ = "0.1.0"
