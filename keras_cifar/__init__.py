"""keras-cifar: train, evaluate, export and serve CNNs for CIFAR-10 with Keras 3."""

import os

# TensorFlow turns its oneDNN kernels on only for CPUs with AVX-512 VNNI, BF16 or AMX; on AVX2-only CPUs it falls
# back to Eigen, which trains 1.5-2.7x slower (results/benchmarks/onednn_avx2.txt). Set before TensorFlow loads;
# an explicit TF_ENABLE_ONEDNN_OPTS=0 still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
