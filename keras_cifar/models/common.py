"""Pieces every architecture shares: the input and normalisation, the conv-BN-ReLU unit and the head.

Every builder in this package goes through these helpers so that all models take the same input
(raw 0–255 RGB), normalise it the same way, and end in the same float32 softmax head.
"""

import keras

from keras_cifar.models.layers import BatchNorm, Conv2D

IMAGE_SHAPE = (32, 32, 3)

# Per-channel CIFAR-10 training-set statistics in 0–255 pixel units, so a saved model takes raw RGB.
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)

# PyTorch's BatchNorm defaults: Keras's momentum 0.99 leaves the moving statistics near their initial
# values after a short run, so inference would use the wrong statistics.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def scaled(channels, width_multiplier):
    """Scales a channel count by the width multiplier.

    Plain rounding (not rounding up to a multiple of 8) keeps every layer at exactly `channels * w`, so
    parameter counts fall as w**2 and widths stay comparable across architectures; multiples of 8 only
    pay off on accelerators with tensor cores, and this project trains mostly on CPUs.
    """
    return max(1, int(round(channels * width_multiplier)))


def image_input(augmentation=None):
    """Returns `(inputs, x)`: the raw 0–255 RGB input and the normalised tensor fed to the network.

    Normalisation lives inside the model so that an exported model takes plain pixels. It runs in
    float32 even under a mixed-precision policy: bfloat16 cannot represent 125.3 or 0.3 precisely.
    `augmentation` is any layer that is active only in training (Keras random preprocessing layers are).
    """
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    x = inputs
    if augmentation is not None:
        x = augmentation(x)
    x = keras.layers.Normalization(
        mean=CIFAR10_MEAN,
        variance=[s**2 for s in CIFAR10_STD],
        dtype="float32",
        name="normalize",
    )(x)
    return inputs, x


def conv_bn_act(
    x,
    filters,
    kernel_size,
    strides=1,
    name=None,
    bn_momentum=BN_MOMENTUM,
    activation="relu",
    gamma_initializer="ones",
):
    """Conv2D → BatchNormalization → activation, the unit every architecture here is made of.

    The convolution has no bias because the batch norm's beta makes it redundant. `activation=None`
    leaves the output linear (the last unit of a residual branch, a projection shortcut);
    `gamma_initializer="zeros"` makes a residual branch start as the identity.
    """
    x = Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = BatchNorm(
        momentum=bn_momentum,
        epsilon=BN_EPSILON,
        gamma_initializer=gamma_initializer,
        name=f"{name}_bn",
    )(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def classification_head(x, num_classes, dropout=0.0):
    """Global average pooling → optional dropout → float32 logits → float32 softmax.

    The logits and probabilities are float32 whatever the global dtype policy, so under
    `mixed_bfloat16` the loss is still computed in full precision.
    """
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def scaled_logits_head(x, num_classes, logit_scale, dropout=0.0):
    """Flattened features → optional dropout → bias-free float32 logits × `logit_scale` → softmax.

    The fast nets' head: a fixed logit temperature instead of a learnt bias suits their short schedules.
    """
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, dtype="float32", name="logits")(x)
    x = keras.layers.Rescaling(logit_scale, dtype="float32", name="logit_scale")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
