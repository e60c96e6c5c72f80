"""ResNet for 32×32 images (He et al., 2015), in the CIFAR form popularised by kuangliu/pytorch-cifar.

The ImageNet stem (7×7 stride-2 conv and max-pool) would shrink a 32×32 image to 8×8 before the first
stage; here the stem is a single 3×3 stride-1 conv, so the four stages see 32, 16, 8 and 4 pixels.
"""

import keras

from keras_cifar.models.common import (
    BN_MOMENTUM,
    classification_head,
    conv_bn_act,
    image_input,
    scaled,
)

STAGE_FILTERS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BOTTLENECK_EXPANSION = 4


def shortcut(x, filters, strides, name, bn_momentum=BN_MOMENTUM):
    """Identity when the shape is unchanged, else a 1×1 conv-BN projection to the new shape."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    return conv_bn_act(
        x, filters, 1, strides=strides, name=f"{name}_shortcut", bn_momentum=bn_momentum, activation=None
    )


def merge(residual, skip, name):
    """Adds the residual branch to the shortcut and applies the block's final ReLU."""
    x = keras.layers.Add(name=f"{name}_add")([residual, skip])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def basic_block(x, filters, strides, name, bn_momentum=BN_MOMENTUM, zero_init_residual=True):
    """Two 3×3 convolutions; the block of ResNet-18 and -34.

    With `zero_init_residual` the last batch norm starts with gamma 0, so every block begins as the
    identity and the deep network trains like a shallow one at first (Goyal et al., 2017).
    """
    skip = shortcut(x, filters, strides, name, bn_momentum)
    x = conv_bn_act(x, filters, 3, strides=strides, name=f"{name}_1", bn_momentum=bn_momentum)
    x = conv_bn_act(
        x,
        filters,
        3,
        name=f"{name}_2",
        bn_momentum=bn_momentum,
        activation=None,
        gamma_initializer="zeros" if zero_init_residual else "ones",
    )
    return merge(x, skip, name)


def bottleneck_block(x, filters, strides, name, bn_momentum=BN_MOMENTUM, zero_init_residual=True):
    """1×1 reduce → 3×3 → 1×1 expand to `4 * filters`; the block of ResNet-50 and -101.

    The stride sits on the 3×3 convolution (ResNet v1.5), which loses less information than striding
    the 1×1. `zero_init_residual` as in `basic_block`.
    """
    out_filters = filters * BOTTLENECK_EXPANSION
    skip = shortcut(x, out_filters, strides, name, bn_momentum)
    x = conv_bn_act(x, filters, 1, name=f"{name}_1", bn_momentum=bn_momentum)
    x = conv_bn_act(x, filters, 3, strides=strides, name=f"{name}_2", bn_momentum=bn_momentum)
    x = conv_bn_act(
        x,
        out_filters,
        1,
        name=f"{name}_3",
        bn_momentum=bn_momentum,
        activation=None,
        gamma_initializer="zeros" if zero_init_residual else "ones",
    )
    return merge(x, skip, name)


def resnet_stage(x, block, filters, num_blocks, strides, name, bn_momentum=BN_MOMENTUM, zero_init_residual=True):
    """`num_blocks` blocks at one resolution; only the first one changes stride and width."""
    for index in range(1, num_blocks + 1):
        x = block(
            x,
            filters,
            strides if index == 1 else 1,
            name=f"{name}_block{index}",
            bn_momentum=bn_momentum,
            zero_init_residual=zero_init_residual,
        )
    return x


def resnet(
    block,
    blocks_per_stage,
    name,
    width_multiplier=1.0,
    num_classes=10,
    augmentation=None,
    dropout=0.0,
    bn_momentum=BN_MOMENTUM,
    zero_init_residual=True,
):
    """A CIFAR ResNet made of `block`s, `blocks_per_stage` of them in each of the four stages."""
    inputs, x = image_input(augmentation)
    x = conv_bn_act(x, scaled(64, width_multiplier), 3, name="stem", bn_momentum=bn_momentum)
    for stage, (filters, num_blocks, strides) in enumerate(
        zip(STAGE_FILTERS, blocks_per_stage, STAGE_STRIDES), start=1
    ):
        x = resnet_stage(
            x,
            block,
            scaled(filters, width_multiplier),
            num_blocks,
            strides,
            name=f"stage{stage}",
            bn_momentum=bn_momentum,
            zero_init_residual=zero_init_residual,
        )
    outputs = classification_head(x, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)


def _variant(block, blocks_per_stage, name, doc):
    """A named builder with the registry's common signature, for one depth of ResNet."""

    def build(
        width_multiplier=1.0,
        num_classes=10,
        augmentation=None,
        dropout=0.0,
        bn_momentum=BN_MOMENTUM,
        zero_init_residual=True,
    ):
        return resnet(
            block,
            blocks_per_stage,
            name,
            width_multiplier,
            num_classes,
            augmentation,
            dropout,
            bn_momentum,
            zero_init_residual,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return build


resnet18 = _variant(basic_block, (2, 2, 2, 2), "resnet18", "ResNet-18: basic blocks [2, 2, 2, 2], 11.2 M parameters.")
resnet34 = _variant(basic_block, (3, 4, 6, 3), "resnet34", "ResNet-34: basic blocks [3, 4, 6, 3], 21.3 M parameters.")
resnet50 = _variant(
    bottleneck_block, (3, 4, 6, 3), "resnet50", "ResNet-50: bottleneck blocks [3, 4, 6, 3], 23.5 M parameters."
)
resnet101 = _variant(
    bottleneck_block, (3, 4, 23, 3), "resnet101", "ResNet-101: bottleneck blocks [3, 4, 23, 3], 42.5 M parameters."
)
