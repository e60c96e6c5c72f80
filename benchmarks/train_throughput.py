"""Training images/second of each architecture on synthetic batches: the model step alone, no input pipeline.

    python benchmarks/train_throughput.py --archs resnet18,vgg16 --batch-size 128 --jit off,on
    python benchmarks/train_throughput.py --archs airbench --recipes fast-sgd,fast --batch-size 1024,2000 --jit off
    python benchmarks/train_throughput.py --archs airbench --recipes fast --batch-size 2000 --jit off \
        --activations gelu,silu

`--recipes` builds the model and optimizer with a recipe's settings (its optimizer, learning rates, BN
momentum...; the architecture, batch size and width still come from the flags); without it, the defaults
(Nesterov SGD).

Each configuration runs in its own process (dtype policies and XLA caches are process-wide), builds the
model exactly as training does (`compile_model`), warms up, then times `--steps` train steps and reports
the median step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TIMED_MARK = "# timed steps start"


def images_per_second(step, batch_size, steps, warmup) -> float:
    """Images over the median time of `step()` after `warmup` untimed calls.

    Warm-up absorbs graph tracing and oneDNN kernel selection; the median ignores steps slowed by other work
    on a shared CPU. Framework-neutral, so `engine_gap.py` times PyTorch with it too.
    """
    for _ in range(warmup):
        step()
    print(TIMED_MARK, flush=True)  # lets engine_gap.py --onednn-breakdown skip the warm-up's oneDNN log lines
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def measure(arch, batch_size, width, jit, precision, steps, warmup, recipe="", activation="") -> float:
    """Train-step images/second of `arch` built and compiled exactly as training does."""
    import numpy as np

    from keras_cifar.config import TrainConfig, read_config_file, recipe_path
    from keras_cifar.data import augmentation_from_config
    from keras_cifar.run import Runtime
    from keras_cifar.training.loop import compile_model

    settings = {
        **(read_config_file(recipe_path(recipe)) if recipe else {}),
        "arch": arch,
        "batch_size": batch_size,
        "width_multiplier": width,
        "epochs": 1,
        "time_budget": None,
        **({"activation": activation} if activation else {}),
    }
    config = TrainConfig(**settings)
    runtime = Runtime(
        precision=precision,
        precision_reason="requested",
        jit_compile=jit == "on",
        jit_reason="requested",
        augment_in_model=False,
    )
    model = compile_model(
        config, runtime, steps_per_epoch=steps + warmup, augmentation=augmentation_from_config(config), epochs=1
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch_size)]
    return images_per_second(lambda: model.train_on_batch(x, y), batch_size, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="vgg16,vgg19,resnet18,resnet34,resnet50,resnet101,inception")
    parser.add_argument("--batch-size", default="128", help="comma-separated batch sizes")
    parser.add_argument(
        "--recipes",
        default="",
        help="comma-separated recipes whose settings build the model and optimizer (default: none, plain Nesterov SGD)",
    )
    parser.add_argument(
        "--activations", default="", help="comma-separated, for nets that offer a choice (default: the net's own)"
    )
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--jit", default="off,on", help="comma-separated: off, on")
    parser.add_argument("--precision", default="float32", help="comma-separated Keras dtype policies")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--one", nargs=6, metavar=("ARCH", "JIT", "PRECISION", "BATCH", "RECIPE", "ACT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:  # child process: one configuration, one number on stdout
        arch, jit, precision, batch, *choices = args.one  # choices: recipe, activation
        print(measure(arch, int(batch), args.width_multiplier, jit, precision, args.steps, args.warmup, *choices))
        return

    from keras_cifar.training.host import environment

    env = environment()
    print(
        f"# {env['cpu']['model']}, {env['cpu']['cores']} cores, flags {','.join(env['cpu']['flags'])}; "
        f"keras {env['versions']['keras']}, tensorflow {env['versions'].get('tensorflow')}; "
        f"width {args.width_multiplier}"
    )
    print(f"{'arch':<10} {'recipe':<9} {'act':<5} {'batch':>5} {'precision':<15} {'xla':<4} {'img/s':>8}")
    results = []
    configurations = itertools.product(
        args.archs.split(","),
        args.recipes.split(","),
        args.activations.split(","),
        args.batch_size.split(","),
        args.precision.split(","),
        args.jit.split(","),
    )
    for arch, recipe, activation, batch, precision, jit in configurations:
        label = f"{arch:<10} {recipe or '-':<9} {activation or '-':<5} {batch:>5} {precision:<15} {jit:<4}"
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                arch,
                jit,
                precision,
                batch,
                recipe,
                activation,
                "--width-multiplier",
                str(args.width_multiplier),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode:
            print(f"{label} failed: {child.stderr.strip().splitlines()[-1]}")
            continue
        rate = float(child.stdout.strip().splitlines()[-1])
        results.append(
            {
                "arch": arch,
                "recipe": recipe or None,
                "activation": activation or None,
                "batch_size": int(batch),
                "precision": precision,
                "jit": jit,
                "images_per_second": rate,
            }
        )
        print(f"{label} {rate:8.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "width_multiplier": args.width_multiplier, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
