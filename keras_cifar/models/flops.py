"""FLOPs per image of a built model, counted from its layers' shapes (no profiler, any backend)."""

import math

import keras


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def flops_per_image(model: keras.Model) -> int:
    """Two FLOPs per multiply-add of every convolution and dense layer, for one image at inference.

    Batch norm, activations and pooling add about 1 % on these nets and are left out, as in the usual
    published counts (airbench's 0.36 PFLOPs per training run counts the same way).
    """
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, _ = layer.kernel.shape
            out = layer.output.shape  # (None, H, W, C)
            total += 2 * kh * kw * cin * math.prod(out[1:])
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout * math.prod(layer.output.shape[1:-1])
    return int(total)
