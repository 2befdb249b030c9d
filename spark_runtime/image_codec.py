"""Image bytes as the store and the browser see them: lossless PNG, grid thumbnails as JPEG.

A generation's encoding sits on the path between Enter and the next grid, so both encoders
are picked for speed, and both release the GIL while they work, so writer threads encode
on a free core while the render thread runs. Thumbnails are JPEG, which encodes faster
than WebP. PNGs are written here rather than by Pillow: one vectorised "Up" filter and
ISA-L's deflate at level 1 are faster than zlib, and faster than Pillow at its fastest
level, in smaller files than Pillow's. The stream is plain zlib: any PNG reader (Pillow
included) decodes it.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import simplejpeg
from isal.isal_zlib import compress as _deflate  # ISA-L: a zlib-compatible, faster deflate
from PIL import Image

THUMB_SIZE = 256
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
_RGB_8BIT = struct.pack(">BBBBB", 8, 2, 0, 0, 0)  # depth 8, colour type RGB, no interlace


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


Picture = Image.Image | np.ndarray  # a PIL image, or the H x W x 3 uint8 array of one


def rgb_pixels(image: Picture) -> np.ndarray:
    """The H x W x 3 uint8 array of an image (an array in that form is passed through).

    Converting a PIL image copies its pixels while holding the GIL: a writer encoding one
    image in several formats converts it once and hands the array to each encoder.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 array, got {image.dtype} {image.shape}")
        return image
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def encode_png(image: Picture) -> bytes:
    """Lossless RGB PNG of ``image``: the stored image is exactly what the generator rendered."""
    pixels = rgb_pixels(image)
    height, width, _ = pixels.shape
    rows = pixels.reshape(height, width * 3)
    # Each scanline: the filter byte, then its bytes minus the bytes above (mod 256).
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">II", width, height) + _RGB_8BIT
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(filtered.tobytes(), 1)),
            _chunk(b"IEND", b""),
        )
    )


def encode_jpeg(image: Picture, size: int = THUMB_SIZE, quality: int = 88) -> bytes:
    """A JPEG of ``image`` shrunk to fit ``size`` (never upscaled).

    libjpeg-turbo through simplejpeg, which lets go of the GIL while it encodes: Pillow's
    JPEG encoder holds it, and a writer thread holding the GIL stalls the render thread at
    every tensor operation it dispatches.
    """
    pixels = rgb_pixels(image)
    height, width, _ = pixels.shape
    if max(height, width) > size:
        scale = size / max(height, width)
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(shape, Image.Resampling.LANCZOS))
    pixels = np.ascontiguousarray(pixels)
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB", colorsubsampling="420")


def encode_thumb(image: Picture, size: int = THUMB_SIZE) -> bytes:
    """A grid-size JPEG thumbnail (never upscaled)."""
    return encode_jpeg(image, size)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
