"""What machine this is, and the precision and compilation that run fastest on it.

Measured with `benchmarks/train_throughput.py` (train step img/s, float32 -> mixed_bfloat16, no XLA):
- Intel Xeon with AMX-BF16 (TF 2.21, batch 256): ResNet-18 49 -> 100, airbench-like net 199 -> 428.
- AMD EPYC Zen 4 with AVX-512-BF16, no AMX: ResNet-18 56 -> 83 (batch 128), airbench 284 -> 369 and
  ResNet-9 86 -> 129 (batch 512).
- XLA on either CPU: no faster, often much slower (airbench 284 -> 200, VGG-16 101 -> 16 img/s).
So `auto` picks bfloat16 wherever the CPU has bfloat16 instructions, float16 on a GPU, float32 elsewhere,
and XLA only on GPUs.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import keras

from keras_cifar.errors import ConfigError


# /proc/cpuinfo keys that identify the CPU generation, and the names config.json gives them.
_CPU_NUMBERS = {"cpu family": "family", "model": "model_number", "stepping": "stepping"}


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model and the instruction-set flags that decide precision (Linux /proc/cpuinfo; empty elsewhere).

    The family and model numbers are kept too: a cloud VM's model name is often just "AMD EPYC", which does not
    tell a Zen 4 (family 25) from a Zen 5 (family 26), and the same recipe runs 1.5x faster on the second.
    """
    model, flags, numbers = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in _CPU_NUMBERS:
                    numbers.setdefault(_CPU_NUMBERS[key], value.strip())
                elif key == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "fma")
    return {"model": model, **numbers, "cores": os.cpu_count(), "flags": sorted(f for f in wanted if f in flags)}


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
        return "mixed_bfloat16", "CPU has AMX-BF16: oneDNN bfloat16 measured 2x float32"
    if "avx512_bf16" in flags:
        return "mixed_bfloat16", "CPU has AVX-512-BF16: oneDNN bfloat16 measured 1.3-1.5x float32"
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
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {"backend": keras.backend.backend(), "versions": versions, "cpu": cpu_info(),
            "accelerators": accelerators(), "platform": platform.platform()}
