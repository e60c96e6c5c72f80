"""Does each exported file still do what the Keras model does, and how fast is it on this CPU?"""

from __future__ import annotations

import numpy as np

from keras_cifar.evaluation.latency import speed
from keras_cifar.export.runtime import predict_in_batches


def parity(probabilities: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of `probabilities` and how far its predictions are from the reference model's."""
    accuracy = float(np.mean(probabilities.argmax(1) == labels))
    return {
        "accuracy": accuracy,
        "accuracy_delta_points": 100 * (accuracy - float(np.mean(reference.argmax(1) == labels))),
        "top1_agreement": float(np.mean(probabilities.argmax(1) == reference.argmax(1))),
        "max_probability_gap": float(np.max(np.abs(probabilities - reference))),
    }


def check_format(predictor, images, labels, reference, max_drop_points) -> dict:
    result = parity(predict_in_batches(predictor, images), reference, labels)
    result.update(speed(predictor, images))
    result["flagged"] = result["accuracy_delta_points"] < -max_drop_points
    return result


def format_report_table(report: dict) -> str:
    header = (
        f"{'format':<20} {'size MB':>8} {'accuracy':>9} {'delta pt':>9} {'agree':>7} {'max gap':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'img/s@64':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, row in report["formats"].items():
        lines.append(
            f"{name:<20} {row['size_bytes'] / 1e6:>8.2f} {row['accuracy']:>9.2%} "
            f"{row['accuracy_delta_points']:>+9.2f} {row['top1_agreement']:>7.2%} "
            f"{row['max_probability_gap']:>8.4f} {row['latency_ms_median']:>7.2f} {row['latency_ms_p95']:>7.2f} "
            f"{row['throughput_images_per_second']:>9.0f}{'  FLAGGED' if row['flagged'] else ''}"
        )
    lines.append(
        f"reference: Keras float32 on {report['num_test_images']} test images; flagged = accuracy more "
        f"than {report['max_accuracy_drop_points']:g} points below it"
    )
    return "\n".join(lines)
