"""Where airbench's train step spends its non-conv time on TensorFlow: batch norm and GELU, forward + backward.

    python benchmarks/batchnorm_gelu.py [--approximate-gelu] [--precision mixed_bfloat16]

Times, at the activation shapes of airbench at batch 1,024, Keras 3's BatchNormalization in training mode
(on TensorFlow it runs as separate moments / normalise / cast ops) against TensorFlow's single fused kernel
(`fused_batch_norm`), and the GELU that follows each: TensorFlow's op, the op XLA-compiled in the input's dtype,
and the project's GELU layer in training (XLA-compiled, computed in float32 inside). A first map of the
Keras-vs-PyTorch gap measured by `benchmarks/engine_gap.py`; it is TensorFlow-only by design.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# airbench's six batch norms at batch 1,024: after each group's pooled conv and its second conv.
SHAPES = [(1024, 15, 15, 64)] * 2 + [(1024, 7, 7, 256)] * 2 + [(1024, 3, 3, 256)] * 2


def seconds(fn, x, warmup=2, repeats=5) -> float:
    for _ in range(warmup):
        fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats


def forward_backward(op):
    """A tf.function computing `op(x)` and the gradients a train step would need."""
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(op(x), tf.float32))
        return tape.gradient(loss, x)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--approximate-gelu", action="store_true", help="tanh approximation instead of erf")
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16"))
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(args.precision)
    dtype = tf.bfloat16 if args.precision == "mixed_bfloat16" else tf.float32
    from keras_cifar.models.layers import GELU

    totals = {"keras": 0.0, "fused": 0.0, "gelu": 0.0, "xla": 0.0, "layer": 0.0}
    print(f"{'shape':<22} {'Keras BN ms':>12} {'fused BN ms':>12} {'GELU ms':>9} {'XLA GELU':>9} {'GELU layer':>11}")
    gelu = GELU()

    def gelu_op(t):
        return tf.nn.gelu(t, approximate=args.approximate_gelu)

    xla_gelu = tf.function(gelu_op, jit_compile=True)
    for shape in SHAPES:
        x = tf.cast(tf.random.normal(shape), dtype)
        layer = keras.layers.BatchNormalization(scale=False, epsilon=1e-12, momentum=0.6)
        layer.build(shape)
        ones, zeros = tf.ones(shape[-1]), tf.zeros(shape[-1])
        timings = {
            "keras": seconds(forward_backward(lambda t: layer(t, training=True)), x),  # noqa: B023 (called here)
            "fused": seconds(
                forward_backward(
                    lambda t: tf.compat.v1.nn.fused_batch_norm(t, ones, zeros, epsilon=1e-5, is_training=True)[0]  # noqa: B023
                ),
                x,
            ),
            "gelu": seconds(forward_backward(gelu_op), x),
            "xla": seconds(forward_backward(xla_gelu), x),
            "layer": seconds(forward_backward(lambda t: gelu(t, training=True)), x),
        }
        for key, value in timings.items():
            totals[key] += value
        print(
            f"{str(shape):<22} {timings['keras'] * 1e3:12.1f} {timings['fused'] * 1e3:12.1f} {timings['gelu'] * 1e3:9.1f} "
            f"{timings['xla'] * 1e3:9.1f} {timings['layer'] * 1e3:11.1f}"
        )
    print(
        f"{'sum per train step':<22} {totals['keras'] * 1e3:12.0f} {totals['fused'] * 1e3:12.0f} "
        f"{totals['gelu'] * 1e3:9.0f} {totals['xla'] * 1e3:9.0f} {totals['layer'] * 1e3:11.0f}   "
        f"({args.precision}, {'tanh' if args.approximate_gelu else 'erf'} GELU; the layer is always erf)"
    )


if __name__ == "__main__":
    main()
