"""ResNet-9, the Myrtle.ai DAWNBench network (Page, 2018): 94 % on CIFAR-10 in 24 epochs.

Eight conv-BN-ReLU units, three poolings and two residual pairs: few layers at each resolution, so most of
its FLOPs do useful work, which is why it trains fast on any hardware.
"""

import keras

from keras_cifar.models.common import BN_MOMENTUM, conv_bn_act, image_input, scaled, scaled_logits_head

WIDTHS = (64, 128, 256, 512)


def residual_pair(x, filters, bn_momentum, name):
    """Two conv-BN-ReLU units added back to their input."""
    y = conv_bn_act(x, filters, 3, name=f"{name}_1", bn_momentum=bn_momentum)
    y = conv_bn_act(y, filters, 3, name=f"{name}_2", bn_momentum=bn_momentum)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def conv_pool(x, filters, bn_momentum, name):
    x = conv_bn_act(x, filters, 3, name=name, bn_momentum=bn_momentum)
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def resnet9(
    width_multiplier=1.0, num_classes=10, augmentation=None, dropout=0.0, bn_momentum=BN_MOMENTUM, logit_scale=0.125
):
    """prep → (conv-pool + residual) → conv-pool → (conv-pool + residual) → global max-pool → scaled logits."""
    w = [scaled(c, width_multiplier) for c in WIDTHS]
    inputs, x = image_input(augmentation)
    x = conv_bn_act(x, w[0], 3, name="prep", bn_momentum=bn_momentum)
    x = conv_pool(x, w[1], bn_momentum, name="layer1")
    x = residual_pair(x, w[1], bn_momentum, name="layer1_res")
    x = conv_pool(x, w[2], bn_momentum, name="layer2")
    x = conv_pool(x, w[3], bn_momentum, name="layer3")
    x = residual_pair(x, w[3], bn_momentum, name="layer3_res")
    x = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    outputs = scaled_logits_head(x, num_classes, logit_scale, dropout)
    return keras.Model(inputs, outputs, name="resnet9")
