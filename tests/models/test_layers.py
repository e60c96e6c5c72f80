"""The shared layers' fast paths compute what Keras's own layers compute, in training and inference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_cifar.run
from keras_cifar.models import layers
from keras_cifar.models.layers import GELU, BatchNorm, Conv2D, SiLU, conv_matmul_kernel_gradient


def gradients(layer, x, training):
    """Output, input gradient and weight gradients of a fixed random weighting of `layer(x)`."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        weights = np.random.default_rng(1).normal(size=y.shape).astype("float32")
        loss = tf.reduce_sum(tf.cast(y, "float32") * weights)
    return y, tape.gradient(loss, [x] + layer.trainable_weights)


@pytest.mark.parametrize("scale,epsilon", [(True, 1e-5), (False, 1e-12)])
def test_batch_norm_matches_keras_in_training_and_inference(scale, epsilon):
    x = np.random.default_rng(0).normal(2.0, 3.0, (32, 5, 5, 8)).astype("float32")
    settings = dict(momentum=0.6, epsilon=epsilon, scale=scale, beta_initializer="random_normal")
    reference, fused = keras.layers.BatchNormalization(**settings), BatchNorm(**settings)
    reference.build(x.shape)
    fused.build(x.shape)
    fused.set_weights(reference.get_weights())
    y_ref, g_ref = gradients(reference, x, training=True)
    y_fused, g_fused = gradients(fused, x, training=True)
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Moving statistics moved, and by the same amount (Keras keeps the biased variance).
    for a, b in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fused.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), atol=1e-5)


def test_batch_norm_keeps_float32_statistics_under_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = BatchNorm(scale=False)
    x = tf.cast(tf.random.normal((8, 4, 4, 3)), "bfloat16")
    assert layer(x, training=True).dtype == "bfloat16"
    assert {w.dtype for w in layer.weights} == {"float32"}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layer, name", [(GELU, "gelu"), (SiLU, "silu")])
def test_fused_activations_match_keras_in_training_and_inference(layer, name, training):
    x = np.linspace(-6, 6, 2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    y, (grad,) = gradients(layer(), x, training)
    expected, (expected_grad,) = gradients(keras.layers.Activation(name), x, training)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "side, kernel, stride, padding",
    [
        (7, 3, 1, "same"),
        (4, 1, 1, "same"),
        (6, 3, 1, "valid"),
        (8, 2, 1, "same"),
        (8, 3, 2, "same"),
        (9, 3, 2, "valid"),
    ],
)
def test_matmul_kernel_gradient_matches_tensorflow(dtype, side, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(size=(3, side, side, 4)), dtype)
    w = tf.cast(rng.normal(size=(kernel, kernel, 4, 5)), dtype)
    results = []
    for conv in (
        lambda x, w: conv_matmul_kernel_gradient(x, w, (stride, stride), padding),
        lambda x, w: tf.nn.conv2d(x, w, stride, padding.upper()),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
            loss = tf.reduce_sum(tf.square(tf.cast(y, "float32")))
        results.append([tf.cast(t, "float32").numpy() for t in [y, *tape.gradient(loss, [x, w])]])
    tolerance = 1e-5 if dtype == "float32" else 1e-2
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance * np.abs(theirs).max())


@pytest.fixture
def matmul_calls(monkeypatch):
    """Counts the Conv2D layer's uses of the matmul kernel gradient, on a CPU with AVX-512-BF16 and no AMX."""
    calls = []

    def spy(*args):
        calls.append(args)
        return conv_matmul_kernel_gradient(*args)

    monkeypatch.setattr(layers, "conv_matmul_kernel_gradient", spy)
    monkeypatch.setattr(keras_cifar.run, "cpu_info", lambda: {"flags": ["avx2", "avx512_bf16", "avx512f"]})
    return calls


def test_conv2d_uses_matmul_kernel_gradient_for_small_maps_in_bfloat16_training(matmul_calls):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    layer = Conv2D(6, 3, padding="same", use_bias=True, bias_initializer="random_normal")
    layer.build(x.shape)
    reference = keras.layers.Conv2D(6, 3, padding="same", use_bias=True)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    y, grads = gradients(layer, x, training=True)
    assert len(matmul_calls) == 1 and y.dtype == "bfloat16"
    y_ref, grads_ref = gradients(reference, x, training=True)
    np.testing.assert_allclose(tf.cast(y, "float32"), tf.cast(y_ref, "float32"), atol=0.05)
    for ours, theirs in zip(grads, grads_ref):
        np.testing.assert_allclose(ours, theirs, rtol=0.02, atol=0.02 * np.abs(theirs).max())
    gradients(layer, x, training=False)  # inference: Keras's own convolution
    assert len(matmul_calls) == 1


@pytest.mark.parametrize(
    "policy, side, stride, flags",
    [
        ("float32", 8, 1, ["avx512_bf16"]),  # float32: TensorFlow's kernel measured as fast
        ("mixed_bfloat16", 16, 1, ["avx512_bf16"]),  # 16×16 map: measured slower as matmuls
        ("mixed_bfloat16", 8, 2, ["avx512_bf16"]),  # strided: measured slower
        ("mixed_bfloat16", 8, 1, ["amx_bf16", "avx512_bf16"]),  # AMX: not measured
        ("mixed_bfloat16", 8, 1, ["avx2"]),  # no bfloat16 instructions
    ],
)
def test_conv2d_keeps_tensorflows_kernel_gradient_elsewhere(matmul_calls, monkeypatch, policy, side, stride, flags):
    monkeypatch.setattr(keras_cifar.run, "cpu_info", lambda: {"flags": flags})
    keras.mixed_precision.set_global_policy(policy)
    layer = Conv2D(4, 3, strides=stride, padding="same")
    gradients(layer, np.ones((2, side, side, 3), "float32"), training=True)
    assert matmul_calls == []
