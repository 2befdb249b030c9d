"""Image codecs: PNGs written by our own encoder are exact, thumbnails shrink and never grow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spark_runtime.image_codec import decode, encode_jpeg, encode_png, encode_thumb, rgb_pixels


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 300, 3), (256, 256, 3), (64, 40, 3)])
def test_png_round_trips_every_pixel_exactly(shape) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for source in (pixels, Image.fromarray(pixels)):
        data = encode_png(source)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # chunk CRCs and structure, as any PNG reader checks them
        assert np.array_equal(np.asarray(decode(data)), pixels)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_png_of_other_modes_is_their_rgb_conversion(mode) -> None:
    image = Image.fromarray(np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)).convert(mode)
    assert np.array_equal(np.asarray(decode(encode_png(image))), np.asarray(image.convert("RGB")))


def test_png_is_deterministic() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert encode_png(pixels) == encode_png(Image.fromarray(pixels))


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_arrays_that_are_not_rgb_bytes_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        rgb_pixels(bad)


def test_thumbnail_shrinks_keeping_the_aspect_ratio_and_never_upscales() -> None:
    wide = Image.new("RGB", (512, 256), (200, 30, 40))
    assert decode(encode_thumb(wide)).size == (256, 128)
    small = Image.new("RGB", (100, 60), (10, 200, 40))
    assert decode(encode_thumb(small)).size == (100, 60)
    assert decode(encode_jpeg(np.asarray(wide), size=64)).size == (64, 32)


def test_thumbnail_is_a_faithful_jpeg() -> None:
    gradient = np.linspace(0, 255, 64 * 64 * 3).astype(np.uint8).reshape(64, 64, 3)
    data = encode_thumb(gradient)
    assert data[:2] == b"\xff\xd8"  # JPEG start-of-image
    error = np.abs(np.asarray(decode(data)).astype(int) - gradient.astype(int))
    assert error.mean() < 3
