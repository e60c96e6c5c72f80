"""The final report of a run: one pass over the test set, metrics.json and the two plots.

Training and `python -m keras_cifar.evaluate` both end here, so a run directory evaluated again gives the
same files in the same shape.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import keras

from keras_cifar.errors import CheckpointError
from keras_cifar.evaluation.history import read_history
from keras_cifar.evaluation.metrics import compute_metrics, format_metrics_table, predict_probabilities, write_metrics
from keras_cifar.evaluation.plots import plot_confusion_matrix, plot_training_curves


def load_model_file(path) -> keras.Model:
    """Load a saved `.keras` model for inference, with a broken or missing file named in the error."""
    import keras_cifar.data.augmentation  # noqa: F401 - registers the augmentation layers a saved model may hold
    import keras_cifar.models  # noqa: F401 - registers the builders' custom initialisers

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - zip, h5 and config errors all mean an unusable file
        raise CheckpointError(f"cannot load the model {path} ({type(exc).__name__}: {str(exc)[:200]}); the file is "
                              "truncated, corrupt or not a Keras model: retrain, or restore it from a copy") from None


def training_summary(history_csv: Path) -> dict:
    """Epochs, best epoch, time and throughput, read back from the run's own log."""
    history = read_history(history_csv)
    epochs = history["epoch"]
    summary = {"epochs_run": len(epochs)}
    scores = history.get("val_accuracy", [])
    if any(not math.isnan(v) for v in scores):
        best = max(range(len(scores)), key=lambda i: -math.inf if math.isnan(scores[i]) else scores[i])
        summary.update(best_epoch=int(epochs[best]) + 1, best_val_accuracy=scores[best])
    if "epoch_seconds" in history:
        summary["training_seconds"] = sum(history["epoch_seconds"])
        # The first epoch includes graph tracing and compilation; later ones show the steady state.
        steady = history["images_per_second"][1:] or history["images_per_second"]
        summary["train_images_per_second"] = statistics.median(steady)
    return summary


def evaluate_model(model, images, labels, class_names, tta="none") -> dict:
    probabilities = predict_probabilities(model, images, tta=tta)
    return compute_metrics(labels, probabilities, class_names)


def report_run(run_dir, x_test, y_test, class_names, tta="none", model_path=None, data_fingerprint=None) -> dict:
    """Evaluate a run directory's best model (or `model_path`) and write metrics.json and the plots beside it."""
    run_dir = Path(run_dir)
    model_path = Path(model_path) if model_path else run_dir / "model.keras"
    model = load_model_file(model_path)
    metrics = evaluate_model(model, x_test, y_test, class_names, tta=tta)
    extra = {"model_path": str(model_path), "model_name": model.name, "parameters": model.count_params(), "tta": tta}
    if data_fingerprint:
        extra["data_fingerprint"] = data_fingerprint
    config_file = run_dir / "config.json"
    if config_file.is_file():
        saved = json.loads(config_file.read_text())
        extra.update(arch=saved["config"]["arch"], data_fingerprint=data_fingerprint or saved["data"]["fingerprint"])
    history = run_dir / "history.csv"
    if history.is_file():
        extra["training"] = training_summary(history)
        plot_training_curves(history, run_dir / "training_curves.png", title=f"{model.name} training")
    write_metrics(metrics, run_dir / "metrics.json", extra=extra)
    plot_confusion_matrix(metrics["confusion_matrix"], class_names, run_dir / "confusion_matrix.png",
                          title=f"{model.name}: test accuracy {metrics['accuracy']:.2%}")
    print(format_metrics_table(metrics, title=f"{model.name} on {metrics['num_test_images']} test images"
                                               f"{'' if tta in ('none', False) else f' (TTA: {tta})'}"), flush=True)
    return metrics
