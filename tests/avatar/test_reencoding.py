"""Every upload is decoded and written again: what is stored holds the picture (upright, first frame, at most
AVATAR_MAX_DIMENSION on a side) and nothing else the file carried: no EXIF, no GPS position, no text, no trailing
payload. Hostile or unusual files are refused with 415 or stored cleanly, never a 500."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from tests.avatar.conftest import MEDIA, Uploader, assert_upload_refused, stored_key
from tests.conftest import image_bytes

GPS_IFD = 0x8825
ORIENTATION = 0x0112
MAKE = 0x010F


def photo_with_exif(size: tuple[int, int] = (60, 40), orientation: int = 1, fmt: str = "JPEG") -> bytes:
    """A camera-like photo: left half red, right half blue, with a camera make, a GPS position and an orientation."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[MAKE] = "SpyCam"
    exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif.tobytes(), quality=95)
    return out.getvalue()


def stored(uploader: Uploader, data: bytes, content_type: str = "image/jpeg") -> tuple[bytes, Image.Image]:
    response = uploader.upload(data, "photo", content_type)
    key = stored_key(response)["key"]
    raw = (uploader.upload_dir / key).read_bytes()
    return raw, Image.open(io.BytesIO(raw))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_and_gps_position_are_dropped(uploader: Uploader, fmt: str) -> None:
    data = photo_with_exif(fmt=fmt)
    assert b"SpyCam" in data

    raw, image = stored(uploader, data, MEDIA[{"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]])

    assert image.format == fmt
    assert b"SpyCam" not in raw
    assert b"Exif" not in raw
    assert not image.getexif()
    assert "exif" not in image.info


def test_exif_orientation_is_applied_so_the_picture_stays_upright(uploader: Uploader) -> None:
    # Orientation 6: the camera was turned; viewers rotate the stored 60x40 picture 90 degrees clockwise.
    _, image = stored(uploader, photo_with_exif((60, 40), orientation=6))

    assert image.size == (40, 60)
    rgb = image.convert("RGB")
    top, bottom = rgb.getpixel((20, 5)), rgb.getpixel((20, 55))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the red half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    assert not image.getexif().get(ORIENTATION)


def test_text_chunks_and_colour_profiles_are_dropped(uploader: Uploader) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "home address: 1 Secret Lane")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>Secret Lane</x:xmpmeta>")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(out, format="PNG", pnginfo=info, icc_profile=icc)

    raw, image = stored(uploader, out.getvalue(), "image/png")

    assert b"Secret Lane" not in raw
    assert image.info.get("icc_profile") is None
    assert image.getpixel((5, 5)) == (10, 200, 30)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_keeps_its_first_frame_only(uploader: Uploader, fmt: str) -> None:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    with Image.open(io.BytesIO(out.getvalue())) as original:
        assert getattr(original, "n_frames", 1) == 3

    _, image = stored(uploader, out.getvalue(), "image/png")

    assert getattr(image, "n_frames", 1) == 1
    pixel = image.convert("RGB").getpixel((12, 12))
    assert isinstance(pixel, tuple) and pixel[0] > 240 and pixel[1] < 16 and pixel[2] < 16


@pytest.mark.parametrize(("size", "kept"), [((3000, 1500), (1024, 512)), ((800, 600), (800, 600))])
def test_large_images_are_scaled_down_to_the_max_dimension(
    uploader: Uploader, size: tuple[int, int], kept: tuple[int, int]
) -> None:
    _, image = stored(uploader, image_bytes("JPEG", size))

    assert image.size == kept


def test_max_dimension_is_a_setting(make_uploader: Callable[..., Uploader]) -> None:
    uploader = make_uploader(avatar_max_dimension=64)

    _, image = stored(uploader, image_bytes("PNG", (300, 200)), "image/png")

    assert image.size == (64, 43)


# -- unusual and hostile files ------------------------------------------------------------------------------------


def test_cmyk_jpeg_is_stored_as_an_rgb_jpeg(uploader: Uploader) -> None:
    out = io.BytesIO()
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(out, format="JPEG")  # pure red in print colours

    response = uploader.upload(out.getvalue(), "print.jpg", "image/jpeg")

    key = stored_key(response)["key"]
    with Image.open(uploader.upload_dir / key) as image:
        assert (image.format, image.mode) == ("JPEG", "RGB")
        pixel = image.getpixel((15, 15))
        assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
    served = uploader.client.get(response.json()["avatar_url"])
    assert served.headers["content-type"] == "image/jpeg"


def test_16_bit_png_is_stored_as_8_bit_with_its_brightness(uploader: Uploader) -> None:
    out = io.BytesIO()
    Image.new("I;16", (30, 30), 40000).save(out, format="PNG")  # about 61% grey

    _, image = stored(uploader, out.getvalue(), "image/png")

    assert (image.format, image.mode) == ("PNG", "L")
    assert image.getpixel((3, 3)) == 40000 // 256


# Pillow warns about the corrupt block and goes on; the suite turns warnings into errors, a server does not.
@pytest.mark.filterwarnings("ignore:.*EXIF:UserWarning")
def test_image_with_a_corrupt_exif_block_is_stored_without_it(uploader: Uploader) -> None:
    out = io.BytesIO()
    # An APP1 segment that says EXIF but holds a TIFF header pointing far outside the block.
    exif = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + b"\xde\xad" * 20
    Image.new("RGB", (40, 30), (0, 128, 0)).save(out, format="JPEG", exif=exif)

    raw, image = stored(uploader, out.getvalue())

    assert image.size == (40, 30)
    assert b"\xde\xad\xde\xad" not in raw
    assert "exif" not in image.info


def test_polyglot_payload_after_the_image_is_not_stored(uploader: Uploader) -> None:
    payload = b"<html><script>alert(document.cookie)</script></html>PK\x03\x04zip-entry"
    data = image_bytes("PNG") + payload

    raw, image = stored(uploader, data, "image/png")

    assert image.format == "PNG"
    assert b"<script>" not in raw
    assert b"PK\x03\x04" not in raw


def test_truncated_jpeg_is_415_and_nothing_is_stored(uploader: Uploader) -> None:
    whole = image_bytes("JPEG", (200, 200))

    response = uploader.upload(whole[: len(whole) // 2], "cut.jpg", "image/jpeg")

    assert_upload_refused(response, 415, "unsupported_media_type", uploader)


def test_decompression_bomb_is_415_and_nothing_is_stored(uploader: Uploader) -> None:
    out = io.BytesIO()
    Image.new("L", (5000, 5000), 0).save(out, format="PNG", optimize=True)  # 25 megapixels of zeros
    assert len(out.getvalue()) < 100_000

    response = uploader.upload(out.getvalue(), "bomb.png", "image/png")

    assert_upload_refused(response, 415, "unsupported_media_type", uploader)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_incompressible_png_keeps_every_pixel_and_nothing_else(uploader: Uploader, mode: str) -> None:
    # Noise does not deflate: it is stored uncompressed, still a valid PNG of exactly the same pixels.
    side = 200
    image = Image.frombytes(mode, (side, side), random.Random(3).randbytes(side * side * len(mode)))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at 1 Secret Lane")
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)

    raw, kept = stored(uploader, out.getvalue(), "image/png")

    assert (kept.format, kept.mode, kept.size) == ("PNG", mode, (side, side))
    assert kept.tobytes() == image.tobytes()
    assert b"Secret Lane" not in raw
    assert b"tEXt" not in raw
