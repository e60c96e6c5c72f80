"""From loaded arrays to the three `tf.data` pipelines a run uses.

The validation split is drawn from the training set, stratified and seeded, so early stopping, model
selection and tuning never see the test set; the test set is read once, for the final report.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from keras_cifar.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Split:
    """Arrays of one run after the validation split and the user's limits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def stratified_holdout(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of `size` images with every class equally represented (to within one), reproducible by seed."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = np.full(len(classes), size // len(classes))
    per_class[: size % len(classes)] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in zip(classes, per_class)]
    return np.sort(np.concatenate(picked))


def split_data(data, val_split=5000, seed=0, train_limit=None, val_limit=None, test_limit=None) -> Split:
    """Hold out `val_split` training images, then keep the first N of each part if a limit is given."""
    if val_split >= len(data.y_train):
        raise ConfigError(f"val_split={val_split} leaves no training images (the training set has {len(data.y_train)})")
    val_index = stratified_holdout(data.y_train, val_split, seed) if val_split else np.array([], dtype=np.int64)
    train_mask = np.ones(len(data.y_train), dtype=bool)
    train_mask[val_index] = False
    return Split(
        x_train=data.x_train[train_mask][:train_limit],
        y_train=data.y_train[train_mask][:train_limit],
        x_val=data.x_train[val_index][:val_limit],
        y_val=data.y_train[val_index][:val_limit],
        x_test=data.x_test[:test_limit],
        y_test=data.y_test[:test_limit],
    )


# Batches prepared at once, and ready ahead of the model. Each batch-level map takes 1-3 % of a train step, so
# two in flight keep any model here fed (benchmarks/input_pipeline.py).
PARALLEL_BATCHES = 2


def _fixed_parallelism(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Prefetch with tf.data's autotuning off.

    With it on, Keras's new iterator at each epoch start waits for the old one's autotuning thread to stop,
    with the CPU idle: 20-25 s at the start of about one epoch in three of the fast recipe (py-spy: the main
    thread in ~IteratorResource, joining an UnboundedThreadPool thread), 10-20 % of its training time.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PARALLEL_BATCHES).with_options(options)


def _as_model_inputs(num_classes):
    """uint8 images to float32 0-255 (the model normalises), labels to one-hot for label smoothing."""

    def convert(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)

    return convert


class AlternatingFlip:
    """airbench's alternating flip: a seeded random half of the training images is mirrored once, and in every
    odd epoch the whole set is mirrored, so each image is seen both ways in every pair of epochs, where random
    flipping shows the same view twice in a row half the time.

    `prepare` mirrors the half; `callback()` tells the pipeline the epoch. A new `tf.data` iterator is made
    at each epoch start, after `on_epoch_begin`, so a batch never mixes two epochs' parity.
    """

    def __init__(self, seed=0):
        self.seed = seed
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        mirrored = np.random.default_rng(self.seed).random(len(images)) < 0.5
        out = images.copy()
        out[mirrored] = out[mirrored][:, :, ::-1]
        return out

    def __call__(self, images):
        return tf.cond(self.epoch % 2 == 1, lambda: tf.reverse(images, axis=[2]), lambda: images)

    def callback(self):
        import keras

        return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.epoch.assign(epoch))


def steps_per_epoch(train_images: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Training steps in one pass over `train_images`, the unit every schedule is planned in."""
    if drop_remainder and train_images < batch_size:
        raise ConfigError(
            f"drop_remainder with {train_images} training images and batch_size {batch_size} leaves no "
            "full batch: lower --batch-size or turn drop_remainder off"
        )
    return train_images // batch_size if drop_remainder else -(-train_images // batch_size)


def training_dataset(
    x,
    y,
    batch_size,
    num_classes=10,
    augmentation=None,
    seed=0,
    alternating_flip: AlternatingFlip | None = None,
    drop_remainder=False,
    label_mixing=None,
) -> tf.data.Dataset:
    """Shuffle, batch, augment whole batches in parallel, prefetch.

    The arrays are already in memory, which is what `cache()` would buy; augmenting after batching runs each
    layer once per batch (per-image randomness, vectorised ops) instead of once per image. With
    `alternating_flip`, `x` must come from its `prepare`. `drop_remainder` gives `steps_per_epoch(len(y),
    batch_size, True)` equal batches. `label_mixing` (MixUp, CutMix) runs last, on the augmented batch and its
    one-hot labels.
    """
    all_images, all_labels, convert = tf.constant(x), tf.constant(y), _as_model_inputs(num_classes)

    def batch_of(index):
        images, labels = convert(tf.gather(all_images, index), tf.gather(all_labels, index))
        if alternating_flip is not None:
            images = alternating_flip(images)
        if augmentation is not None:
            images = augmentation(images, training=True)
        if label_mixing is not None:
            images, labels = label_mixing(images, labels)
        return images, labels

    # Shuffling indices and gathering whole batches, rather than shuffling 50,000 image tensors one by one,
    # halves the pipeline's CPU per epoch (2.3 -> 0.9-1.3 s) and the wait for an epoch's first batch.
    ds = tf.data.Dataset.range(len(y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(batch_of, num_parallel_calls=PARALLEL_BATCHES)
    return _fixed_parallelism(ds)


def evaluation_dataset(x, y, batch_size, num_classes=10) -> tf.data.Dataset:
    """Batches in order, no augmentation."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return _fixed_parallelism(ds.map(_as_model_inputs(num_classes), num_parallel_calls=PARALLEL_BATCHES))
