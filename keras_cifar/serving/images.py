"""Turning any uploaded or local picture into the 32x32 RGB array the models take.

Photos arrive in every size, mode and orientation. Each is centre-cropped to a square (CIFAR-10 images are
square, with the object in the middle), resized to 32x32 with Pillow's antialiased Lanczos filter (which
averages over the whole source area instead of sampling a few pixels), flattened onto white if it has
transparency, turned upright by its EXIF tag and converted to RGB.

The order is chosen for untrusted files: only the five advertised formats are opened, the header's size is
checked before a pixel is decoded, JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves 128
pixels on each side, the square is cut by the resize itself (its source box, no copy), and flattening and
turning happen on the 32x32 result, where they are cheap (both commute with resizing, so the result is the one
of doing them first). An EXIF block Pillow cannot read leaves the image as stored instead of failing it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from keras_cifar.errors import CheckpointError, KerasCifarError

SIZE = 32
# Pillow's names for the formats the page, the API and `predict` advertise; any other file is refused unread.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
FORMAT_NAMES = "PNG, JPEG, WebP, GIF or BMP"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
# At most 4096x4096 pixels are decoded, checked from the header before decoding: a small compressed file can
# expand to gigabytes (a "decompression bomb"). A 32x32 classifier gains nothing from more: a 4096-pixel side
# is already averaged 128:1. Decoding the largest accepted image takes about 0.3 s of one core and at most
# 8 bytes a pixel (134 MiB, for RGBA); a 12-megapixel phone photo fits.
MAX_PIXELS = 4096 * 4096
# JPEGs are decoded at reduced scale (libjpeg's DCT scaling) while both sides stay at least this long.
DRAFT_SIDE = 4 * SIZE
# libwebp decodes into two full-size RGBA canvases before Pillow copies the frame out: twice the memory of the
# other formats per pixel, so WebP gets half the pixels (4096x2048), which keeps every decode under ~140 MiB.
WEBP_COST = 2
# `predict` reads at most this much of a file: any image within MAX_PIXELS fits, even stored uncompressed (a
# 4096x4096 32-bit BMP is 64 MiB), with 1 MiB to spare for headers and metadata.
MAX_FILE_BYTES = 4 * MAX_PIXELS + 2**20
# Pillow's own bomb warning (at 89 megapixels) is redundant with the lower limit checked here, and its warnings
# about malformed EXIF blocks are handled here (the block is ignored): neither should reach a log per file.
warnings.filterwarnings("ignore", message=".*decompression bomb", module=r"PIL\.")
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

EXIF_ORIENTATION = 0x0112


class ImageError(KerasCifarError):
    """Data that is not a usable image."""


def check_input_shape(shape) -> None:
    """Uploads and files become 32x32 RGB; a model that takes anything else cannot be served with them."""
    if list(shape) != [SIZE, SIZE, 3]:
        raise CheckpointError(
            f"the model takes input of shape {list(shape)}, but images are resized to "
            f"[{SIZE}, {SIZE}, 3] (32x32 RGB) for it; export a CIFAR-10 model"
        )


def _transpositions():
    from PIL import Image

    T = Image.Transpose
    # The EXIF orientation tag -> the transposition that makes the image upright (as ImageOps.exif_transpose).
    return {
        2: T.FLIP_LEFT_RIGHT,
        3: T.ROTATE_180,
        4: T.FLIP_TOP_BOTTOM,
        5: T.TRANSPOSE,
        6: T.ROTATE_270,
        7: T.TRANSVERSE,
        8: T.ROTATE_90,
    }


def orientation(image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 (as stored) when the EXIF block is absent or unreadable."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    except Exception:  # noqa: BLE001 - a malformed EXIF block (struct, key, type, value errors...) is not fatal
        return 1


def _sixteen_bit_to_l(image):
    """Grayscale of 16 bits a sample (mode I;16* or I) as 8-bit L, scaled by 1/256 instead of clipped at 255."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype.kind == "i":  # mode I: 32-bit signed, which Pillow uses for 16-bit grayscale data
        array = np.clip(array, 0, 65535)
    return Image.fromarray((array.astype(np.uint16, copy=False) >> 8).astype(np.uint8), "L")


def _flatten_palette(image):
    """A palette image with transparent entries as RGB, each entry flattened onto white in the palette itself
    (256 colours instead of a full-size RGBA copy: the same pixels, a third of the memory)."""
    from PIL import Image

    lut = Image.frombytes("P", (256, 1), bytes(range(256)))
    lut.putpalette(image.palette.palette, image.palette.mode)
    if "transparency" in image.info:
        lut.info["transparency"] = image.info["transparency"]
    rgba = np.asarray(lut.convert("RGBA"), dtype=np.float32)[0]
    alpha = rgba[:, 3:] / 255
    flat = np.round(rgba[:, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    image.info.pop("transparency", None)
    image.putpalette(flat.tobytes(), "RGB")
    return image.convert("RGB")


def _resizable(image):
    """The image in a mode Pillow's Lanczos resize accepts, keeping transparency: L, LA, RGB or RGBA."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_l(image)
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        return _flatten_palette(image) if image.has_transparency_data else image.convert("RGB")
    if mode in ("PA", "La", "RGBa"):
        return image.convert("RGBA")
    return image.convert("RGB")  # CMYK and YCbCr JPEGs, and anything else Pillow can convert


def centre_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square of a width x height image, as a resize box (exact, so it is symmetric under flips)."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def to_array(image, turn: int = 1) -> np.ndarray:
    """A decoded image as the (32, 32, 3) uint8 array: centre square, Lanczos, onto white, upright, RGB."""
    from PIL import Image

    resizable = _resizable(image)
    # reducing_gap: a box-average by a whole factor first, down to within 3x of 32 px, then Lanczos; Pillow
    # documents the result as indistinguishable from Lanczos alone, and it is 3-10x faster on large images.
    small = resizable.resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=centre_box(*resizable.size), reducing_gap=3.0)
    if resizable is not image:
        resizable.close()  # frees the full-size copy now rather than when the caller's image is freed
    if small.mode in ("LA", "RGBA"):
        # Resizing averages premultiplied colours, so flattening afterwards equals flattening first.
        white = Image.new("RGBA", small.size, (255, 255, 255, 255))
        small = Image.alpha_composite(white, small.convert("RGBA"))
    small = small.convert("RGB")
    if turn in _transpositions():
        small = small.transpose(_transpositions()[turn])
    return np.asarray(small, dtype=np.uint8)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """A (32, 32, 3) uint8 array and the stored (width, height); ImageError says why `data` is unusable.

    Never raises anything else for any input: every failure of a decoder on a malformed file is an ImageError.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a supported format ({FORMAT_NAMES})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: more than the {max_pixels:,} pixels accepted") from None
    except Exception as exc:  # noqa: BLE001 - a header that breaks a plugin is a corrupt file
        raise ImageError(f"{name}: the image is truncated or corrupt ({type(exc).__name__}: {exc})"[:300]) from None
    try:
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageError(f"{name}: the image has no pixels ({width}x{height})")
        limit = max_pixels // WEBP_COST if image.format == "WEBP" else max_pixels
        if width * height > limit:
            side = int(max_pixels**0.5)
            shape = f"{side}x{side // WEBP_COST}" if image.format == "WEBP" else f"{side}x{side}"
            raise ImageError(
                f"{name}: {width}x{height} is {width * height:,} pixels, more than the {limit:,} "
                f"({shape}) accepted{' for WebP' if image.format == 'WEBP' else ''}; scale it down "
                "first (the model sees 32x32)"
            )
        image.draft(None, (DRAFT_SIDE, DRAFT_SIDE))  # JPEG: decode at 1/2-1/8 scale; other formats ignore it
        image.load()  # the first frame only: frames of an animation after it are never read
        turn = orientation(image)
        array = to_array(image, turn)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data, bad chunks, decoder errors, out of memory...
        raise ImageError(f"{name}: the image is truncated or corrupt ({type(exc).__name__}: {exc})"[:300]) from None
    finally:
        image.close()
    return array, (width, height)


def image_files(paths) -> list[Path]:
    """The image files among `paths`, folders expanded (sorted); a path that does not exist is an error."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ImageError(f"{path}: not a regular file or folder")
        else:
            raise ImageError(f"{path}: no such file or folder")
    if not files:
        raise ImageError(
            f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files
