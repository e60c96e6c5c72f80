"""The fast recipe's pieces: whitening init, Lookahead, the BN-shift learning rate, flip+translate TTA."""

import keras
import numpy as np
import pytest

from keras_cifar.config import TrainConfig, read_config_file, recipe_path
from keras_cifar.evaluation import predict_probabilities
from keras_cifar.models import build_model
from keras_cifar.training.callbacks import Lookahead
from keras_cifar.training.optimizers import MuonWithSGD, build_optimizer, orthogonalise
from keras_cifar.training.whitening import FreezeWhiteningBias, init_whitening, whitening_kernel


def test_whitening_kernel_decorrelates_patches():
    rng = np.random.default_rng(0)
    # Smooth, correlated images: neighbouring pixels and channels share most of their signal.
    base = rng.normal(size=(200, 17, 17, 1))
    images = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)[:, :32, :32] + 0.1 * rng.normal(size=(200, 32, 32, 3))
    kernel = whitening_kernel(images, (2, 2), eps=0.0)
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])
    windows = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2))
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    outputs = patches @ kernel[..., :12].reshape(12, 12)
    np.testing.assert_allclose(outputs.T @ outputs / len(outputs), np.eye(12), atol=1e-6)


def test_init_whitening_fills_only_models_that_have_the_layer(cifar):
    model = build_model("airbench", width_multiplier=0.25)
    before = model.get_layer("whiten").kernel.numpy().copy()
    assert init_whitening(model, cifar.x_train[:500])
    after = model.get_layer("whiten").kernel.numpy()
    assert not np.allclose(before, after)
    assert not model.get_layer("whiten").kernel.trainable
    assert not init_whitening(build_model("resnet9", width_multiplier=0.25), cifar.x_train[:10])


def test_lookahead_moves_weights_toward_their_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.get_layer(index=0).kernel.assign(np.zeros((2, 1), "float32"))
    lookahead = Lookahead(total_steps=100)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    lookahead.on_train_batch_begin(0)
    model.get_layer(index=0).kernel.assign(np.full((2, 1), 4.0, "float32"))
    lookahead._update(0.75)  # average = 0 + 0.25 * (4 - 0)
    np.testing.assert_allclose(model.get_layer(index=0).kernel.numpy(), 1.0)
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=8, epochs=1, verbose=0, callbacks=[Lookahead(total_steps=1)])
    assert model.optimizer.iterations.numpy() == 1


def update_sizes(shift_lr_scale):
    """How far one SGD step moves each variable of a Dense -> BatchNorm model (same data, same init)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, use_bias=False, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    config = TrainConfig(momentum=0.0, weight_decay=0.0, bias_lr_scale=shift_lr_scale)
    model.compile(build_optimizer(config, lr=0.01), "mse")
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(16, 4)), rng.normal(size=(16, 3)))
    return {v.path: float(np.abs(v.numpy() - before[v.path]).sum()) for v in model.trainable_variables}


def test_bn_shifts_take_the_scaled_learning_rate():
    plain, scaled = update_sizes(1.0), update_sizes(64.0)
    assert plain["bn/beta"] > 0
    assert scaled["bn/beta"] == pytest.approx(64.0 * plain["bn/beta"], rel=1e-3)
    assert scaled["bn/gamma"] == pytest.approx(plain["bn/gamma"], rel=1e-3)
    assert scaled["dense/kernel"] == pytest.approx(plain["dense/kernel"], rel=1e-3)


@pytest.mark.parametrize("shape", [(576, 64), (64, 216), (128, 128)])
def test_orthogonalise_sets_every_singular_value_near_one(shape):
    rng = np.random.default_rng(0)
    # An ill-conditioned matrix, as momentum is: singular values spread over two orders of magnitude.
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], min(shape))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], min(shape))))
    matrix = (u * np.logspace(0, -2, min(shape))) @ v.T
    result = keras.ops.convert_to_numpy(orthogonalise(keras.ops.convert_to_tensor(matrix, "float32"), steps=5))
    assert result.shape == shape
    # The same singular vectors as the input (u^T result v is diagonal), every singular value moved to about one.
    diagonal = u.T @ result @ v
    np.testing.assert_allclose(diagonal - np.diag(np.diag(diagonal)), 0.0, atol=1e-4)
    assert np.diag(diagonal).min() > 0.3 and np.diag(diagonal).max() < 1.3


def one_step(optimizer_name):
    """A conv → BN → dense model, its variables before and after one step of `optimizer_name`."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(4, use_bias=False, name="dense")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    config = TrainConfig(
        optimizer=optimizer_name, lr=0.05, momentum=0.8, weight_decay=1e-3, bias_lr_scale=8.0, muon_lr=0.2
    )
    model.compile(build_optimizer(config, lr=config.lr), "mse")
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(16, 8, 8, 3)), rng.normal(size=(16, 4)))
    return model, before, {v.path: v.numpy() for v in model.trainable_variables}


def test_muon_orthogonalises_filter_updates_and_leaves_the_rest_to_sgd():
    model, before, after = one_step("muon")
    assert isinstance(model.optimizer, MuonWithSGD)
    kernel = before["conv/kernel"]
    rescaled = kernel * np.sqrt(16) / np.linalg.norm(kernel)  # the bank at norm sqrt(output channels)...
    step = (rescaled - after["conv/kernel"]).reshape(-1, 16) / 0.2  # ...then one step of muon_lr
    singular = np.linalg.svd(step, compute_uv=False)
    assert singular.min() > 0.4 and singular.max() < 1.6
    _, sgd_before, sgd_after = one_step("sgd")
    for path in ("dense/kernel", "bn/beta", "bn/gamma"):  # SGD's update (shift scale, weight decay) unchanged
        np.testing.assert_allclose(after[path] - before[path], sgd_after[path] - sgd_before[path], rtol=1e-4, atol=1e-7)
    assert not np.allclose(sgd_after["conv/kernel"] - sgd_before["conv/kernel"], after["conv/kernel"] - kernel)


def test_flip_translate_tta_averages_six_views():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(
        10, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(0, 0.01, seed=1)
    )(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")

    def p(x):
        return model.predict(x, verbose=0)

    def flip_mean(x):
        return (p(x) + p(x[:, :, ::-1])) / 2

    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    expected = 0.5 * flip_mean(images) + 0.25 * (flip_mean(padded[:, :32, :32]) + flip_mean(padded[:, 2:, 2:]))
    np.testing.assert_allclose(predict_probabilities(model, images, tta="flip_translate"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="tta must be one of"):
        predict_probabilities(model, images, tta="rotate")


def test_fast_recipes_are_valid_configs_for_the_airbench_net():
    fast, sgd = (TrainConfig(**read_config_file(recipe_path(name))).validate() for name in ("fast", "fast-sgd"))
    for config in (fast, sgd):
        assert config.arch == "airbench" and config.val_split == 0 and config.tta == "flip_translate"
    assert fast.optimizer == "muon" and not fast.lookahead and fast.epochs < sgd.epochs
    assert sgd.optimizer == "sgd" and sgd.lookahead


def test_alternating_flip_shows_each_image_both_ways_every_two_epochs(cifar):
    from keras_cifar.data import AlternatingFlip, training_dataset

    flip = AlternatingFlip(seed=0)
    images, labels = cifar.x_train[:64], cifar.y_train[:64]
    prepared = flip.prepare(images)
    mirrored = ~np.all(prepared == images, axis=(1, 2, 3))
    assert 16 < mirrored.sum() < 48  # about half, chosen by the seed
    np.testing.assert_array_equal(prepared[mirrored], images[mirrored][:, :, ::-1])

    def seen(epoch):
        flip.callback().on_epoch_begin(epoch)
        ds = training_dataset(prepared, labels, batch_size=16, alternating_flip=flip, seed=epoch)
        return {b.tobytes() for batch, _ in ds.as_numpy_iterator() for b in batch.astype(np.uint8)}

    assert seen(0) == {b.tobytes() for b in prepared}
    assert seen(1) == {b.tobytes() for b in prepared[:, :, ::-1].copy()}


def test_whitening_bias_trains_until_its_epoch_then_stays_fixed(cifar):
    keras.utils.set_random_seed(0)
    model = build_model("airbench", width_multiplier=0.125)
    init_whitening(model, cifar.x_train[:200])
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    bias = model.get_layer("whiten").bias
    x, y = cifar.x_train[:64].astype("float32"), np.eye(10, dtype="float32")[cifar.y_train[:64]]
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(bias.numpy().copy()))
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[FreezeWhiteningBias(1), record])
    assert not bias.trainable
    assert not np.allclose(seen[0], 0.0)  # it trained in the first epoch (it starts at zero)...
    np.testing.assert_array_equal(seen[1], seen[0])  # ...and not after
    np.testing.assert_array_equal(seen[2], seen[0])
    assert model.optimizer.iterations.numpy() == 6  # the other weights went on training
