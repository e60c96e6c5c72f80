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


# Output maps up to this many positions (8×8) get their bfloat16 kernel gradient as matmuls: see Conv2D.
SMALL_MAP_AREA = 64


@keras.saving.register_keras_serializable(package="keras_cifar")
class Conv2D(keras.layers.Conv2D):
    """Keras's Conv2D; in bfloat16 training on TensorFlow, small maps get their kernel gradient as matmuls.

    The bfloat16 kernel-gradient code of the oneDNN that TensorFlow 2.21 bundles (jit_bf16) is slow on maps of
    8×8 and smaller on AVX-512-BF16 CPUs, where the widest convolutions of airbench and the classic nets run; the
    same sums as one matmul per kernel tap run on oneDNN's matmul, which is not (`benchmarks/conv_weight_grad.py`).
    In float32, on larger maps and with strides (measured slower) and on AMX CPUs (not measured) TensorFlow's own
    kernel stays. The forward pass, inference and export are Keras's own.
    """

    def call(self, inputs, training=None):
        if not (training and self._matmul_kernel_gradient(inputs)):
            return super().call(inputs)
        kernel = keras.ops.cast(self.kernel, self.compute_dtype)
        outputs = conv_matmul_kernel_gradient(inputs, kernel, self.strides, self.padding)
        if self.use_bias:
            outputs = keras.ops.add(outputs, self.bias)
        return self.activation(outputs)

    def _matmul_kernel_gradient(self, inputs):
        from keras_cifar.run import cpu_info

        flags = cpu_info()["flags"]
        output_shape = self.compute_output_shape(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and self.compute_dtype == "bfloat16"
            and "avx512_bf16" in flags
            and "amx_bf16" not in flags
            and self.data_format == "channels_last"
            and self.groups == 1
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and None not in output_shape[1:3]
            and output_shape[1] * output_shape[2] <= SMALL_MAP_AREA
        )


def _same_padding(size, kernel, stride):
    """TensorFlow's "same" padding (before, after) of one dimension."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_matmul_kernel_gradient(x, kernel, strides, padding):
    """An NHWC convolution whose kernel gradient is one matmul per kernel tap (TensorFlow only).

    For tap (i, j) the gradient is the input window that tap reads, as a (positions, C_in) matrix, transposed and
    multiplied by the output gradient (positions, C_out).
    """
    import tensorflow as tf

    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    tf_padding = padding.upper()

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=[1, sh, sw, 1], padding=tf_padding
            )
            padded = x
            if padding == "same":
                pads = [_same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw)]
                padded = tf.pad(x, [[0, 0], *pads, [0, 0]])
            rows, cols = dy.shape[1], dy.shape[2]
            dy_matrix = tf.reshape(dy, (-1, cout))
            taps = [
                tf.matmul(
                    tf.reshape(
                        padded[:, i : i + (rows - 1) * sh + 1 : sh, j : j + (cols - 1) * sw + 1 : sw], (-1, cin)
                    ),
                    dy_matrix,
                    transpose_a=True,
                )
                for i in range(kh)
                for j in range(kw)
            ]
            return dx, tf.reshape(tf.stack(taps), (kh, kw, cin, cout))

        return tf.nn.conv2d(x, kernel, strides=[1, sh, sw, 1], padding=tf_padding), grad

    return conv(x, kernel)


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
            return _fused(type(self).__name__, self._float32_op)(inputs)
        return self.keras_op(inputs)

    @classmethod
    def _float32_op(cls, x):
        """The op computed in float32 inside the fused kernel: faster than in bfloat16, where XLA rounds each step
        (`benchmarks/batchnorm_gelu.py`)."""
        import tensorflow as tf

        return tf.cast(cls.tensorflow_op(tf.cast(x, tf.float32)), x.dtype)

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
