"""Config layering, the split, augmentation, schedules and host choices: the pieces a run is made of."""

import argparse
import io
import json
import re

import numpy as np
import pytest

from keras_cifar.config import TrainConfig, add_config_arguments, read_config_file, resolve_config
from keras_cifar.data import (
    RandomPadCrop,
    build_augmentation,
    build_label_mixing,
    split_data,
    steps_per_epoch,
    stratified_holdout,
    training_dataset,
)
from keras_cifar.errors import ConfigError
from keras_cifar.training import host
from keras_cifar.training.schedules import WarmupSchedule


def parse(*flags):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(list(flags))


# --- config -----------------------------------------------------------------------------------------------


def test_layers_resolve_in_order(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("arch: vgg16\nlr: 0.02\nepochs: 7\n")
    config = resolve_config(parse("--config", str(config_file), "--epochs", "3"))
    assert config.arch == "vgg16"
    assert config.lr == 0.02  # the file beats the vgg16 recipe's 0.05
    assert config.epochs == 3  # the typed flag beats the file
    assert config.erasing == 0.5  # from the vgg16 recipe, beating the dataclass default 0.0
    assert TrainConfig().erasing == 0.0


def test_long_recipe_fits_a_budget_unless_epochs_are_typed():
    assert resolve_config(parse("--recipe", "long")).time_budget == 57
    typed = resolve_config(parse("--recipe", "long", "--epochs", "2"))
    assert typed.time_budget is None and typed.epochs == 2 and typed.width_multiplier == 1.5
    assert resolve_config(parse("--recipe", "long", "--epochs", "2", "--time-budget", "5")).time_budget == 5


def test_run_config_json_is_a_valid_config(tmp_path):
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"config": TrainConfig(arch="resnet34", lr=0.3).to_dict(), "runtime": {}}))
    assert read_config_file(saved)["lr"] == 0.3
    assert resolve_config(parse("--config", str(saved))).arch == "resnet34"


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rate: 0.1\n", "unknown setting 'learning_rate'. Did you mean 'lr'?"),
        ("epochs: ten\n", "'epochs' should be float"),
        ("flip: 1\n", "'flip' should be bool"),
        ("lr: -1\n", "lr must be positive"),
        ("optimizer: adam\n", "optimizer must be one of sgd, muon, adamw"),
        ("erasing: 1.5\n", "erasing must be in [0, 1)"),
        ("mixup: 1.5\n", "mixup must be in [0, 1]"),
        ("randaugment: -1\n", "randaugment must be >= 0"),
        ("optimizer: muon\nmomentum: 0\n", "momentum must be > 0"),
        ("optimizer: muon\nmuon_momentum: 1\n", "muon_momentum must be in [0, 1)"),
        ("optimizer: adamw\nbias_lr_scale: 64\n", "bias_lr_scale only applies to SGD and muon"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(parse("--config", str(path)))


def test_unknown_arch_and_recipe_list_the_choices():
    with pytest.raises(ConfigError, match="resnet18"):
        resolve_config(parse("--arch", "nope"))
    with pytest.raises(ConfigError, match="Choose one of: .*vgg16"):
        resolve_config(argparse.Namespace(recipe="nope", config=None))


# --- split ------------------------------------------------------------------------------------------------


def test_validation_split_is_stratified_disjoint_and_seeded(cifar):
    split = split_data(cifar, val_split=5000, seed=3)
    assert split.sizes() == {"train": 45000, "val": 5000, "test": 10000}
    assert np.bincount(split.y_val).tolist() == [500] * 10
    again = stratified_holdout(cifar.y_train, 5000, seed=3)
    other = stratified_holdout(cifar.y_train, 5000, seed=4)
    assert np.array_equal(again, stratified_holdout(cifar.y_train, 5000, seed=3))
    assert not np.array_equal(again, other)
    train_index = np.setdiff1d(np.arange(50000), again)
    assert np.array_equal(split.x_train[:5], cifar.x_train[train_index[:5]])
    assert len(np.intersect1d(train_index, again)) == 0


def test_limits_take_the_first_images(cifar):
    split = split_data(cifar, val_split=1000, seed=0, train_limit=300, val_limit=50, test_limit=70)
    assert split.sizes() == {"train": 300, "val": 50, "test": 70}
    assert np.array_equal(split.x_test, cifar.x_test[:70])
    with pytest.raises(ConfigError, match="leaves no training images"):
        split_data(cifar, val_split=50000)


# --- augmentation -----------------------------------------------------------------------------------------


def test_pad_crop_draws_an_offset_per_image():
    images = np.zeros((64, 32, 32, 1), "float32")
    images[:, 16, 16, 0] = 1.0  # a dot in the middle of every image
    out = np.asarray(RandomPadCrop(4, seed=0)(images, training=True))
    positions = {tuple(np.argwhere(o[..., 0] == 1.0)[0]) for o in out}
    assert len(positions) > 20  # one offset per batch would give a single position
    assert all(12 <= r <= 20 and 12 <= c <= 20 for r, c in positions)
    assert np.array_equal(np.asarray(RandomPadCrop(4)(images, training=False)), images)


def test_pad_crop_output_is_a_window_of_the_reflect_padded_image():
    images = np.random.default_rng(0).uniform(0, 255, (16, 8, 6, 3)).astype("float32")  # non-square, 3 channels
    out = np.asarray(RandomPadCrop(2, seed=1)(images, training=True))
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    windows = [[padded[i, r : r + 8, c : c + 6] for r in range(5) for c in range(5)] for i in range(16)]
    assert all(any(np.array_equal(o, w) for w in ws) for o, ws in zip(out, windows))


def test_augmentation_stack_follows_the_switches():
    assert build_augmentation(crop_padding=0, flip=False) is None
    stack = build_augmentation(
        crop_padding=4,
        flip=True,
        rotation=10,
        translation=0.1,
        erasing=0.5,
        randaugment=2,
        brightness=0.1,
        contrast=0.1,
        seed=1,
    )
    names = [layer.name for layer in stack.layers]
    assert names == [
        "random_flip",
        "random_pad_crop",
        "random_rotation",
        "random_translation",
        "random_brightness",
        "random_contrast",
        "rand_augment",
        "random_erasing",
    ]
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    assert np.array_equal(np.asarray(stack(images, training=False)), images)
    changed = np.asarray(stack(images, training=True))
    assert changed.shape == images.shape and not np.allclose(changed, images)


def test_training_dataset_augments_batches_and_one_hots_labels(cifar):
    augmentation = build_augmentation(crop_padding=4, flip=True, seed=0)
    ds = training_dataset(cifar.x_train[:100], cifar.y_train[:100], batch_size=32, augmentation=augmentation)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [32, 32, 32, 4]
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3) and 0 <= images.min() <= images.max() <= 255
    assert labels.shape == (32, 10) and np.all(labels.sum(axis=1) == 1)


# Keras 3.15's CutMix weighs the labels by its box's nominal area, which can exceed the pasted pixels by up to two
# rows or columns of the image (1/16 of it) when the box spans the whole image; MixUp's weights are exact.
@pytest.mark.parametrize("mixup, cutmix, tolerance", [(0.4, 0.0, 0.002), (0.0, 1.0, 0.07), (0.4, 1.0, 0.07)])
def test_mixup_and_cutmix_mix_labels_by_the_share_of_pixels(mixup, cutmix, tolerance):
    """Image k is flat grey k * 20 with label k: a mixed image's mean pixel must equal its label's weights times
    those greys, the proof that labels were mixed with the same weights as the pixels (MixUp's blend, CutMix's box)."""
    assert build_label_mixing(0.0, 0.0) is None
    greys = 20.0 * np.arange(10, dtype="float32")
    images = np.broadcast_to(greys[:, None, None, None], (10, 32, 32, 3)).copy()
    labels = np.eye(10, dtype="float32")
    mix = build_label_mixing(mixup, cutmix, seed=0)
    mixed = 0
    for _ in range(4):
        out_images, out_labels = (np.asarray(t) for t in mix(images, labels))
        assert out_images.shape == images.shape and np.allclose(out_labels.sum(axis=1), 1, atol=1e-5)
        assert np.allclose(out_images.mean(axis=(1, 2, 3)), out_labels @ greys, atol=tolerance * greys.max())
        mixed += int((out_labels.max(axis=1) < 0.99).sum())
    assert mixed > 0  # some images really were mixed


def test_training_dataset_mixes_after_augmenting(cifar):
    ds = training_dataset(
        cifar.x_train[:64],
        cifar.y_train[:64],
        batch_size=32,
        augmentation=build_augmentation(crop_padding=4, flip=True, randaugment=2, seed=0),
        label_mixing=build_label_mixing(mixup=0.4, seed=0),
    )
    for images, labels in ds.as_numpy_iterator():
        # a convex mix of 0-255 pixels stays in range up to float32 rounding (255.00002 seen)
        assert images.shape == (32, 32, 32, 3) and -1e-3 <= images.min() <= images.max() <= 255 + 1e-3
        assert labels.shape == (32, 10) and np.allclose(labels.sum(axis=1), 1, atol=1e-5)


def test_label_mixing_needs_the_input_pipeline():
    from keras_cifar.training.loop import resolve_runtime

    config = resolve_config(parse("--arch", "resnet18", "--mixup", "0.2", "--augment-in-model", "on"))
    with pytest.raises(ConfigError, match="mixup and cutmix mix labels too"):
        resolve_runtime(config)


def test_an_epoch_shows_every_image_once_in_a_seeded_order(cifar):
    x, y = cifar.x_train[:100], cifar.y_train[:100]

    def epoch(seed):
        batches = list(training_dataset(x, y, batch_size=32, seed=seed).as_numpy_iterator())
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]).argmax(axis=1)

    images, labels = epoch(seed=3)
    order = [int(np.flatnonzero((x == image.astype(np.uint8)).all(axis=(1, 2, 3)))[0]) for image in images]
    assert sorted(order) == list(range(100)) and order != list(range(100))  # a permutation, and shuffled
    assert np.array_equal(labels, y[order])  # each image keeps its label
    assert np.array_equal(epoch(seed=3)[0], images) and not np.array_equal(epoch(seed=4)[0], images)


def test_drop_remainder_gives_equal_batches_and_counts_them(cifar):
    ds = training_dataset(cifar.x_train[:100], cifar.y_train[:100], batch_size=32, drop_remainder=True)
    assert [len(b[0]) for b in ds.as_numpy_iterator()] == [32, 32, 32]
    assert (steps_per_epoch(100, 32), steps_per_epoch(100, 32, drop_remainder=True)) == (4, 3)
    with pytest.raises(ConfigError, match="leaves no full batch"):
        steps_per_epoch(20, 32, drop_remainder=True)


def test_too_few_images_for_a_full_batch_fail_before_the_run_directory(cifar_dir, tmp_path):
    from keras_cifar.training import train

    config = resolve_config(
        parse(
            "--recipe", "fast", "--train-limit", "500", "--data-dir", str(cifar_dir), "--run-dir", str(tmp_path / "run")
        )
    )
    with pytest.raises(ConfigError, match="leaves no full batch"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_an_option_the_net_does_not_have_fails_before_the_run_directory(cifar_dir, tmp_path):
    from keras_cifar.training import train

    run_dir = tmp_path / "run"
    config = resolve_config(
        parse("--arch", "vgg16", "--activation", "silu", "--data-dir", str(cifar_dir), "--run-dir", str(run_dir))
    )
    with pytest.raises(ConfigError, match="'vgg16' has no option 'activation'"):
        train(config)
    assert not run_dir.exists()


# --- schedules and host -----------------------------------------------------------------------------------


def test_schedules_warm_up_then_decay():
    one = WarmupSchedule(0.4, total_steps=100, warmup_steps=10, kind="onecycle")
    assert float(one(0)) == pytest.approx(0.04)
    assert float(one(9)) == pytest.approx(0.4)
    assert float(one(55)) == pytest.approx(0.2)
    assert float(one(100)) == pytest.approx(0.0)
    cosine = WarmupSchedule(1.0, total_steps=110, warmup_steps=10, kind="cosine")
    assert float(cosine(60)) == pytest.approx(0.5)
    step = WarmupSchedule(1.0, total_steps=100, kind="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [round(float(step(s)), 4) for s in (0, 49, 50, 80)] == [1.0, 1.0, 0.1, 0.01]
    assert WarmupSchedule.from_config(step.get_config()).get_config() == step.get_config()


def test_a_fractional_epoch_count_ends_its_schedule_and_its_run_at_one_step():
    import keras
    import tensorflow as tf

    from keras_cifar.training.callbacks import control_callbacks
    from keras_cifar.training.loop import fit_model
    from keras_cifar.training.schedules import learning_rate, total_steps

    assert resolve_config(parse("--epochs", "8")).epochs == 8 and type(TrainConfig(epochs=8.0).epochs) is int
    assert resolve_config(parse("--epochs", "9.9")).epochs == 9.9
    assert (total_steps(1.5, 3), total_steps(9.9, 48), total_steps(0.1, 30), total_steps(0.01, 3)) == (5, 476, 3, 1)
    config = TrainConfig(epochs=1.5, schedule="onecycle", warmup_epochs=0, verbose=0)
    assert learning_rate(config, 3, config.epochs).total_steps == 5
    data = tf.data.Dataset.from_tensor_slices((np.ones((24, 2), "float32"), np.ones((24, 1), "float32"))).batch(8)

    def model():
        net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        net.compile(keras.optimizers.SGD(learning_rate(config, 3, config.epochs)), "mse")
        return net

    whole = model()
    history = fit_model(whole, config, data, None, control_callbacks(config, 3, config.epochs), config.epochs)
    assert int(whole.optimizer.iterations) == 5 and len(history.history["loss"]) == 2  # 3 steps, then 2 of 3
    assert float(whole.optimizer.learning_rate) == 0.0  # the schedule ended on that step
    resumed = model()  # as after a restart that restored the first epoch: the optimizer's count goes on from 3
    fit_model(resumed, config, data, None, [], 1)
    fit_model(resumed, config, data, None, control_callbacks(config, 3, config.epochs), config.epochs, initial_epoch=1)
    assert int(resumed.optimizer.iterations) == 5


@pytest.mark.parametrize(
    "flags, requested, expected",
    [
        (["avx512f", "avx512_bf16", "amx_bf16"], "auto", "mixed_bfloat16"),
        (["avx512f", "avx512_bf16"], "auto", "mixed_bfloat16"),
        (["avx2"], "auto", "float32"),
        (["avx2"], "mixed", "mixed_bfloat16"),
        (["amx_bf16"], "float32", "float32"),
    ],
)
def test_precision_is_chosen_from_the_cpu(monkeypatch, flags, requested, expected):
    monkeypatch.setattr(host, "cpu_info", lambda: {"model": "test", "cores": 2, "flags": flags})
    monkeypatch.setattr(host, "accelerators", lambda: [])
    policy, reason = host.choose_precision(requested)
    assert policy == expected and reason


def test_time_budget_buys_epochs_in_tenths():
    from keras_cifar.training.budget import Probe, epochs_for_budget

    # 10 steps of 0.5 s, 4 s of validation (3,072 images = 24 batches at a third of a step's cost) and two
    # checkpoint writes of 0.5 s = 10 s an epoch; the first step's 3 s of tracing cost 2.5 s once.
    probe = Probe(step=0.5, first_step=3.0, save=0.5)
    assert probe.epoch_seconds(10, 3072, 128) == 10
    assert probe.epoch_overhead(3072, 128) == 5
    assert epochs_for_budget(102.5, probe, 10, 3072, 128) == 10
    # 9 epochs leave 7.4 s: the tenth epoch's validation and writes (5 s), then 2.4 s = four tenths of its steps
    assert epochs_for_budget(99.9, probe, 10, 3072, 128) == 9.4
    assert epochs_for_budget(97.4, probe, 10, 3072, 128) == 9  # 4.9 s: not even the short epoch's overhead
    assert epochs_for_budget(112.4, probe, 10, 3072, 128) == 10.9  # never rounds up to a whole epoch
    assert epochs_for_budget(1, probe, 10, 3072, 128) == 1  # always at least one epoch
    with pytest.raises(ConfigError, match="time_budget"):
        TrainConfig(time_budget=0).validate()


def test_the_budget_probe_times_the_input_pipeline_and_a_checkpoint():
    """A pipeline that holds each batch 50 ms shows in the step it feeds; the model's write is timed too."""
    import time

    import keras
    import tensorflow as tf

    from keras_cifar.training.budget import probe

    def slow(images, labels):
        time.sleep(0.05)
        return images, labels

    images, labels = np.zeros((32, 4), "float32"), np.eye(2, dtype="float32")[np.arange(32) % 2]
    fast = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    held = fast.map(lambda x, y: tf.numpy_function(slow, [x, y], [tf.float32, tf.float32]))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    quick, slowed = probe(model, fast, max_steps=4), probe(model, held, max_steps=4)
    assert slowed.step >= 0.05 > quick.step  # 4 batches an epoch: the probe repeats the dataset
    assert quick.save > 0 and quick.first_step > 0


def test_augmentation_stays_float32_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    stack = build_augmentation(crop_padding=4, flip=True, seed=0)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert np.array_equal(np.asarray(stack(images, training=False)), images)  # bfloat16 would round 162.43 to 162


def test_progress_bars_on_a_terminal_one_line_per_epoch_in_a_log(tmp_path):
    from keras_cifar.training.loop import fit_verbosity

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert fit_verbosity(None, Terminal()) == 1
    with (tmp_path / "log").open("w") as log:
        assert fit_verbosity(None, log) == 2
    assert fit_verbosity(0, Terminal()) == 0 and fit_verbosity(1, io.StringIO()) == 1
