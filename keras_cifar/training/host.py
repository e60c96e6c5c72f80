"""The precision and compilation that run fastest on this machine, and what config.json records of it.

`benchmarks/train_throughput.py` measured bfloat16 faster than float32 on every CPU with bfloat16 instructions
and XLA never faster on a CPU (results/benchmarks/train_throughput*.txt): so `auto` picks bfloat16 wherever
the CPU has bfloat16 instructions, float16 on a GPU, float32 elsewhere, and XLA only on GPUs.
"""

from __future__ import annotations

import contextlib
import os
import platform
from functools import lru_cache

import keras

from keras_cifar.errors import ConfigError
from keras_cifar.run import code_fingerprint, cpu_info


@lru_cache(maxsize=1)
def accelerators() -> list[str]:
    """Accelerator devices visible to the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def choose_precision(requested: str) -> tuple[str, str]:
    """The Keras dtype policy to use and why."""
    if requested not in ("auto", "mixed"):
        return requested, "requested"
    if accelerators():
        return "mixed_float16", "GPU present: float16 tensor cores"
    flags = cpu_info()["flags"]
    if "amx_bf16" in flags:
        return "mixed_bfloat16", "CPU has AMX-BF16: oneDNN runs bfloat16 faster than float32"
    if "avx512_bf16" in flags:
        return "mixed_bfloat16", "CPU has AVX-512-BF16: oneDNN runs bfloat16 faster than float32"
    if requested == "mixed":
        return "mixed_bfloat16", "requested; this CPU has no bfloat16 instructions, so expect it to be slower"
    return "float32", "CPU has no bfloat16 instructions"


def choose_jit(requested: str) -> tuple[bool, str]:
    """Whether to XLA-compile the train step, and why."""
    backend = keras.backend.backend()
    if backend == "jax":
        if requested == "off":
            raise ConfigError("the JAX backend always compiles with XLA; drop --jit-compile off")
        return True, "JAX always compiles with XLA"
    if requested != "auto":
        return requested == "on", "requested"
    if accelerators():
        return True, "GPU present: XLA fuses element-wise ops"
    return False, "CPU: XLA measured no faster than oneDNN graphs"


def environment() -> dict:
    """Library versions, backend and devices, saved in config.json so a result can be traced to its setup."""
    import numpy

    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": numpy.__version__}
    for name in ("tensorflow", "jax"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "cpu": cpu_info(),
        "accelerators": accelerators(),
        "platform": platform.platform(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "code": code_fingerprint(),
    }
