"""A convolution's forward pass and kernel gradient on TensorFlow: its own kernel against one matmul per kernel tap.

    python benchmarks/conv_weight_grad.py [--precision float32,bfloat16] [--repeats 5]

At the shapes of airbench (batch 2,000) and of ResNet-18 / VGG-16 (batch 256), it times what a train step
runs for the kernel's gradient: TensorFlow's Conv2DBackpropFilter (oneDNN) against `conv_matmul_kernel_gradient`
(keras_cifar/models/layers.py), which the project's Conv2D uses in bfloat16 on small maps. The inputs' gradient is
not asked for, so neither side computes it. Prints milliseconds per call (median) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (batch, input side, input channels, output channels, kernel side, stride): "same" convolutions of each net.
SHAPES = {
    "airbench": [(2000, 31, 24, 64, 3, 1), (2000, 15, 64, 256, 3, 1), (2000, 15, 64, 64, 3, 1),
                 (2000, 7, 256, 256, 3, 1), (2000, 3, 256, 256, 3, 1)],
    "resnet18/vgg16": [(256, 32, 64, 64, 3, 1), (256, 16, 128, 128, 3, 1), (256, 8, 256, 256, 3, 1),
                       (256, 4, 512, 512, 3, 1), (256, 2, 512, 512, 3, 1)],
    "resnet18": [(256, 32, 64, 128, 3, 2), (256, 16, 128, 256, 3, 2), (256, 8, 256, 512, 3, 2),
                 (256, 8, 256, 512, 1, 2)],
}  # fmt: skip


def kernel_gradient(conv):
    """A tf.function returning d(sum of conv(x, kernel)²)/d kernel: forward pass and kernel gradient only."""
    import tensorflow as tf

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            loss = tf.reduce_sum(tf.square(tf.cast(conv(x, kernel), tf.float32)))
        return tape.gradient(loss, kernel)

    return step


def milliseconds(fn, *args, repeats) -> float:
    fn(*args).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_cifar.models.layers import conv_matmul_kernel_gradient
    from keras_cifar.run import cpu_info

    cpu = cpu_info()
    print(
        f"# {cpu['model']}, family {cpu.get('family')} model {cpu.get('model_number')}, {cpu['cores']} cores, "
        f"flags {','.join(cpu['flags'])}; tensorflow {tf.__version__}; median of {args.repeats}"
    )
    print(
        f"{'net':<15} {'precision':<9} {'shape (N, side, Cin, Cout, k, s)':<33} {'TF ms':>8} {'matmuls ms':>11} {'ratio':>6}"
    )
    for precision in args.precision.split(","):
        dtype = tf.as_dtype(precision)
        for net, shapes in SHAPES.items():
            for batch, side, cin, cout, k, stride in shapes:
                strides = (stride, stride)
                ours = kernel_gradient(lambda x, w: conv_matmul_kernel_gradient(x, w, strides, "same"))  # noqa: B023
                theirs = kernel_gradient(lambda x, w: tf.nn.conv2d(x, w, strides=stride, padding="SAME"))  # noqa: B023
                x = tf.cast(tf.random.normal((batch, side, side, cin)), dtype)
                kernel = tf.cast(tf.random.normal((k, k, cin, cout), stddev=0.05), dtype)
                tf_ms = milliseconds(theirs, x, kernel, repeats=args.repeats)
                ours_ms = milliseconds(ours, x, kernel, repeats=args.repeats)
                shape = str((batch, side, cin, cout, k, stride))
                print(f"{net:<15} {precision:<9} {shape:<33} {tf_ms:8.1f} {ours_ms:11.1f} {ours_ms / tf_ms:6.2f}")


if __name__ == "__main__":
    main()
