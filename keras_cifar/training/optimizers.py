"""Optimizers: Nesterov SGD (with an optional larger LR for batch-norm shifts), Muon for conv filters, or AdamW."""

from __future__ import annotations

import math

import keras
from keras import ops

NO_DECAY = ["bias", "gamma", "beta"]

# The quintic Newton-Schulz coefficients of Muon (Jordan et al., 2024): chosen for the steepest slope at zero, so
# three iterations push every singular value into about [0.5, 1.5], which trains as well as an exact U V^T.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def is_bn_shift(variable) -> bool:
    return variable.path.endswith("/beta")


def is_conv_filter(variable) -> bool:
    return len(variable.shape) == 4


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


def frobenius_norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))  # ops.norm rejects 4-D tensors on TensorFlow


def orthogonalise(matrix, steps=3):
    """Muon's Newton-Schulz iteration: `matrix` with its singular values pushed towards 1 (about U V^T)."""
    a, b, c = NEWTON_SCHULZ
    tall = matrix.shape[0] > matrix.shape[1]
    x = ops.transpose(matrix) if tall else matrix  # the Gram matrix of the short side is the cheap one
    x = x / (frobenius_norm(x) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if tall else x


@keras.saving.register_keras_serializable(package="keras_cifar")
class MuonWithSGD(SGDWithShiftScale):
    """Muon for conv filters, the shift-scaled Nesterov SGD above for every other variable (airbench94_muon).

    A filter bank's update is its Nesterov momentum with the singular values set to about one: every direction of
    the filter space moves at the same rate, where SGD moves the few large ones and starves the rest. Before each
    step the bank is rescaled to norm sqrt(output channels), so `muon_lr` is a fixed relative step that the
    schedule decays (no weight decay is needed, and none is applied). The schedule's LR drives both halves: a
    filter's step is `muon_lr_scale` times it. In airbench94_muon this lets 8 epochs do what airbench94's 9.9 do.
    """

    def __init__(self, muon_lr_scale=1.0, muon_momentum=0.6, ns_steps=3, **kwargs):
        super().__init__(**kwargs)
        if not self.momentum:
            raise ValueError("MuonWithSGD keeps its momentum buffers in SGD's: give a momentum > 0")
        self.muon_lr_scale = float(muon_lr_scale)
        self.muon_momentum = float(muon_momentum)
        self.ns_steps = int(ns_steps)

    def update_step(self, gradient, variable, learning_rate):
        if not is_conv_filter(variable):
            return super().update_step(gradient, variable, learning_rate)
        buffer = self.momentums[self._get_variable_index(variable)]
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(buffer, buffer * self.muon_momentum + gradient)
        nesterov = gradient + self.muon_momentum * buffer
        shape, out_channels = variable.shape, variable.shape[-1]
        self.assign(variable, variable * (math.sqrt(out_channels) / frobenius_norm(variable)))
        update = ops.reshape(orthogonalise(ops.reshape(nesterov, (-1, out_channels)), self.ns_steps), shape)
        lr = ops.cast(learning_rate, variable.dtype) * self.muon_lr_scale
        self.assign_sub(variable, lr * update)

    def _use_weight_decay(self, variable):
        return not is_conv_filter(variable) and super()._use_weight_decay(variable)

    def get_config(self):
        return {
            **super().get_config(),
            "muon_lr_scale": self.muon_lr_scale,
            "muon_momentum": self.muon_momentum,
            "ns_steps": self.ns_steps,
        }


def build_optimizer(config, lr):
    """Nesterov SGD, Muon + SGD, or AdamW; biases and batch-norm parameters are not decayed.

    Keras decays weights outside the momentum (`w -= lr * wd * w`). PyTorch's SGD adds `wd * w` to the
    gradient, which momentum then amplifies by 1 / (1 - momentum) in steady state; dividing by that factor
    keeps the well-known PyTorch recipes' `weight_decay` values meaning the same here.
    """
    if config.optimizer in ("sgd", "muon"):
        sgd = dict(
            shift_lr_scale=config.bias_lr_scale,
            learning_rate=lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay / (1.0 - config.momentum) or None,
        )
        optimizer = (
            SGDWithShiftScale(**sgd)
            if config.optimizer == "sgd"
            else MuonWithSGD(muon_lr_scale=config.muon_lr / config.lr, muon_momentum=config.muon_momentum, **sgd)
        )
    else:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
