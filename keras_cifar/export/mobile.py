"""Does an exported TFLite file run as it is in MediaPipe Tasks' ImageClassifier, what phone and web apps load it
with, and does it answer there as it does here?

MediaPipe is optional (`pip install "keras-cifar[mobile]"`): only the exporter's check imports it, inside the
functions, and the report says when it was not there to check.
"""

from __future__ import annotations

import numpy as np

# Test images each TFLite file classifies in MediaPipe at export time (one call per image): enough to see a 0.1 %
# disagreement, without running the whole test set once more per file.
MEDIAPIPE_CHECK_IMAGES = 1000


def mediapipe_classify(path, images: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, list]:
    """MediaPipe ImageClassifier (CPU) on each uint8 RGB image: (scores [N, classes] by class index, the index it
    ranks first for each image, the class name it gives each index, None where it gives none)."""
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import image_classifier

    scores, first, names = np.zeros((len(images), num_classes), np.float32), [], [None] * num_classes
    cpu = BaseOptions(model_asset_path=str(path), delegate=BaseOptions.Delegate.CPU)
    options = image_classifier.ImageClassifierOptions(base_options=cpu)
    with image_classifier.ImageClassifier.create_from_options(options) as classifier:
        for row, image in enumerate(images):
            pixels = Image(image_format=ImageFormat.SRGB, data=np.ascontiguousarray(image, dtype=np.uint8))
            categories = classifier.classify(pixels).classifications[0].categories
            first.append(categories[0].index)
            for category in categories:
                scores[row, category.index] = category.score
                names[category.index] = category.category_name
    return scores, np.asarray(first), names


def top1_agreement(first: np.ndarray, probabilities: np.ndarray) -> float:
    """Share of images whose first class is one the reference ranks first: a quantised output often ties, and
    MediaPipe orders tied classes its own way."""
    chosen = probabilities[np.arange(len(first)), first]
    return float(np.mean(chosen >= probabilities.max(axis=1) - 1e-6))


def mediapipe_check(path, images: np.ndarray, probabilities: np.ndarray, labels) -> dict:
    """For export_report.json: whether MediaPipe's ImageClassifier loads the file and names the classes as `labels`,
    and how its answers on `images` compare with `probabilities`, the project's own predictor's for the file."""
    try:
        import mediapipe
    except ImportError:
        return {"checked": False, "reason": 'mediapipe is not installed (pip install "keras-cifar[mobile]")'}
    try:
        scores, first, names = mediapipe_classify(path, images, len(labels))
    except Exception as exc:  # noqa: BLE001 - MediaPipe raises ValueError, RuntimeError, FileNotFoundError...
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        return {"checked": True, "mediapipe": mediapipe.__version__, "loads": False, "error": error}
    return {
        "checked": True,
        "mediapipe": mediapipe.__version__,
        "loads": True,
        "class_names": names == list(labels),
        "images": len(images),
        "top1_agreement": top1_agreement(first, probabilities),
        "max_probability_gap": float(np.max(np.abs(scores - probabilities))),
    }
