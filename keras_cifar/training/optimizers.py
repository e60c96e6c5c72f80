"""Optimizers: Nesterov SGD (with an optional larger LR for batch-norm shifts) or AdamW."""

from __future__ import annotations

import keras

NO_DECAY = ["bias", "gamma", "beta"]


def is_bn_shift(variable) -> bool:
    return variable.path.endswith("/beta")


@keras.saving.register_keras_serializable(package="keras_cifar")
class SGDWithShiftScale(keras.optimizers.SGD):
    """SGD whose batch-norm shifts (beta) take `shift_lr_scale` times the learning rate.

    With plain (momentum) SGD, scaling a gradient scales its update, so this is a per-variable LR without
    parameter groups. airbench uses 64: the shifts are few, cheap to move, and set the GELU operating points.
    """

    def __init__(self, shift_lr_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.shift_lr_scale = float(shift_lr_scale)

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        grads = [g * self.shift_lr_scale if g is not None and is_bn_shift(v) else g for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "shift_lr_scale": self.shift_lr_scale}


def build_optimizer(config, lr):
    """Nesterov SGD or AdamW; biases and batch-norm parameters are not decayed.

    Keras decays weights outside the momentum (`w -= lr * wd * w`). PyTorch's SGD adds `wd * w` to the
    gradient, which momentum then amplifies by 1 / (1 - momentum) in steady state; dividing by that factor
    keeps the well-known PyTorch recipes' `weight_decay` values meaning the same here.
    """
    if config.optimizer == "sgd":
        optimizer = SGDWithShiftScale(shift_lr_scale=config.bias_lr_scale, learning_rate=lr, momentum=config.momentum,
                                      nesterov=True, weight_decay=config.weight_decay / (1.0 - config.momentum) or None)
    else:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
