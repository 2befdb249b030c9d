"""Image bytes as the store and the browser see them: lossless PNG, grid thumbnails as JPEG.

JPEG thumbnails encode in a quarter of a millisecond at 256 px (WebP takes 1.5-7 ms), and a
generation's encoding sits on the path between Enter and the next grid.
"""

from __future__ import annotations

import io

from PIL import Image

THUMB_SIZE = 256


def encode_png(image: Image.Image) -> bytes:
    # compress_level 1: a fraction of the default's time for ~10% more bytes; PNG stays
    # lossless, so a stored image is exactly what the generator rendered.
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_thumb(image: Image.Image, size: int = THUMB_SIZE) -> bytes:
    """A grid-size JPEG thumbnail (never upscaled)."""
    thumb = image.convert("RGB")
    if max(thumb.size) > size:
        thumb = thumb.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
