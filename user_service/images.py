"""Deciding whether uploaded bytes really are an image we accept, whatever the client claimed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

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
# Decoding takes memory in proportion to pixels. It runs on a fixed set of threads, one per core: at most that many
# decodes at once, and their large buffers come from those threads' malloc arenas only (glibc gives each thread
# that allocates its own arena and keeps what is freed there, so decoding on any of the HTTP layer's worker
# threads would leave a few MiB behind in each).
_DECODERS = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="user-service-image")
_DRAFT_SIZE = (256, 256)


def detect_image(source: BinaryIO, *, max_pixels: int) -> str:
    """Return the file extension for a JPEG, PNG or WebP image that decodes in full; raise otherwise. `source` is
    read from where it stands, in Pillow's blocks. Blocks the caller until one of the decoding threads is done."""
    return _DECODERS.submit(_decode, source, max_pixels).result()


def _decode(source: BinaryIO, max_pixels: int) -> str:
    try:
        with Image.open(source, formats=list(ACCEPTED_FORMATS)) as image:
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
