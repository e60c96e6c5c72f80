"""Layers the architectures share that Keras does not provide in the form they need."""

import keras


@keras.saving.register_keras_serializable(package="keras_cifar")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, run as TensorFlow's single fused kernel on the TensorFlow backend.

    Keras 3 computes batch norm from generic ops (cast to float32, moments, normalise, cast back), several times
    slower than the fused kernel at airbench's shapes (`results/benchmarks/batchnorm_gelu.txt`, from
    `benchmarks/batchnorm_gelu.py`). The fused kernel keeps its statistics in
    float32 whatever the input dtype, as Keras does. Other backends, masks, renorm, synchronised BN and
    non-NHWC layouts take Keras's own path, so the layer stays a drop-in, backend-agnostic replacement.

    Under a `tf.distribute` strategy each replica normalises with its own batch's statistics (as Keras's
    layer does) and the moving statistics are averaged over the replicas: see `add_weight`.
    """

    def add_weight(self, *args, trainable=True, **kwargs):
        """The moving statistics (the non-trainable weights) are created with MEAN aggregation.

        Keras creates them with none, and then under MirroredStrategy / MultiWorkerMirroredStrategy every
        replica's assignment updates only its own copy (on its own, as Keras's own BatchNormalization does:
        checked with two CPU replicas): the copies drift apart, validation on each replica uses different
        statistics, and the saved model keeps the first replica's, estimated from its share of the data.
        MEAN makes each assignment in a replica an all-reduce of the replicas' new values, so every copy holds
        the global-batch average. The cost is one small all-reduce per statistic per step; without a strategy,
        and under JAX (whose data-parallel step computes the moments over the whole global batch), aggregation
        changes nothing.
        """
        if not trainable:
            kwargs["aggregation"] = "mean"
        return super().add_weight(*args, trainable=trainable, **kwargs)

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, self.compute_dtype)
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta if self.center else tf.zeros([channels], tf.float32)
        # The raw op, not tf.nn's wrapper: the wrapper raises epsilon to 1e-5, which changes airbench's BN.
        if training and self.trainable:
            y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x,
                scale=gamma,
                offset=beta,
                mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=True,
            )
            # The kernel returns the unbiased variance; Keras's moving variance is the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            variance = unbiased_variance * (count - 1.0) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
            return y
        y, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=gamma,
            offset=beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=False,
        )
        return y


_xla_functions = {}


def _fused(name, function):
    """`function` compiled by XLA into one loop forward and one backward, created on first use."""
    if name not in _xla_functions:
        import tensorflow as tf

        _xla_functions[name] = tf.function(function, jit_compile=True)
    return _xla_functions[name]


class _FusedActivation(keras.layers.Layer):
    """An element-wise activation that, in training on TensorFlow, runs as one XLA-fused kernel instead of a dozen.

    TensorFlow runs GELU and its gradient as separate Erfc/Exp/Mul kernels, each a pass over memory: 454 ms
    per airbench step at batch 1,024 in bf16; XLA fuses them into 260 ms. XLA slows the convolutions on
    CPUs, so only this layer is compiled. Inference keeps TensorFlow's own op, which every exporter knows.
    """

    def call(self, inputs, training=None):
        if training and keras.backend.backend() == "tensorflow":
            return _fused(type(self).__name__, self.tensorflow_op)(inputs)
        return self.keras_op(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_cifar")
class GELU(_FusedActivation):
    """Exact (erf) GELU, airbench's activation."""

    @staticmethod
    def tensorflow_op(x):
        import tensorflow as tf

        return tf.nn.gelu(x, approximate=False)

    @staticmethod
    def keras_op(x):
        return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="keras_cifar")
class SiLU(_FusedActivation):
    """SiLU, x·sigmoid(x): the activation the 2025 cifar10-speedrun put in GELU's place in airbench94_muon (fewer
    operations than erf's polynomial)."""

    @staticmethod
    def tensorflow_op(x):
        import tensorflow as tf

        return tf.nn.silu(x)

    @staticmethod
    def keras_op(x):
        return keras.activations.silu(x)
