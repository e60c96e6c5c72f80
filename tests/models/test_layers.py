"""The shared layers' fast paths compute what Keras's own layers compute, in training and inference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cifar.models.layers import GELU, BatchNorm, SiLU


def gradients(layer, x, training):
    """Output, input gradient and weight gradients of a fixed random weighting of `layer(x)`."""
    weights = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
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
