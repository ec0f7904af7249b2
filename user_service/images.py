"""Deciding whether uploaded bytes really are an image we accept, whatever the client claimed, and re-encoding it:
only the pixels are kept (upright, first frame, at most AVATAR_MAX_DIMENSION on the longer side), never the
metadata the file carried (EXIF with its GPS position, XMP, text chunks, comments, colour profiles)."""

from __future__ import annotations

import io
import logging
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, cast

from PIL import Image, ImageCms, ImageOps

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
# What a re-encoded avatar is saved with: quality that hides re-encoding at avatar sizes, and no metadata at all.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 85},
    "PNG": {"compress_level": 6},
    "WEBP": {"quality": 85, "method": 2},
}
# The modes each format is written in; anything else is converted first (CMYK and 16-bit images included).
_SAVE_MODES = {"JPEG": ("L", "RGB"), "PNG": ("L", "LA", "RGB", "RGBA"), "WEBP": ("RGB", "RGBA")}
_SRGB = ImageCms.createProfile("sRGB")
# PNG colour types of the modes a PNG is written in (8 bits a sample).
_PNG_COLOUR_TYPES = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
# Pixels that deflate saves less than a tenth of (a noisy photo, a screenshot of noise) are stored uncompressed:
# compressing them costs more CPU than anything else in an upload, for nothing. Judged on a sample of rows.
_INCOMPRESSIBLE_RATIO = 0.9
_SAMPLE_ROWS = 16
# A zlib stream's header for deflate with a 32 KiB window and no preset dictionary (RFC 1950), and the largest stored
# deflate block (RFC 1951).
_ZLIB_HEADER = b"\x78\x01"
_STORED_BLOCK = 65535
# A re-encoded image waits for the storage (an S3 PUT) with its request: beyond this size it waits in a temporary
# file, so that many uploads waiting at once do not each hold megabytes of memory.
SPOOL_BYTES = 256 * 1024
log = logging.getLogger("user_service.images")
# A progressive JPEG is decoded once per scan (an SOS marker), and nothing in libjpeg bounds how many there are: a
# small file of repeated scans costs minutes of CPU. Real encoders write 1 (baseline) to about 12 scans, and
# libjpeg-turbo's own tools warn at 100. The cost of a scan is in proportion to the pixels, so a large image gets
# fewer: at the pixel limit, at most SCANS_AT_MAX_PIXELS.
MAX_JPEG_SCANS = 100
SCANS_AT_MAX_PIXELS = 32
_SOS = b"\xff\xda"
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image as it will be stored: its encoded bytes, file extension and media type."""

    data: BinaryIO
    extension: str
    media_type: str


def reencode_image(source: BinaryIO, *, max_pixels: int, max_dimension: int) -> EncodedImage:
    """Decode a JPEG, PNG or WebP image in full and encode it again in its own format, without its metadata; raise
    UnsupportedMediaType for anything else. `source` is read from where it stands, in Pillow's blocks. Blocks the
    caller until one of the decoding threads is done."""
    return _DECODERS.submit(_reencode, source, max_pixels, max_dimension).result()


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


def _reencode(source: BinaryIO, max_pixels: int, max_dimension: int) -> EncodedImage:
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
                # Decoding at a reduced scale (down to the size kept) still reads every byte of the stream, at a
                # fraction of the memory.
                image.draft("RGB", (max_dimension, max_dimension))
            # An animated PNG or WebP stands on its first frame after open; only that frame is decoded and kept.
            image.load()
            data = _encode(_pixels_only(image, max_dimension), fmt)
    except UnsupportedMediaType:
        raise
    except Exception:  # Pillow signals corrupt input with many exception types
        raise UnsupportedMediaType() from None
    extension, media_type = ACCEPTED_FORMATS[fmt]
    return EncodedImage(data, extension, media_type)


def _pixels_only(image: Image.Image, max_dimension: int) -> Image.Image:
    """The picture upright, in sRGB, in a mode its format can be written in, at most `max_dimension` on the longer
    side, and with no metadata left in its `info`."""
    fmt = image.format or ""
    result: Image.Image = image
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a corrupt EXIF block: the picture is kept as it was stored
        log.info("image EXIF unreadable; orientation not applied")
    icc = result.info.get("icc_profile")
    if icc and result.mode in ("RGB", "RGBA", "CMYK", "L"):
        result = _to_srgb(result, icc)
    if result.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scaled to 8 bits (a plain conversion would clip everything above 255 to white).
        result = result.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if result.mode not in _SAVE_MODES[fmt]:
        has_alpha = "A" in result.getbands() or "transparency" in result.info
        result = result.convert("RGBA" if has_alpha and fmt != "JPEG" else "RGB")
    if max(result.size) > max_dimension:
        result.thumbnail((max_dimension, max_dimension), Image.Resampling.LANCZOS)
    result.info = {}
    return result


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """The pixels converted from the embedded colour profile to sRGB, so that dropping the profile keeps the colours;
    an unusable profile is ignored."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if image.mode == "RGBA" else "L" if image.mode == "L" else "RGB"
        if out_mode == "L":
            return image
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode)
    except Exception:
        log.info("image colour profile unusable; ignored")
        return image
    return converted if converted is not None else image


def _encode(image: Image.Image, fmt: str) -> BinaryIO:
    # Returned open: the caller closes it once stored.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="user-service-avatar-")  # noqa: SIM115
    out = cast(BinaryIO, spool)
    try:
        if fmt == "PNG" and image.mode in _PNG_COLOUR_TYPES and _incompressible(image):
            _write_stored_png(image, out)
        else:
            image.save(out, format=fmt, **_SAVE_OPTIONS[fmt])
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _incompressible(image: Image.Image) -> bool:
    width, height = image.size
    rows = sorted({height * i // _SAMPLE_ROWS for i in range(_SAMPLE_ROWS)})
    sample = b"".join(image.crop((0, y, width, y + 1)).tobytes() for y in rows)
    return len(zlib.compress(sample, 1)) >= _INCOMPRESSIBLE_RATIO * len(sample)


def _write_stored_png(image: Image.Image, out: BinaryIO) -> None:
    """A PNG of the pixels alone (IHDR, one IDAT, IEND), rows unfiltered and deflate-stored, at a small fraction of
    the CPU of compressing pixels that do not compress. The IDAT's zlib stream (RFC 1950) is written block by block
    from the rows (stored deflate blocks, RFC 1951 3.2.4), so the pixels are copied once, not three times."""
    width, height = image.size
    raw = memoryview(image.tobytes())
    stride = len(raw) // height
    # Each row behind its filter type byte: 0, none.
    body = b"".join([piece for start in range(0, len(raw), stride) for piece in (b"\x00", raw[start : start + stride])])
    del raw
    starts = range(0, len(body), _STORED_BLOCK)
    view = memoryview(body)
    stream: list[bytes | memoryview] = [_ZLIB_HEADER]
    for start in starts:
        block = view[start : start + _STORED_BLOCK]
        last = start + _STORED_BLOCK >= len(body)
        stream += [struct.pack("<BHH", last, len(block), len(block) ^ 0xFFFF), block]
    stream.append(struct.pack(">I", zlib.adler32(body)))
    out.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[image.mode], 0, 0, 0))
    out.write(struct.pack(">I", sum(len(piece) for piece in stream)) + b"IDAT")
    crc = zlib.crc32(b"IDAT")
    for piece in stream:
        out.write(piece)
        crc = zlib.crc32(piece, crc)
    out.write(struct.pack(">I", crc))
    _png_chunk(out, b"IEND", b"")


def _png_chunk(out: BinaryIO, kind: bytes, data: bytes) -> None:
    out.write(struct.pack(">I", len(data)) + kind)
    out.write(data)
    out.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _is_jpeg(source: BinaryIO) -> bool:
    start = source.tell()
    try:
        return source.read(2) == b"\xff\xd8"
    finally:
        source.seek(start)
