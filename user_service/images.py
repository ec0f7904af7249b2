"""Deciding whether uploaded bytes really are an image we accept, whatever the client claimed."""

from __future__ import annotations

import io
import threading

from PIL import Image

from user_service.cpu import usable_cores
from user_service.errors import UnsupportedMediaType

# Pillow format name -> (file extension, media type)
ACCEPTED_FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
MEDIA_TYPES = dict(ACCEPTED_FORMATS.values())
# Decoding takes memory in proportion to pixels; at most one decode per core runs at once.
_DECODE_SLOTS = threading.BoundedSemaphore(usable_cores())
_DRAFT_SIZE = (256, 256)


def detect_image(data: bytes, *, max_pixels: int) -> str:
    """Return the file extension for a JPEG, PNG or WebP image that decodes in full; raise otherwise."""
    with _DECODE_SLOTS:
        try:
            with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as image:
                fmt = image.format or ""
                width, height = image.size
                if fmt not in ACCEPTED_FORMATS:
                    raise UnsupportedMediaType()
                if width * height > max_pixels:
                    raise UnsupportedMediaType(
                        f"The image has {width}x{height} pixels; at most {max_pixels} pixels are accepted."
                    )
                if fmt == "JPEG":
                    # Decoding at reduced scale still reads every byte of the stream, at a fraction of the memory.
                    image.draft("RGB", _DRAFT_SIZE)
                image.load()
        except UnsupportedMediaType:
            raise
        except Exception:  # Pillow signals corrupt input with many exception types
            raise UnsupportedMediaType() from None
    return ACCEPTED_FORMATS[fmt][0]
