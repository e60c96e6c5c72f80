"""Turning any uploaded or local picture into the 32x32 RGB array the models take.

Photos arrive in every size, mode and orientation. Each is turned upright by its EXIF tag, flattened onto white
if it has transparency, converted to RGB, centre-cropped to a square (CIFAR-10 images are square, with the
object in the middle) and resized to 32x32 with Pillow's antialiased Lanczos filter, which averages over the
whole source area instead of sampling a few pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from keras_cifar.errors import KerasCifarError

SIZE = 32
# Larger images are refused before decoding: a small compressed file can expand to gigabytes (a "zip bomb").
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


class ImageError(KerasCifarError):
    """Data that is not a usable image."""


def to_rgb(image):
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def centre_square(image):
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def decode_image(data: bytes, name: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
    """A (32, 32, 3) uint8 array and the original (width, height); ImageError says why `data` is unusable."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{name}: {width}x{height} pixels is more than the {MAX_PIXELS:,} accepted")
            image.seek(0)  # the first frame of an animation
            square = centre_square(to_rgb(image))
            array = np.asarray(square.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read (PNG, JPEG, WebP, GIF and BMP are)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: the image is truncated or corrupt ({exc})") from None
    return array, (width, height)


def image_files(paths) -> list[Path]:
    """The image files among `paths`, folders expanded (sorted); a path that does not exist is an error."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    if not files:
        raise ImageError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files
