"""Pixels that deflate cannot shrink are written as a PNG of stored deflate blocks: whatever the image's size and
mode, Pillow and zlib read back exactly the pixels, with valid checksums."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from user_service import images

# (mode, width, height): a row that fills a block exactly, sizes either side of a block, one row, one column.
SHAPES = [
    ("RGB", 1024, 681),
    ("RGBA", 300, 200),
    ("L", 65535 - 1, 1),
    ("L", 65535, 1),
    ("L", 1, 70000),
    ("RGB", 1, 1),
]


def noise(mode: str, width: int, height: int) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(width * height).randbytes(width * height * bands))


def chunks(png: bytes) -> dict[bytes, bytes]:
    """Each chunk's data by type, its CRC checked."""
    found, offset = {}, 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(data, zlib.crc32(kind)), kind
        found[kind] = data
        offset += 12 + length
    return found


@pytest.mark.parametrize(("mode", "width", "height"), SHAPES)
def test_a_stored_png_holds_exactly_the_pixels(mode: str, width: int, height: int) -> None:
    image = noise(mode, width, height)
    out = io.BytesIO()

    images._write_stored_png(image, out)

    png = out.getvalue()
    with Image.open(io.BytesIO(png)) as read:
        assert (read.format, read.mode, read.size) == ("PNG", mode, (width, height))
        assert read.tobytes() == image.tobytes()
    parts = chunks(png)
    assert list(parts) == [b"IHDR", b"IDAT", b"IEND"]
    # zlib checks the Adler-32 at the end of the stream; each row is behind its filter byte 0.
    assert len(zlib.decompress(parts[b"IDAT"])) == height * (1 + width * len(mode))
