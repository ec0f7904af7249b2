"""POST /users/me/avatar: a real image is stored under a new random name and served back exactly; anything that
is not an image the service can read is refused, and the previous avatar stays."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.avatar.conftest import (
    AVATAR_URL,
    FORMATS,
    MEDIA,
    Uploader,
    assert_upload_refused,
    noise_png,
    png_claiming,
    same_pixels,
    stored_key,
)
from tests.conftest import FakeClock, image_bytes

# -- accepted images ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_image_is_stored_and_served_back_as_stored(uploader: Uploader, fmt: str) -> None:
    data = image_bytes(fmt)

    response = uploader.upload(data, f"me.{FORMATS[fmt]}", MEDIA[FORMATS[fmt]])

    match = stored_key(response)
    assert match["ext"] == FORMATS[fmt]
    assert uploader.files() == [match["key"]]
    assert uploader.me()["avatar_url"] == response.json()["avatar_url"]
    served = uploader.client.get(response.json()["avatar_url"])
    assert served.status_code == 200
    assert served.content == (uploader.upload_dir / match["key"]).read_bytes()
    with Image.open(io.BytesIO(served.content)) as kept:
        assert (kept.format, kept.size) == (fmt, (32, 32))
    assert served.headers["Content-Type"] == MEDIA[FORMATS[fmt]]
    assert served.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("fmt", "filename", "claimed_type"),
    [
        ("PNG", "evil.html", "text/html"),
        ("PNG", "../../../../etc/cron.d/evil", "application/octet-stream"),
        ("JPEG", "photo.png", "image/png"),
        ("JPEG", "script.js", "application/javascript"),
        ("WEBP", "picture.jpg", "image/jpeg"),
        ("WEBP", "vector.svg", "image/svg+xml"),
    ],
)
def test_stored_type_follows_the_bytes_not_the_claims(
    uploader: Uploader, fmt: str, filename: str, claimed_type: str
) -> None:
    response = uploader.upload(image_bytes(fmt), filename, claimed_type)

    match = stored_key(response)
    assert match["ext"] == FORMATS[fmt]
    stem = Path(filename).stem
    assert stem not in response.json()["avatar_url"]
    assert uploader.files() == [match["key"]]
    served = uploader.client.get(response.json()["avatar_url"])
    assert served.headers["Content-Type"] == MEDIA[FORMATS[fmt]]
    assert not any(path.name == Path(filename).name for path in uploader.upload_dir.parent.rglob("*"))


def test_each_upload_gets_a_new_random_name(uploader: Uploader) -> None:
    first = stored_key(uploader.upload(image_bytes("PNG")))["key"]
    second = stored_key(uploader.upload(image_bytes("PNG")))["key"]

    assert first != second


def test_second_upload_deletes_the_first_file(uploader: Uploader) -> None:
    first = uploader.upload(image_bytes("PNG"))
    first_key = stored_key(first)["key"]

    second = uploader.upload(image_bytes("JPEG"), "b.jpg", "image/jpeg")

    second_key = stored_key(second)["key"]
    assert uploader.files() == [second_key]
    assert uploader.client.get(f"/uploads/{first_key}").status_code == 404
    assert uploader.client.get(f"/uploads/{second_key}").status_code == 200


@pytest.mark.parametrize("new_url", ["https://gravatar.example.com/avatar/abc.png", None])
def test_patching_avatar_url_deletes_the_uploaded_file(uploader: Uploader, new_url: str | None) -> None:
    key = stored_key(uploader.upload(image_bytes("PNG")))["key"]

    response = uploader.client.patch("/users/me", json={"avatar_url": new_url}, headers=uploader.headers)

    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"] == new_url
    assert uploader.files() == []
    assert uploader.client.get(f"/uploads/{key}").status_code == 404


def test_upload_replaces_an_external_avatar_url(uploader: Uploader) -> None:
    patched = uploader.client.patch(
        "/users/me", json={"avatar_url": "https://img.example.com/a.png"}, headers=uploader.headers
    )
    assert patched.status_code == 200

    response = uploader.upload(image_bytes("WEBP"), "a.webp", "image/webp")

    assert stored_key(response)["ext"] == "webp"
    assert uploader.me()["avatar_url"] == response.json()["avatar_url"]


def test_public_base_url_prefixes_the_avatar_url(make_uploader: Callable[..., Uploader]) -> None:
    uploader = make_uploader(public_base_url="https://cdn.example.com/accounts/")

    response = uploader.upload(image_bytes("PNG"))

    assert response.status_code == 200, response.text
    url = response.json()["avatar_url"]
    assert url.startswith("https://cdn.example.com/accounts/uploads/")
    path = urlsplit(url).path.removeprefix("/accounts")
    assert AVATAR_URL.fullmatch(path)
    assert uploader.me()["avatar_url"] == url
    assert same_pixels(uploader.client.get(path).content, image_bytes("PNG"))


def test_upload_moves_updated_at(uploader: Uploader, clock: FakeClock) -> None:
    clock.advance(120)

    response = uploader.upload(image_bytes("PNG"))

    assert response.status_code == 200
    assert datetime.fromisoformat(response.json()["updated_at"]) == clock.now


# -- refused files ------------------------------------------------------------------------------------------------


def truncated_png() -> bytes:
    whole = noise_png(40)
    return whole[: len(whole) // 2]


NOT_IMAGES: dict[str, Callable[[], bytes]] = {
    "text": lambda: b"just some text, not a picture\n",
    "html": lambda: b"<!doctype html><html><script>alert(document.cookie)</script></html>",
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    "gif": lambda: image_bytes("GIF"),
    "bmp": lambda: image_bytes("BMP"),
    "tiff": lambda: image_bytes("TIFF"),
    "truncated-png": truncated_png,
    "png-signature-then-html": lambda: b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
    "jpeg-magic-only": lambda: b"\xff\xd8\xff\xe0" + b"\x00" * 64,
    "random-bytes": lambda: random.Random(7).randbytes(3000),
    "empty": lambda: b"",
}


@pytest.mark.parametrize("kind", NOT_IMAGES)
def test_non_image_is_415_and_nothing_is_stored(uploader: Uploader, kind: str) -> None:
    response = uploader.upload(NOT_IMAGES[kind](), "avatar.png", "image/png")

    assert_upload_refused(response, 415, "unsupported_media_type", uploader)


def test_refused_upload_keeps_the_previous_avatar(uploader: Uploader) -> None:
    before = uploader.upload(image_bytes("PNG"))
    key = stored_key(before)["key"]

    response = uploader.upload(b"<html></html>", "a.png", "image/png")

    assert response.status_code == 415
    assert uploader.files() == [key]
    assert uploader.me()["avatar_url"] == before.json()["avatar_url"]
    assert uploader.client.get(f"/uploads/{key}").status_code == 200


@pytest.mark.parametrize(("side", "accepted"), [(32, True), (33, False)])
def test_pixel_limit(make_uploader: Callable[..., Uploader], side: int, accepted: bool) -> None:
    uploader = make_uploader(avatar_max_pixels=32 * 32)

    response = uploader.upload(image_bytes("PNG", (side, 32)))

    if accepted:
        stored_key(response)
    else:
        assert_upload_refused(response, 415, "unsupported_media_type", uploader)


@pytest.mark.parametrize(("width", "height"), [(5000, 5000), (20000, 20000), (1, 100_000_000)])
def test_header_claiming_huge_dimensions_is_415(uploader: Uploader, width: int, height: int) -> None:
    response = uploader.upload(png_claiming(width, height))

    assert_upload_refused(response, 415, "unsupported_media_type", uploader)
