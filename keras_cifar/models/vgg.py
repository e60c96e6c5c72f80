"""VGG for 32×32 images: five stages of 3×3 conv-BN-ReLU, each ending in a 2×2 max-pool.

After five pools the feature map is 1×1×512, so a single linear layer classifies it; the large
fully connected layers of ImageNet VGG would only add parameters here.
"""

import keras

from keras_cifar.models.common import (
    BN_MOMENTUM,
    classification_head,
    conv_bn_act,
    image_input,
    scaled,
)

STAGE_FILTERS = (64, 128, 256, 512, 512)


def vgg_stage(x, filters, num_convs, name, bn_momentum=BN_MOMENTUM):
    """`num_convs` 3×3 conv-BN-ReLU units at one resolution, then halve it."""
    for index in range(1, num_convs + 1):
        x = conv_bn_act(x, filters, 3, name=f"{name}_conv{index}", bn_momentum=bn_momentum)
    return keras.layers.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)


def vgg(
    convs_per_stage,
    name,
    width_multiplier=1.0,
    num_classes=10,
    augmentation=None,
    dropout=0.0,
    bn_momentum=BN_MOMENTUM,
):
    """A VGG whose depth is set by the number of convolutions in each of the five stages."""
    inputs, x = image_input(augmentation)
    for stage, (filters, num_convs) in enumerate(zip(STAGE_FILTERS, convs_per_stage), start=1):
        x = vgg_stage(
            x,
            scaled(filters, width_multiplier),
            num_convs,
            name=f"stage{stage}",
            bn_momentum=bn_momentum,
        )
    outputs = classification_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)


def vgg16(width_multiplier=1.0, num_classes=10, augmentation=None, dropout=0.0, bn_momentum=BN_MOMENTUM):
    """VGG-16: 13 convolutions, about 14.7 M parameters at width 1.0."""
    return vgg((2, 2, 3, 3, 3), "vgg16", width_multiplier, num_classes, augmentation, dropout, bn_momentum)


def vgg19(width_multiplier=1.0, num_classes=10, augmentation=None, dropout=0.0, bn_momentum=BN_MOMENTUM):
    """VGG-19: 16 convolutions, about 20.0 M parameters at width 1.0."""
    return vgg((2, 2, 4, 4, 4), "vgg19", width_multiplier, num_classes, augmentation, dropout, bn_momentum)
