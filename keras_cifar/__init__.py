"""keras-cifar: train, evaluate, export and serve CNNs for CIFAR-10 with Keras 3."""

import os

# TensorFlow turns its oneDNN kernels on only for CPUs with AVX-512 VNNI, BF16 or AMX; on AVX2-only CPUs it falls
# back to Eigen, which trains 1.5-2.7x slower (results/benchmarks/onednn_avx2.txt). Set before TensorFlow loads;
# an explicit TF_ENABLE_ONEDNN_OPTS=0 still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"


def load_model(path):
    """Load a `.keras` file this package wrote: `keras.saving.load_model` alone does not know its custom layers
    (they register when the package's modules are imported, which this does first)."""
    from keras_cifar.models.saving import load_model_file

    return load_model_file(path)
