"""Time-to-accuracy of a recipe: training wall-clock and test accuracy after every epoch, in timing.json.

    python benchmarks/time_to_accuracy.py --recipe fast --seed 3 --data-dir ../shared/data/cifar10 --run-dir runs/tta-s3

Trains exactly as `python -m keras_cifar.train` does (same flags, same run directory), and after each epoch
scores the current weights on the test set, without TTA, outside the timed part: `epoch_seconds` in
history.csv stops before this evaluation starts. The test set chooses nothing here (no checkpoint, no early
stop depends on it), as in airbench's own per-epoch printout. The run's final, TTA-scored test accuracy is in
metrics.json as usual and is repeated in timing.json. Use a new run directory: a resumed run would time
only the epochs trained after the restart.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LEVELS = (0.80, 0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.94)


def make_callback(x_test, y_test, records):
    import keras
    import numpy as np

    from keras_cifar.data import evaluation_dataset

    class TestAccuracyEachEpoch(keras.callbacks.Callback):
        """Scores the current weights on the test set after each epoch; its own time is not training time."""

        def on_epoch_end(self, epoch, logs=None):
            start = time.perf_counter()
            # The project's evaluation pipeline, not predict() on an array: Keras's own tf.data pipeline for an
            # array keeps autotuning on, and its iterator then took up to 10 s to shut down, CPU idle.
            predicted = self.model.predict(evaluation_dataset(x_test, y_test, 1000), verbose=0).argmax(axis=1)
            records.append(
                {
                    "epoch": epoch + 1,
                    "epoch_seconds": logs["epoch_seconds"],
                    "others_cpu": logs.get("others_cpu"),
                    "load_1min": logs.get("load_1min"),
                    "test_accuracy": float(np.mean(predicted == y_test)),
                    "evaluation_seconds": time.perf_counter() - start,
                }
            )

    return TestAccuracyEachEpoch()


def summarise(records, final_metrics, runtime, environment) -> dict:
    elapsed, curve = 0.0, []
    for record in records:
        elapsed += record["epoch_seconds"]
        curve.append({**record, "training_seconds_so_far": elapsed})
    reached = {
        f"{level:.2f}": next((c["training_seconds_so_far"] for c in curve if c["test_accuracy"] >= level), None)
        for level in LEVELS
    }
    return {
        "cpu": environment["cpu"],
        "versions": environment["versions"],
        "precision": runtime["precision"],
        "jit_compile": runtime["jit_compile"],
        "epochs": curve,
        "planned_epochs": runtime["epochs"],  # a fractional count (--epochs 8.5) makes its last row a short epoch
        "training_seconds": elapsed,
        "seconds_to_test_accuracy": reached,
        "final_test_accuracy": final_metrics["accuracy"],
        "final_tta": final_metrics["tta"],
    }


def main() -> None:
    from keras_cifar import cli
    from keras_cifar.config import parse_train_args, resolve_config
    from keras_cifar.data import load_cifar10
    from keras_cifar.run import RunDir
    from keras_cifar.training import train

    def run(argv):
        config = resolve_config(parse_train_args(argv))
        data = load_cifar10(config.data_dir, config.source)
        x_test, y_test = data.x_test[: config.test_limit], data.y_test[: config.test_limit]
        records = []
        run = RunDir(train(config, extra_callbacks=[make_callback(x_test, y_test, records)]))
        record = run.require_record()
        timing = summarise(records, run.read_metrics(), record.runtime, record.environment)
        run.write_timing(timing)
        print(f"{'epoch':>5} {'train s':>9} {'test acc':>9}")
        for row in timing["epochs"]:
            print(f"{row['epoch']:>5} {row['training_seconds_so_far']:>9.1f} {row['test_accuracy']:>9.2%}")
        print(f"final (TTA {timing['final_tta']}): {timing['final_test_accuracy']:.2%}; wrote {run / RunDir.TIMING}")

    raise SystemExit(cli.run(run))


if __name__ == "__main__":
    main()
