"""The airbench94 network (Jordan, 2024, KellerJordan/cifar10-airbench), written for Keras.

Built for accuracy per FLOP: a frozen 2×2 patch-whitening convolution, then three conv-pool-BN-GELU groups
and scaled logits. 94 % on the original CIFAR-10 in about 10 epochs on a GPU; on a CPU it is the net that
learns most per minute. The whitening kernel depends on the data: `keras_cifar.training.whitening` fills
it from training images before the first step (the model itself never reads data).
"""

import math

import keras
import numpy as np

from keras_cifar.errors import ConfigError
from keras_cifar.models.common import image_input, scaled, scaled_logits_head
from keras_cifar.models.layers import GELU, BatchNorm, Conv2D, SiLU

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
# Twice the patch dimension: each eigenvector is used with both signs, so GELU keeps both halves.
WHITEN_FILTERS = 2 * 3 * WHITEN_KERNEL**2
ACTIVATIONS = {"gelu": GELU, "silu": SiLU}


@keras.saving.register_keras_serializable(package="keras_cifar")
class PartialIdentity(keras.initializers.Initializer):
    """PyTorch's default conv initialisation, with the first `in_channels` filters set to the identity.

    A conv that starts as (partly) the identity passes its input through at first, which lets a net with
    no residual connections train fast from the first step (airbench's dirac initialisation).
    """

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        bound = 1.0 / math.sqrt(kh * kw * cin)
        base = keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.seed)
        identity = np.zeros(shape, dtype="float32")
        n = min(cin, cout)
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep_identity = np.zeros(shape, dtype=bool)
        keep_identity[..., :n] = True
        return keras.ops.where(keep_identity, keras.ops.cast(identity, base.dtype), base)

    def get_config(self):
        return {"seed": self.seed}


def batch_norm(x, bn_momentum, name):
    """Batch norm with a learnt shift but no learnt scale: GELU after it needs only the shift."""
    return BatchNorm(momentum=bn_momentum, epsilon=1e-12, scale=False, name=name)(x)


def conv3x3(x, filters, name):
    return Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=PartialIdentity(), name=name)(x)


def conv_group(x, filters, bn_momentum, name, activation="gelu"):
    """conv → max-pool → BN → GELU → conv → BN → GELU; pooling before the first BN halves its cost."""
    x = conv3x3(x, filters, f"{name}_conv1")
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = batch_norm(x, bn_momentum, f"{name}_bn1")
    x = ACTIVATIONS[activation](name=f"{name}_{activation}1")(x)
    x = conv3x3(x, filters, f"{name}_conv2")
    x = batch_norm(x, bn_momentum, f"{name}_bn2")
    return ACTIVATIONS[activation](name=f"{name}_{activation}2")(x)


def whitening(x, activation="gelu"):
    """The frozen 2×2 whitening conv; its bias stays trainable (airbench trains it for the first epochs)."""
    layer = keras.layers.Conv2D(
        WHITEN_FILTERS, WHITEN_KERNEL, padding="valid", use_bias=True, dtype="float32", name="whiten"
    )
    x = layer(x)
    layer.kernel.trainable = False
    return ACTIVATIONS[activation](name=f"whiten_{activation}")(x)


def airbench(
    width_multiplier=1.0,
    num_classes=10,
    augmentation=None,
    dropout=0.0,
    bn_momentum=0.6,
    widths=WIDTHS,
    logit_scale=1 / 9,
    activation="gelu",
):
    """airbench94 at `widths` (64, 256, 256) × `width_multiplier`; `bn_momentum` 0.6 is airbench's (PyTorch 0.4).

    `logit_scale` divides the logits, a fixed temperature that the short schedule measurably prefers;
    `activation` is airbench's "gelu" or "silu".
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"airbench's activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    inputs, x = image_input(augmentation)
    x = whitening(x, activation)
    for i, width in enumerate(widths, start=1):
        x = conv_group(x, scaled(width, width_multiplier), bn_momentum, name=f"block{i}", activation=activation)
    x = keras.layers.MaxPooling2D(3, name="final_pool")(x)
    outputs = scaled_logits_head(x, num_classes, logit_scale, dropout)
    return keras.Model(inputs, outputs, name="airbench")
