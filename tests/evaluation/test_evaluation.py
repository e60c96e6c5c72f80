"""Tests for keras_cifar.evaluation: metrics against hand-worked answers, flip TTA, reports and plots."""

import json
import math
import struct

import keras
import numpy as np
import pytest

from keras_cifar.errors import KerasCifarError
from keras_cifar.evaluation import (
    compute_metrics,
    format_metrics_table,
    most_confused_pairs,
    plot_confusion_matrix,
    plot_training_curves,
    predict_probabilities,
    write_metrics,
)
from keras_cifar.evaluation.plots import plot_mistakes, plot_reliability
from keras_cifar.evaluation.reliability import (
    CORRUPTIONS,
    calibration,
    confident_mistakes,
    corrupt,
    corruption_accuracy,
)

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

# Three classes, seven samples. Predictions (argmax): true 0 -> 0, 0, 1; true 1 -> 1, 2; true 2 -> 2, 2.
THREE_CLASSES = ["ant", "bee", "cow"]
THREE_Y_TRUE = [0, 0, 0, 1, 1, 2, 2]
THREE_PROBABILITIES = [
    [0.8, 0.1, 0.1],
    [0.6, 0.3, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.4, 0.5],
    [0.1, 0.2, 0.7],
    [0.2, 0.1, 0.7],
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def three_class_metrics():
    return compute_metrics(np.array(THREE_Y_TRUE), np.array(THREE_PROBABILITIES), THREE_CLASSES)


def test_compute_metrics_matches_hand_worked_answers(three_class_metrics):
    m = three_class_metrics
    # Confusion matrix: rows are true classes, columns predicted.
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["num_test_images"] == 7
    # Precision = diagonal / column total; recall = diagonal / row total.
    expected = {
        "ant": (2 / 2, 2 / 3, 0.8, 3),
        "bee": (1 / 2, 1 / 2, 0.5, 2),
        "cow": (2 / 3, 2 / 2, 0.8, 2),
    }
    for name, (precision, recall, f1, support) in expected.items():
        scores = m["per_class"][name]
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert scores["f1"] == pytest.approx(f1)
        assert scores["support"] == support
    assert m["precision_macro"] == pytest.approx(13 / 18)
    assert m["recall_macro"] == pytest.approx(13 / 18)
    assert m["f1_macro"] == pytest.approx(0.7)
    # With three classes, "top 5" covers them all.
    assert m["top5_accuracy"] == 1.0
    true_class_probabilities = [0.8, 0.6, 0.3, 0.7, 0.4, 0.7, 0.7]
    expected_log_loss = -sum(math.log(p) for p in true_class_probabilities) / 7
    assert m["log_loss"] == pytest.approx(expected_log_loss, rel=1e-5)


def test_compute_metrics_returns_plain_python_types(three_class_metrics):
    m = three_class_metrics
    assert set(m) == {
        "accuracy", "top5_accuracy", "log_loss", "precision_macro", "recall_macro", "f1_macro",
        "per_class", "num_test_images", "confusion_matrix",
    }  # fmt: skip
    assert type(m["accuracy"]) is float
    assert type(m["num_test_images"]) is int
    assert type(m["per_class"]["ant"]["support"]) is int
    assert all(type(count) is int for row in m["confusion_matrix"] for count in row)
    json.dumps(m)


def test_top5_accuracy_counts_ranks_one_to_five_and_scores_absent_classes():
    names = [f"class{i}" for i in range(6)]
    ranked = [0.30, 0.25, 0.20, 0.15, 0.07, 0.03]  # class 0 ranked first ... class 5 last
    y_true = [0, 4, 5]  # ranked 1st (hit), 5th (hit), 6th (miss)
    m = compute_metrics(y_true, np.array([ranked] * 3), names)
    assert m["top5_accuracy"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["per_class"]["class2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert len(m["confusion_matrix"]) == 6


def test_most_confused_pairs_sorted_by_count_without_diagonal_or_zeros():
    confusion = [[50, 3, 0], [1, 60, 4], [0, 2, 70]]
    assert most_confused_pairs(confusion, THREE_CLASSES, k=3) == [
        ("bee", "cow", 4),
        ("ant", "bee", 3),
        ("cow", "bee", 2),
    ]
    assert len(most_confused_pairs(confusion, THREE_CLASSES, k=10)) == 4


def _dense_softmax_model(features):
    """A tiny classifier over `features(inputs)`, seeded so its weights are not symmetric by accident."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3))
    scaled = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(4, activation="softmax")(features(scaled))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)


def test_predict_probabilities_flip_tta_is_mean_of_image_and_mirror(images):
    model = _dense_softmax_model(keras.layers.Flatten())  # sees pixel positions: not mirror-symmetric
    plain = predict_probabilities(model, images, batch_size=2)
    tta = predict_probabilities(model, images, batch_size=2, tta=True)
    pixels = images.astype(np.float32)
    mirrored = model.predict(pixels[:, :, ::-1, :], verbose=0)  # width axis flipped
    expected = (model.predict(pixels, verbose=0) + mirrored) / 2
    assert plain.shape == (5, 4) and plain.dtype == np.float32 and tta.dtype == np.float32
    np.testing.assert_allclose(plain.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tta, expected, atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-4)


def test_predict_probabilities_tta_changes_nothing_for_mirror_symmetric_model(images):
    model = _dense_softmax_model(keras.layers.GlobalAveragePooling2D())
    np.testing.assert_allclose(
        predict_probabilities(model, images, tta=True), predict_probabilities(model, images), atol=1e-6
    )


def test_format_metrics_table_lists_every_class_and_the_accuracy(three_class_metrics):
    table = format_metrics_table(three_class_metrics, title="tiny test")
    assert table.splitlines()[0] == "tiny test"
    for name in THREE_CLASSES:
        assert name in table
    assert "71.43%" in table  # accuracy 5/7
    assert "72.22%" in table  # macro precision 13/18


def test_write_metrics_round_trips_with_extra(three_class_metrics, tmp_path):
    path = tmp_path / "run" / "metrics.json"
    write_metrics(three_class_metrics, path, extra={"model": "m.keras", "tta": True})
    loaded = json.loads(path.read_text())
    assert loaded == {**three_class_metrics, "model": "m.keras", "tta": True}
    assert list(loaded) == sorted(loaded)


def test_write_metrics_refuses_extra_that_overwrites_a_metric(three_class_metrics, tmp_path):
    with pytest.raises(ValueError, match="accuracy"):
        write_metrics(three_class_metrics, tmp_path / "m.json", extra={"accuracy": 1.0})


def _png_width(path):
    """Width in pixels from the PNG header; also checks the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">I", data[16:20])[0]


def _assert_sensible_png(path):
    assert _png_width(path) > 0
    assert path.stat().st_size > 10_000


def test_plot_confusion_matrix_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 40, size=(10, 10)) + np.diag(rng.integers(800, 990, size=10))
    path = tmp_path / "plots" / "confusion.png"
    plot_confusion_matrix(confusion.tolist(), CIFAR10_CLASSES, path)
    _assert_sensible_png(path)


def _write_history(path, rows, learning_rate=True):
    """A log as Keras's CSVLogger writes it: epoch first, then the metrics in sorted order."""
    metrics = ["accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]
    columns = ["epoch"] + [name for name in metrics if learning_rate or name != "learning_rate"]
    lines = [",".join(columns)]
    for epoch in range(rows):
        progress = (epoch + 1) / rows
        values = {
            "epoch": epoch,
            "accuracy": 0.4 + 0.55 * progress,
            "learning_rate": 0.1 * (1 - progress) + 1e-4,
            "loss": 1.8 - 1.6 * progress,
            "val_accuracy": 0.38 + 0.5 * progress,
            "val_loss": 1.9 - 1.4 * progress,
        }
        lines.append(",".join(str(values[column]) for column in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plot_training_curves_adds_learning_rate_panel_only_when_logged(tmp_path):
    with_lr = tmp_path / "with_lr.png"
    without_lr = tmp_path / "without_lr.png"
    plot_training_curves(_write_history(tmp_path / "a.csv", 30), with_lr, title="run a")
    plot_training_curves(_write_history(tmp_path / "b.csv", 30, learning_rate=False), without_lr)
    _assert_sensible_png(with_lr)
    _assert_sensible_png(without_lr)
    assert _png_width(with_lr) / _png_width(without_lr) == pytest.approx(3 / 2, rel=0.05)


def test_plot_training_curves_handles_a_single_epoch(tmp_path):
    path = tmp_path / "one.png"
    plot_training_curves(_write_history(tmp_path / "one.csv", 1), path)
    _assert_sensible_png(path)


def test_plot_training_curves_missing_or_empty_log_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(KerasCifarError, match="nowhere.csv"):
        plot_training_curves(missing, tmp_path / "x.png")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("epoch,accuracy,loss\n")
    with pytest.raises(KerasCifarError, match="header_only.csv"):
        plot_training_curves(header_only, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# Beyond accuracy: calibration, corruptions, confident mistakes


def test_calibration_error_is_zero_when_confidence_matches_accuracy_and_large_when_it_does_not():
    labels = np.zeros(1000, dtype=int)
    probabilities = np.full((1000, 2), 0.0)
    probabilities[:, 1], probabilities[:, 0] = 0.3, 0.7  # 70 % confident in class 0 ...
    probabilities[:300] = [0.3, 0.7]  # ... and right 700 times in 1,000 (300 predict class 1 at 70 %)
    calibrated = calibration(labels, probabilities)
    assert calibrated["ece"] == pytest.approx(0.0, abs=1e-9) and calibrated["mean_confidence"] == pytest.approx(0.7)
    assert sum(b["count"] for b in calibrated["bins"]) == 1000 and len(calibrated["bins"]) == 15

    overconfident = np.tile([0.99, 0.01], (1000, 1))
    labels = np.arange(1000) % 2  # right half the time
    result = calibration(labels, overconfident)
    assert result["ece"] == pytest.approx(0.49) and result["mce"] == pytest.approx(0.49)


def test_confident_mistakes_are_the_wrong_answers_most_confident_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    mistakes = confident_mistakes(np.array([0, 0, 1, 1]), probabilities, ["a", "b"], k=5)
    assert [(m["index"], m["true"], m["predicted"]) for m in mistakes] == [(1, "a", "b"), (2, "b", "a")]
    assert mistakes[0]["confidence"] == pytest.approx(0.8)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_damages_more_at_each_severity_and_is_repeatable(name):
    rng = np.random.default_rng(0)
    images = rng.integers(40, 216, size=(16, 32, 32, 3)).astype(np.uint8)
    images[:, :16] //= 2  # some structure for blur, pixelation and JPEG to destroy
    damage = []
    for severity in range(1, 6):
        corrupted = corrupt(images, name, severity)
        assert corrupted.shape == images.shape and corrupted.dtype == np.uint8
        np.testing.assert_array_equal(corrupted, corrupt(images, name, severity))  # seeded
        damage.append(np.abs(corrupted.astype(float) - images).mean())
    assert damage[0] > 0 and damage[-1] > damage[0]
    assert all(b >= a - 0.05 for a, b in zip(damage, damage[1:]))  # near-monotone (JPEG quantisation wobbles)


def test_corruption_accuracy_reports_every_set_and_refuses_unknown_corruptions():
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[2:] = 200
    labels = np.array([0, 0, 1, 1])

    def bright_is_one(x):  # a "model" that tells dark from bright images, which most corruptions keep
        bright = x.reshape(len(x), -1).mean(axis=1) > 100
        return np.stack([~bright, bright], axis=1).astype(float)

    result = corruption_accuracy(bright_is_one, images, labels)
    assert result["clean"] == 1.0 and result["images"] == 4 and len(result["by_corruption"]) == 6
    assert result["relative"] == pytest.approx(result["mean"])
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "contrast", 6)


def test_reliability_and_mistake_figures_are_written(tmp_path):
    probabilities = np.tile([0.8, 0.2], (50, 1))
    labels = np.arange(50) % 2
    plot_reliability(calibration(labels, probabilities), tmp_path / "reliability.png")
    images = np.zeros((50, 32, 32, 3), np.uint8)
    plot_mistakes(images, confident_mistakes(labels, probabilities, ["a", "b"]), tmp_path / "mistakes.png")
    assert (tmp_path / "reliability.png").stat().st_size > 5_000 and (tmp_path / "mistakes.png").stat().st_size > 5_000
