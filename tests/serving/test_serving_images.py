"""Decoding untrusted images: only the advertised formats, size checked before decoding, never an exception
other than ImageError, and the pixels right (16-bit scaled, transparency flattened, EXIF orientation applied)."""

import io
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from keras_cifar.serving.images import MAX_PIXELS, ImageError, decode_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from serve_faults import bad_exif_jpeg, gif_with_frames, jpeg_claiming, webp_claiming  # noqa: E402


def encode(image, fmt, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def reference(image) -> np.ndarray:
    """The straightforward pipeline at full size: upright, flattened onto white, centre square, Lanczos 32x32."""
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.resize((32, 32), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any image's pixels are decoded."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{self.size} image decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_palette_png_bomb_is_refused_from_its_header_without_decoding(no_decoding):
    bomb = encode(Image.new("P", (7000, 7000)), "PNG")  # 6 KB; 49 megapixels decoded
    assert len(bomb) < 10_000
    with pytest.raises(ImageError, match="7000x7000 is 49,000,000 pixels"):
        decode_image(bomb, "bomb.png")


@pytest.mark.parametrize(
    "data, name",
    [
        (lambda: jpeg_claiming(65500, 65500), "jpeg 65500"),
        (lambda: jpeg_claiming(8000, 8000), "jpeg 8000"),
        (lambda: webp_claiming(16383, 16383), "webp 16383"),
    ],
)
def test_huge_dimensions_in_a_header_are_refused_without_decoding(no_decoding, data, name):
    with pytest.raises(ImageError, match="pixels"):
        decode_image(data(), name)


def test_the_largest_accepted_image_decodes_and_a_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    from PIL import JpegImagePlugin

    side = int(MAX_PIXELS**0.5)
    array, size = decode_image(encode(Image.new("P", (side, side), 0), "PNG"))
    assert size == (side, side) and array.shape == (32, 32, 3)
    decoded_sizes = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        decoded_sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    photo = np.asarray(Image.new("RGB", (4000, 3000), (200, 100, 50)))
    array, size = decode_image(encode(Image.fromarray(photo), "JPEG"), "photo.jpg")
    assert size == (4000, 3000)  # the stored size is reported, not the decoded one
    assert set(decoded_sizes) == {(500, 375)}  # DCT-scaled by 1/8: 64x fewer pixels decoded
    assert np.abs(array.astype(int) - [200, 100, 50]).max() <= 3


def test_only_the_five_advertised_formats_are_opened():
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP"):
        assert decode_image(encode(image, fmt), fmt)[0].shape == (32, 32, 3)
    for fmt in ("TIFF", "ICO", "PPM", "TGA", "PCX"):
        with pytest.raises(ImageError, match="not an image in a supported format"):
            decode_image(encode(image, fmt), f"a.{fmt.lower()}")


def test_a_malformed_exif_block_does_not_fail_the_image():
    data = bad_exif_jpeg()  # ImageOps.exif_transpose raises TypeError on it
    with pytest.raises(TypeError):
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    array, size = decode_image(data, "exif.jpg")
    assert size == (60, 40) and np.abs(array.astype(int) - [200, 40, 40]).max() <= 8


def test_exif_orientation_is_applied_as_exif_transpose_does():
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(picture, "PNG", exif=exif.tobytes())
        array, size = decode_image(data)
        assert size == (90, 60)
        np.testing.assert_allclose(array, reference(Image.open(io.BytesIO(data))), atol=2, err_msg=str(orientation))


@pytest.mark.parametrize("level", [0, 64, 128, 255])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(level):
    data = encode(Image.fromarray(np.full((8, 8), level * 257, dtype=np.uint16)), "PNG")  # 8-bit grey in 16 bits
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    array, _ = decode_image(data)
    assert (array == level).all()  # converting by clipping at 255 made every grey but black white


@pytest.mark.parametrize("transparency", ["index", "alpha per entry"])
def test_transparent_palette_images_are_flattened_onto_white(transparency):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 16, (50, 70), dtype=np.uint8), "P")
    image.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
    alpha = 3 if transparency == "index" else rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
    data = encode(image, "PNG", transparency=alpha)
    np.testing.assert_array_equal(decode_image(data)[0], reference(Image.open(io.BytesIO(data))))


def test_rgba_is_flattened_onto_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    assert (decode_image(encode(image, "PNG"))[0] == 255).all()


def test_an_animation_costs_its_first_frame_only():
    data = gif_with_frames(50_000)  # 750 KB of frames after the first
    start = time.process_time()
    array, size = decode_image(data, "frames.gif")
    assert size == (64, 64) and time.process_time() - start < 0.5


def test_any_damage_to_any_format_is_an_image_error():
    """Truncations and random byte changes in each format: ImageError or a decoded image, nothing else."""
    rng = random.Random(0)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x011A] = 6, "maker", (72, 1)
    originals = [
        encode(picture, "PNG"),
        encode(picture, "JPEG", exif=exif.tobytes()),
        encode(picture, "WEBP"),
        encode(picture.convert("P"), "GIF"),
        encode(picture, "BMP"),
        bad_exif_jpeg(),
    ]
    for original in originals:
        for trial in range(150):
            data = bytearray(original)
            if trial % 3 == 0:
                data = data[: rng.randrange(1, len(data))]
            else:
                for _ in range(rng.randint(1, 6)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                array, _ = decode_image(bytes(data), "damaged")
                assert array.shape == (32, 32, 3) and array.dtype == np.uint8
            except ImageError:
                pass


def test_empty_and_non_image_data():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", "empty.png")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"hello", "notes.png")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        good = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
        decode_image(good[: len(good) // 2], "half.png")


def test_webp_gets_half_the_pixels_because_libwebp_decodes_into_two_canvases(no_decoding):
    with pytest.raises(ImageError, match="8,388,608 .4096x2048. accepted for WebP"):
        decode_image(webp_claiming(4096, 4096), "square.webp")
