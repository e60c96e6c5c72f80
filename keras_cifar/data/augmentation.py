"""Training-time augmentation as a stack of Keras preprocessing layers.

Every layer draws its randomness per image, and runs on whole batches, so one call augments a batch with
vectorised ops. The same stack runs either in the `tf.data` pipeline (TensorFlow backend, overlapping the
model on another core) or as the first layers of the model (any backend; Keras random layers are identity
at inference, so a saved model is unaffected).
"""

from __future__ import annotations

import keras
from keras import ops

# Mean pixel of CIFAR-10 in 0-255 units: erased patches take it, so they normalise to about zero (cutout).
ERASE_FILL = 120.0


@keras.saving.register_keras_serializable(package="keras_cifar")
class RandomPadCrop(keras.layers.Layer):
    """Pad every side, then crop back at an independent random offset per image.

    Keras's own RandomCrop draws one offset for the whole batch, which correlates a batch's images; this
    draws one per image and gathers the pixels, so it stays a handful of batched ops.
    """

    def __init__(self, padding=4, fill_mode="reflect", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.fill_mode = fill_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training or self.padding == 0:
            return images
        p = self.padding
        shape = ops.shape(images)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        mode = "constant" if self.fill_mode == "zeros" else self.fill_mode
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode=mode)
        offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
        rows = offsets[:, :1] + ops.arange(height)[None, :]
        cols = offsets[:, 1:] + ops.arange(width)[None, :]
        # One gather of pixels from the flattened padded batch, not two take_along_axis calls over index tensors
        # the size of the batch: one small index instead of two large ones (several times faster on a CPU).
        index = (ops.arange(batch)[:, None, None] * (height + 2 * p) + rows[:, :, None]) * (width + 2 * p)
        index = index + cols[:, None, :]
        pixels = ops.take(ops.reshape(padded, (-1, channels)), ops.reshape(index, (-1,)), axis=0)
        return ops.reshape(pixels, (batch, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "fill_mode": self.fill_mode, "seed": self.seed}


def build_augmentation(
    crop_padding=4,
    flip=True,
    rotation=0.0,
    translation=0.0,
    erasing=0.0,
    randaugment=0,
    randaugment_magnitude=0.5,
    brightness=0.0,
    contrast=0.0,
    seed=None,
):
    """The augmentation stack a config asks for, or None when every transform is off.

    Layers are float32 whatever the global precision policy, so pixel arithmetic is never done in bfloat16.
    """
    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, dtype="float32", name="random_flip"))
    if crop_padding:
        layers.append(RandomPadCrop(crop_padding, seed=seed, dtype="float32", name="random_pad_crop"))
    if rotation:
        layers.append(
            keras.layers.RandomRotation(
                rotation / 360.0, fill_mode="reflect", seed=seed, dtype="float32", name="random_rotation"
            )
        )
    if translation:
        layers.append(
            keras.layers.RandomTranslation(
                translation, translation, fill_mode="reflect", seed=seed, dtype="float32", name="random_translation"
            )
        )
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, seed=seed, dtype="float32", name="random_brightness"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, seed=seed, dtype="float32", name="random_contrast"))
    if randaugment:
        # Keras's RandAugment draws its operations once per call, so a batch shares them (each image its own
        # strength); per-image operations would need a loop over images.
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=randaugment,
                factor=randaugment_magnitude,
                seed=seed,
                dtype="float32",
                name="rand_augment",
            )
        )
    if erasing:
        layers.append(
            keras.layers.RandomErasing(
                factor=(erasing, erasing),
                fill_value=ERASE_FILL,
                value_range=(0, 255),
                seed=seed,
                dtype="float32",
                name="random_erasing",
            )
        )
    if not layers:
        return None
    stack = keras.Sequential(layers, name="augmentation")
    stack.dtype_policy = "float32"  # a Sequential would otherwise cast its input to the global compute dtype
    return stack


def augmentation_from_config(config):
    """The stack for a run; with alternating flip the pipeline flips, so the stack does not."""
    random_flip = config.flip and not config.alternating_flip
    return build_augmentation(
        config.crop_padding,
        random_flip,
        config.rotation,
        config.translation,
        config.erasing,
        config.randaugment,
        config.randaugment_magnitude,
        config.brightness,
        config.contrast,
        seed=config.seed,
    )


def build_label_mixing(mixup=0.0, cutmix=0.0, seed=None):
    """MixUp and/or CutMix (Keras's layers) as `mix(images, one_hot_labels) -> (images, labels)` for a batch, or
    None when both are off. With both, each batch takes one of them, at even odds (as timm does).

    They mix labels as well as pixels, so they run in the input pipeline, never inside the model.
    """
    mixers = []
    if mixup:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed, dtype="float32", name="mixup"))
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed, dtype="float32", name="cutmix"))
    if not mixers:
        return None
    choice = keras.random.SeedGenerator(seed)

    def mix(images, labels):
        def apply(mixer):
            out = mixer({"images": images, "labels": labels}, training=True)
            return out["images"], out["labels"]

        if len(mixers) == 1:
            return apply(mixers[0])
        first = keras.random.uniform((), seed=choice) < 0.5
        return ops.cond(first, lambda: apply(mixers[0]), lambda: apply(mixers[1]))

    return mix


def label_mixing_from_config(config):
    return build_label_mixing(config.mixup, config.cutmix, seed=config.seed)
