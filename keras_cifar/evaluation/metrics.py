"""Test-set predictions and the figures reported for them.

Everything returned here is plain Python (floats, ints, lists, dicts) so that it can be written to JSON
as it is and compared across runs.
"""

from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from keras_cifar import cli
from keras_cifar.config import TTA_MODES
from keras_cifar.run import write_json

TOP_K = 5


def predict_probabilities(model, images, batch_size=512, tta="none"):
    """Returns the model's class probabilities, float32 (N, C).

    `tta="flip"` averages each image with its left-right mirror: CIFAR objects are as likely facing either
    way (training flips them too), so the mean is a cheap, reliable gain. `"flip_translate"` (airbench's
    level 2) gives that mean half the weight and, for the other half, the flip-averaged predictions of the
    image shifted one pixel up-left and one pixel down-right (reflect padding): 6 views an image.
    `True`/`False` mean "flip"/"none".
    """
    mode = {True: "flip", False: "none"}.get(tta, tta)
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    images = np.asarray(images, dtype=np.float32)
    if mode == "none":
        return _predict(model, images, batch_size)
    probabilities = _flip_mean(model, images, batch_size)
    if mode == "flip_translate":
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        shifted = [padded[:, :-2, :-2], padded[:, 2:, 2:]]
        translated = sum(_flip_mean(model, view, batch_size) for view in shifted) / len(shifted)
        probabilities = (probabilities + translated) / 2
    return probabilities.astype(np.float32, copy=False)


def _flip_mean(model, images, batch_size):
    return (_predict(model, images, batch_size) + _predict(model, np.flip(images, axis=2), batch_size)) / 2


def _predict(model, images, batch_size):
    verbose = 1 if cli.on_terminal() and len(images) > 1000 else 0  # a bar for the test set, not for one image
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=verbose), dtype=np.float32)


def compute_metrics(y_true, probabilities, class_names):
    """Returns the accuracy, top-5 accuracy, log loss, macro and per-class scores and confusion matrix.

    Every class in `class_names` is scored, including any absent from `y_true`, so results from
    different subsets of the test set have the same shape.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    # Kept in float32 so scikit-learn clips at float32 epsilon (about 1e-7), the floor Keras's
    # crossentropy uses: the log loss then compares with the training log's val_loss.
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = list(range(len(class_names)))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "top5_accuracy": _top_k_accuracy(y_true, probabilities, min(TOP_K, len(labels))),
        "log_loss": float(log_loss(y_true, probabilities, labels=labels)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "num_test_images": int(len(y_true)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _top_k_accuracy(y_true, probabilities, k):
    """Top-k accuracy; 1.0 when k covers every class, a case scikit-learn warns about (or, for two
    classes, rejects) rather than scores."""
    num_classes = probabilities.shape[1]
    if k >= num_classes:
        return 1.0
    return float(top_k_accuracy_score(y_true, probabilities, k=k, labels=list(range(num_classes))))


def format_metrics_table(metrics, title=None):
    """Returns the per-class and overall scores as a fixed-width table for a terminal or a log."""
    names = list(metrics["per_class"])
    width = max(len(name) for name in names + ["macro avg"])
    header = f"{'class':<{width}}  {'precision':>9}  {'recall':>8}  {'F1':>8}  {'support':>8}"
    rule = "-" * len(header)
    rows = [_table_row(name, scores, width) for name, scores in metrics["per_class"].items()]
    macro = {
        "precision": metrics["precision_macro"],
        "recall": metrics["recall_macro"],
        "f1": metrics["f1_macro"],
        "support": metrics["num_test_images"],
    }
    lines = [title] if title else []
    lines += [header, rule, *rows, rule, _table_row("macro avg", macro, width), ""]
    lines += [
        f"accuracy        {metrics['accuracy']:.2%}",
        f"top-5 accuracy  {metrics['top5_accuracy']:.2%}",
        f"log loss        {metrics['log_loss']:.4f}",
    ]
    if "calibration" in metrics:
        c = metrics["calibration"]
        lines.append(f"calibration     ECE {c['ece']:.2%} (mean confidence {c['mean_confidence']:.2%})")
    return "\n".join(lines)


def format_corruptions(corruptions):
    """Accuracy under each corruption at severities 1-5, the clean accuracy and the mean, as a table."""
    lines = [
        f"common corruptions on {corruptions['images']} test images (no TTA): clean {corruptions['clean']:.2%}",
        f"{'corruption':<16}" + "".join(f"{f'sev {s}':>9}" for s in range(1, 6)),
    ]
    for name, row in corruptions["by_corruption"].items():
        lines.append(f"{name:<16}" + "".join(f"{a:>9.2%}" for a in row))
    lines.append(f"mean {corruptions['mean']:.2%} ({corruptions['relative']:.1%} of clean)")
    return "\n".join(lines)


def _table_row(name, scores, width):
    return (
        f"{name:<{width}}  {scores['precision']:>9.2%}  {scores['recall']:>8.2%}  "
        f"{scores['f1']:>8.2%}  {scores['support']:>8d}"
    )


def write_metrics(metrics, path, extra=None):
    """Writes the metrics, with `extra` facts about the run (model, TTA, data), as sorted JSON.

    Refuses an `extra` key that would overwrite a metric, so a report cannot silently lie.
    """
    extra = extra or {}
    clashes = sorted(set(metrics) & set(extra))
    if clashes:
        raise ValueError(f"extra would overwrite metrics: {', '.join(clashes)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**metrics, **extra})


def most_confused_pairs(confusion, class_names, k=5):
    """Returns up to `k` (true, predicted, count) mistakes, most frequent first, to say what to fix."""
    confusion = np.asarray(confusion)
    pairs = [
        (class_names[t], class_names[p], int(confusion[t, p]))
        for t in range(len(class_names))
        for p in range(len(class_names))
        if t != p and confusion[t, p] > 0
    ]
    return sorted(pairs, key=lambda pair: -pair[2])[:k]
