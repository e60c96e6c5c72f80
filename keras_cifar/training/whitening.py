"""Data-dependent initialisation of a patch-whitening convolution (airbench's first layer).

The layer's filters are the eigenvectors of the covariance of image patches, scaled by 1/sqrt(eigenvalue)
and used with both signs: the network starts on decorrelated, unit-variance inputs, which airbench
credits with a large part of its speed. The model names the layer; training fills it, so models never
read data.
"""

from __future__ import annotations

import keras
import numpy as np

WHITEN_LAYER = "whiten"


def whitening_kernel(images: np.ndarray, kernel_size: tuple[int, int], eps: float = 5e-4) -> np.ndarray:
    """A (kh, kw, C, 2 * kh * kw * C) kernel whitening the kh×kw patches of normalised `images` (N, H, W, C)."""
    kh, kw = kernel_size
    channels = images.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(images, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * channels).astype(np.float64)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]  # strongest direction first, as airbench orders them
    filters = (eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)).T.reshape(-1, kh, kw, channels)
    return np.concatenate([filters, -filters]).transpose(1, 2, 3, 0).astype(np.float32)


def init_whitening(model, images: np.ndarray) -> bool:
    """Fill the model's whitening layer from raw 0-255 `images`, if it has one; say whether it did."""
    names = {layer.name for layer in model.layers}
    if WHITEN_LAYER not in names:
        return False
    layer = model.get_layer(WHITEN_LAYER)
    normalised = np.asarray(model.get_layer("normalize")(images.astype(np.float32)))
    layer.kernel.assign(whitening_kernel(normalised, tuple(layer.kernel.shape[:2])))
    return True


class FreezeWhiteningBias(keras.callbacks.Callback):
    """Stops training the whitening layer's bias from epoch `epochs` on, as airbench does after 3 epochs.

    By then the bias has settled; once it is frozen nothing upstream of the first block needs a gradient,
    so the backward pass skips that block's input gradient: 189 ms of a 2.2 s airbench step (batch 1,024,
    bf16, oneDNN verbose). Only the TensorFlow trainer can change its trainable set between epochs (it
    re-traces the train step); under JAX the bias trains throughout.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        bias = self.model.get_layer(WHITEN_LAYER).bias
        if epoch >= self.epochs and bias.trainable and keras.backend.backend() == "tensorflow":
            bias.trainable = False
            self.model.make_train_function(force=True)
