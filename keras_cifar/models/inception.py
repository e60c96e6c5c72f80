"""GoogLeNet / Inception-v1 (Szegedy et al., 2014) for 32×32 images.

The ImageNet stem (7×7 stride-2 conv, pools, 3×3 conv) would reduce a 32×32 image to 4×4 before the
first module; here a single 3×3 conv with 192 filters replaces it, so modules 3, 4 and 5 work at 32,
16 and 8 pixels. Every convolution is followed by batch norm, which makes the auxiliary classifiers
of the original unnecessary.
"""

import keras

from keras_cifar.models.common import (
    BN_MOMENTUM,
    classification_head,
    conv_bn_act,
    image_input,
    scaled,
)

# Filters of each module: (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool projection), as in the paper.
# Modules are grouped by resolution; a stride-2 max-pool sits between groups.
MODULES = (
    {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64)},
    {
        "4a": (192, 96, 208, 16, 48, 64),
        "4b": (160, 112, 224, 24, 64, 64),
        "4c": (128, 128, 256, 24, 64, 64),
        "4d": (112, 144, 288, 32, 64, 64),
        "4e": (256, 160, 320, 32, 128, 128),
    },
    {"5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)},
)


def inception_module(x, filters, name, bn_momentum=BN_MOMENTUM):
    """Four parallel branches with different receptive fields, concatenated along channels.

    The "5×5" branch is two stacked 3×3 convolutions: the same receptive field with fewer weights.
    The 1×1 reductions keep the 3×3 convolutions cheap.
    """
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = filters
    branch1 = conv_bn_act(x, n1x1, 1, name=f"{name}_1x1", bn_momentum=bn_momentum)

    branch2 = conv_bn_act(x, n3x3_reduce, 1, name=f"{name}_3x3_reduce", bn_momentum=bn_momentum)
    branch2 = conv_bn_act(branch2, n3x3, 3, name=f"{name}_3x3", bn_momentum=bn_momentum)

    branch3 = conv_bn_act(x, n5x5_reduce, 1, name=f"{name}_5x5_reduce", bn_momentum=bn_momentum)
    branch3 = conv_bn_act(branch3, n5x5, 3, name=f"{name}_5x5_1", bn_momentum=bn_momentum)
    branch3 = conv_bn_act(branch3, n5x5, 3, name=f"{name}_5x5_2", bn_momentum=bn_momentum)

    branch4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch4 = conv_bn_act(branch4, pool_proj, 1, name=f"{name}_pool_proj", bn_momentum=bn_momentum)

    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def inception(width_multiplier=1.0, num_classes=10, augmentation=None, dropout=0.0, bn_momentum=BN_MOMENTUM):
    """GoogLeNet for CIFAR: nine Inception modules, about 6.2 M parameters at width 1.0."""
    inputs, x = image_input(augmentation)
    x = conv_bn_act(x, scaled(192, width_multiplier), 3, name="stem", bn_momentum=bn_momentum)
    for group, modules in enumerate(MODULES):
        if group > 0:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{group + 2}")(x)
        for module_name, filters in modules.items():
            x = inception_module(
                x,
                [scaled(f, width_multiplier) for f in filters],
                name=f"inception{module_name}",
                bn_momentum=bn_momentum,
            )
    outputs = classification_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name="inception")
