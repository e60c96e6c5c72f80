"""Beyond accuracy: how far to trust a model's confidence, how it holds up on damaged images, and its worst
mistakes.

- Calibration: expected calibration error (ECE) over 15 equal-width confidence bins (Guo et al., "On Calibration
  of Modern Neural Networks", 2017): the gap between accuracy and mean confidence in each bin, weighted by the
  bin's share of images. 0 is perfectly calibrated; an overconfident net has a large ECE.
- Common corruptions as CIFAR-10-C defines them (Hendrycks & Dietterich, ICLR 2019, `make_cifar_c.py`): six of
  its fifteen, each at its five severities with its parameters, made here from the test images (CIFAR-10-C
  itself cannot be downloaded everywhere). Seeded, so every model sees the same damaged images.
- The most confident mistakes, for a gallery.
"""

from __future__ import annotations

import io

import numpy as np

CALIBRATION_BINS = 15
# Parameter per severity 1-5, as in CIFAR-10-C; pixel values in 0-1 where a value is one.
CORRUPTIONS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise standard deviation
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma, pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards each image's channel means
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downscaled to this fraction of the side, then back up
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
}


def calibration(labels, probabilities, bins: int = CALIBRATION_BINS) -> dict:
    """ECE, the largest bin gap (MCE), mean confidence, and the bins of a reliability diagram."""
    labels = np.asarray(labels).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lower, upper]
    rows, ece, mce = [], 0.0, 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        row = {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count}
        if count:
            accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
            gap = abs(accuracy - mean_confidence)
            ece += gap * count / len(labels)
            mce = max(mce, gap)
            row.update(accuracy=accuracy, confidence=mean_confidence)
        rows.append(row)
    return {"ece": float(ece), "mce": float(mce), "mean_confidence": float(confidence.mean()), "bins": rows}


def confident_mistakes(labels, probabilities, class_names, k: int = 16) -> list[dict]:
    """The `k` wrong answers given with the highest confidence, most confident first."""
    labels = np.asarray(labels).ravel()
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:k]
    return [
        {
            "index": int(i),
            "true": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": float(probabilities[i, predicted[i]]),
        }
        for i in order
    ]


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """`images` (uint8, N x H x W x 3) with corruption `name` at `severity` 1-5, as uint8."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1-5, got {severity}")
    c = CORRUPTIONS[name][severity - 1]
    if name in ("jpeg", "pixelate"):
        return np.stack([_through_pil(image, name, c) for image in images])
    x = np.asarray(images, dtype=np.float32) / 255.0
    if name == "gaussian_noise":
        rng = np.random.default_rng([seed, severity])
        x = x + rng.normal(scale=c, size=x.shape).astype(np.float32)
    elif name == "gaussian_blur":
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0, c, c, 0), mode="nearest")
    elif name == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        x = (x - means) * c + means
    elif name == "brightness":
        from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

        hsv = rgb_to_hsv(x)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        x = hsv_to_rgb(hsv)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)  # truncated, as CIFAR-10-C's np.uint8 does


def _through_pil(image: np.ndarray, name: str, c) -> np.ndarray:
    from PIL import Image

    picture = Image.fromarray(image)
    if name == "jpeg":
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=c)
        return np.asarray(Image.open(buffer).convert("RGB"))
    side = picture.size[0]
    small = picture.resize((int(side * c), int(side * c)), Image.BOX)
    return np.asarray(small.resize((side, side), Image.BOX))


def corruption_accuracy(predict, images, labels, seed: int = 0) -> dict:
    """Accuracy on the clean images and under every corruption and severity; `predict(images) -> probabilities`.

    `mean` is the average over all 30 corrupted sets, and `relative` that mean over the clean accuracy."""
    labels = np.asarray(labels).ravel()

    def accuracy(x):
        return float(np.mean(predict(x).argmax(axis=1) == labels))

    clean = accuracy(images)
    table = {}
    for number, name in enumerate(CORRUPTIONS, start=1):
        print(f"corruptions: {name} ({number}/{len(CORRUPTIONS)}), severities 1-5", flush=True)
        table[name] = [accuracy(corrupt(images, name, s, seed)) for s in range(1, 6)]
    mean = float(np.mean([a for row in table.values() for a in row]))
    return {
        "images": int(len(labels)),
        "clean": clean,
        "by_corruption": table,
        "mean": mean,
        "relative": mean / clean if clean else 0.0,
    }
