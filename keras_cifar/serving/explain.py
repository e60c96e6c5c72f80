"""Why the model chose its label: the 32x32 image it saw, and an occlusion-sensitivity map (Zeiler & Fergus, 2014):
how much the chosen class's probability falls when each 8x8 patch is covered with the image's mean colour.

Occlusion needs only predictions, so it works for every served format (TFLite and ONNX included), where gradient
methods such as Grad-CAM need the Keras model. It costs one batch of 49 extra images per explained image."""

from __future__ import annotations

import base64
import io

import numpy as np

PATCH, STRIDE = 8, 4


def _positions(size: int, patch: int = PATCH, stride: int = STRIDE) -> range:
    return range(0, size - patch + 1, stride)


def occlusion_batch(image: np.ndarray, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """The image once per patch position, that patch covered: (rows * cols, H, W, C), row-major positions."""
    height, width = image.shape[:2]
    fill = image.reshape(-1, image.shape[-1]).mean(axis=0)
    tops, lefts = _positions(height, patch, stride), _positions(width, patch, stride)
    batch = np.repeat(image[None].astype(np.float32), len(tops) * len(lefts), axis=0)
    for i, (top, left) in enumerate((t, s) for t in tops for s in lefts):
        batch[i, top : top + patch, left : left + patch] = fill
    return batch


def saliency(base: float, occluded: np.ndarray, image_shape) -> list[list[float]]:
    """The fall in the chosen class's probability at each of `occlusion_batch`'s positions for an image of
    `image_shape`, as a grid scaled so the largest fall is 1 (all 0 if none)."""
    drop = np.clip(base - np.asarray(occluded, dtype=np.float64), 0, None)
    peak = drop.max()
    grid = (drop / peak if peak > 0 else drop).reshape(len(_positions(image_shape[0])), -1)
    return np.round(grid, 3).tolist()


def png_data_url(image: np.ndarray) -> str:
    """The image as a data: URL the page can draw, so it shows exactly what the model saw."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
