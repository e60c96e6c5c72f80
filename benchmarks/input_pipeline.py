"""Images/second the tf.data training pipeline delivers on its own (no model), with augmentation on.

    python benchmarks/input_pipeline.py --data-dir ../shared/data/cifar10

The pipeline must outrun the model step on the same cores; compare with benchmarks/train_throughput.py. It
also shares those cores with the model, so the CPU time it takes per 1,000 images is printed too: that is what
it takes away from training.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    from keras_cifar.data import AlternatingFlip, build_augmentation, load_cifar10, split_data, training_dataset

    split = split_data(load_cifar10(args.data_dir), val_split=5000)
    alternating = AlternatingFlip(seed=0)
    pipelines = [  # name, augmentation stack, alternating flip
        ("none", None, None),
        ("flip + pad-crop (default)", build_augmentation(crop_padding=4, flip=True, seed=0), None),
        ("+ rotation 10 + translation 0.1 + erasing 0.5", build_augmentation(4, True, 10, 0.1, 0.5, seed=0), None),
        (
            "alternating flip + pad-crop 2 (--recipe fast)",
            build_augmentation(crop_padding=2, flip=False, seed=0),
            alternating,
        ),
    ]
    print(f"{len(split.y_train)} images a pass, batch {args.batch_size}, {os.cpu_count()} cores")
    for name, augmentation, flip in pipelines:
        images = flip.prepare(split.x_train) if flip else split.x_train
        ds = training_dataset(images, split.y_train, args.batch_size, augmentation=augmentation, alternating_flip=flip)
        for _ in ds.take(2):  # build and warm the pipeline
            pass
        start, cpu_start, seen = time.perf_counter(), cpu_seconds(), 0
        for _ in range(args.epochs):
            for images, _labels in ds:
                seen += int(images.shape[0])
        print(
            f"{name:<48} {seen / (time.perf_counter() - start):9.0f} img/s "
            f"{1000 * 1000 * (cpu_seconds() - cpu_start) / seen:8.1f} CPU ms per 1,000 images",
            flush=True,
        )


if __name__ == "__main__":
    main()
