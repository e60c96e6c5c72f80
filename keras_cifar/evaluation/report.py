"""The final report of a run: one pass over the test set, metrics.json and its plots (confusion matrix, training
curves, reliability diagram, most confident mistakes).

Training and `python -m keras_cifar.evaluate` both end here, so a run directory evaluated again gives the
same files in the same shape.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from keras_cifar.evaluation.metrics import (
    compute_metrics,
    format_corruptions,
    format_metrics_table,
    predict_probabilities,
    write_metrics,
)
from keras_cifar.evaluation.plots import plot_confusion_matrix, plot_mistakes, plot_reliability, plot_training_curves
from keras_cifar.evaluation.reliability import calibration, confident_mistakes, corruption_accuracy
from keras_cifar.models.saving import load_model_file
from keras_cifar.run import RunDir, read_history


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


def evaluate_model(model, images, labels, class_names, tta="none", corruption_images=0) -> dict:
    """Accuracy and per-class scores, calibration and the most confident mistakes (from the same predictions),
    and, if `corruption_images` > 0, accuracy under common corruptions on that many test images (without TTA)."""
    probabilities = predict_probabilities(model, images, tta=tta)
    metrics = compute_metrics(labels, probabilities, class_names)
    metrics["calibration"] = calibration(labels, probabilities)
    metrics["confident_mistakes"] = confident_mistakes(labels, probabilities, class_names)
    if corruption_images:
        n = min(corruption_images, len(labels))
        metrics["corruptions"] = corruption_accuracy(lambda x: predict_probabilities(model, x), images[:n], labels[:n])
    return metrics


def report_run(
    out, x_test, y_test, class_names, tta="none", model_path=None, data_fingerprint=None, corruption_images=0
) -> dict:
    """Evaluate a run directory's best model (or `model_path`) and write the plots, then metrics.json, into `out`.

    metrics.json is written last and atomically: it marks a run finished, so it never stands beside missing plots."""
    out = out if isinstance(out, RunDir) else RunDir(out)
    model_path = Path(model_path) if model_path else out.model_file
    model = load_model_file(model_path)
    metrics = evaluate_model(model, x_test, y_test, class_names, tta=tta, corruption_images=corruption_images)
    extra = {"model_path": str(model_path), "model_name": model.name, "parameters": model.count_params(), "tta": tta}
    if data_fingerprint:
        extra["data_fingerprint"] = data_fingerprint
    record = out.read_record()
    if record is not None:
        extra.update(arch=record.arch, data_fingerprint=data_fingerprint or record.fingerprint)
    if out.history_file.is_file():
        extra["training"] = training_summary(out.history_file)
        plot_training_curves(out.history_file, out / "training_curves.png", title=f"{model.name} training")
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        class_names,
        out / "confusion_matrix.png",
        title=f"{model.name}: test accuracy {metrics['accuracy']:.2%}",
    )
    plot_reliability(metrics["calibration"], out / "reliability.png", title=f"{model.name}: reliability")
    plot_mistakes(
        x_test, metrics["confident_mistakes"], out / "mistakes.png", title=f"{model.name}: most confident mistakes"
    )
    write_metrics(metrics, out / RunDir.METRICS, extra=extra)
    print(
        format_metrics_table(
            metrics,
            title=f"{model.name} on {metrics['num_test_images']} test images"
            f"{'' if tta in ('none', False) else f' (TTA: {tta})'}",
        ),
        flush=True,
    )
    if "corruptions" in metrics:
        print(format_corruptions(metrics["corruptions"]), flush=True)
    return metrics
