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
# A progressive JPEG is decoded once per scan (an SOS marker), and nothing in libjpeg bounds how many there are: a
# small file of repeated scans costs minutes of CPU. Real encoders write 1 (baseline) to about 12 scans, and
# libjpeg-turbo's own tools warn at 100. The cost of a scan is in proportion to the pixels, so a large image gets
# fewer: at the pixel limit, at most SCANS_AT_MAX_PIXELS.
MAX_JPEG_SCANS = 100
SCANS_AT_MAX_PIXELS = 32
_SOS = b"\xff\xda"
_CHUNK_BYTES = 64 * 1024


def detect_image(source: BinaryIO, *, max_pixels: int) -> str:
    """Return the file extension for a JPEG, PNG or WebP image that decodes in full; raise otherwise. `source` is
    read from where it stands, in Pillow's blocks. Blocks the caller until one of the decoding threads is done."""
    return _DECODERS.submit(_decode, source, max_pixels).result()


def jpeg_scan_count(source: BinaryIO) -> int:
    """How many start-of-scan markers a JPEG holds, read in chunks from where `source` stands (which is restored).

    Entropy-coded data never holds the marker's two bytes (a 0xFF there is followed by 0x00 or a restart marker),
    so only a marker inside another segment's payload, such as an EXIF thumbnail's, counts in excess.
    """
    start = source.tell()
    count, tail = 0, b""
    try:
        while chunk := source.read(_CHUNK_BYTES):
            window = tail + chunk
            count += window.count(_SOS)
            # The last byte goes on with the next chunk, so that a marker split across two chunks counts.
            tail = window[-1:]
    finally:
        source.seek(start)
    return count


def _decode(source: BinaryIO, max_pixels: int) -> str:
    try:
        scans = jpeg_scan_count(source) if _is_jpeg(source) else 0
        with Image.open(source, formats=list(ACCEPTED_FORMATS)) as image:
            fmt = image.format or ""
            width, height = image.size
            if fmt not in ACCEPTED_FORMATS:
                raise UnsupportedMediaType()
            if width * height > max_pixels:
                raise UnsupportedMediaType(
                    f"The image has {width}x{height} pixels; at most {max_pixels} pixels are accepted."
                )
            if fmt == "JPEG" and (scans > MAX_JPEG_SCANS or scans * width * height > SCANS_AT_MAX_PIXELS * max_pixels):
                raise UnsupportedMediaType(
                    f"The JPEG has {scans} scans for {width}x{height} pixels: too costly to decode."
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


def _is_jpeg(source: BinaryIO) -> bool:
    start = source.tell()
    try:
        return source.read(2) == b"\xff\xd8"
    finally:
        source.seek(start)
