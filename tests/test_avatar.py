"""Avatars: POST /users/me/avatar stores a verified image under a random name, GET /uploads/<key> serves it.

The stored type is the one the bytes prove, never the one the client claims; refused uploads leave nothing on disk.
"""

from __future__ import annotations

import io
import os
import random
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import PASSWORD, FakeClock, bearer, image_bytes
from tests.helpers import assert_error
from user_service.api.app import create_app
from user_service.api.middleware import MULTIPART_SLACK
from user_service.config import Settings
from user_service.service import UserService

AVATAR_URL = re.compile(r"/uploads/(?P<key>[0-9a-f]{32}\.(?P<ext>png|jpg|webp))")
MEDIA = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
SMALL_LIMIT = 4096


def noise_png(side: int) -> bytes:
    """A PNG that does not compress, so its file size grows with its side (about 3 bytes a pixel)."""
    image = Image.frombytes("RGB", (side, side), random.Random(side).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_of_size(size: int) -> bytes:
    """A valid PNG of exactly `size` bytes, padded with a text chunk after the header chunk."""
    base = image_bytes("PNG")
    filler = size - len(base) - 12  # a chunk adds its length, type and CRC around the data
    data = b"Comment\x00" + b"x" * (filler - 8)
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    padded = base[:33] + chunk + base[33:]
    assert len(padded) == size
    return padded


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims other dimensions: what a decompression bomb looks like to the first read."""
    data = bytearray(image_bytes("PNG", (1, 1)))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def multipart(data: bytes, filename: str = "avatar.png", content_type: str = "image/png") -> tuple[bytes, str]:
    """The encoded multipart body and its Content-Type, as a browser form would send them."""
    request = httpx.Request("POST", "http://testserver/", files={"file": (filename, data, content_type)})
    return request.read(), request.headers["Content-Type"]


def chunks(body: bytes, size: int = 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass
class Uploader:
    app: FastAPI
    client: TestClient
    headers: dict[str, str]
    upload_dir: Path

    def upload(
        self, data: bytes, filename: str = "avatar.png", content_type: str = "image/png", *, streamed: bool = False
    ) -> httpx.Response:
        if not streamed:
            files = {"file": (filename, data, content_type)}
            return self.client.post("/users/me/avatar", files=files, headers=self.headers)
        body, multipart_type = multipart(data, filename, content_type)
        response = self.client.post(
            "/users/me/avatar", content=chunks(body), headers={**self.headers, "Content-Type": multipart_type}
        )
        # Proves the body really went without a declared length, so the limit had to be enforced while reading.
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        return response

    def files(self) -> list[str]:
        return sorted(os.listdir(self.upload_dir)) if self.upload_dir.exists() else []

    def me(self) -> dict[str, Any]:
        response = self.client.get("/users/me", headers=self.headers)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def make_uploader(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[Callable[..., Uploader]]:
    """Build an app with the given setting overrides and an account (alice) that can upload to it."""
    with ExitStack() as stack:

        def build(**overrides: Any) -> Uploader:
            settings = make_settings(**overrides)
            app = create_app(settings, clock=clock)
            client = stack.enter_context(TestClient(app))
            service: UserService = app.state.service
            service.register(namespace="app-x", username="alice", password=PASSWORD)
            token = service.issue_tokens(namespace="app-x", username="alice").access_token
            return Uploader(app, client, bearer(token), settings.upload_dir)

        yield build


@pytest.fixture
def uploader(make_uploader: Callable[..., Uploader]) -> Uploader:
    return make_uploader()


def stored_key(response: httpx.Response) -> re.Match[str]:
    assert response.status_code == 200, response.text
    match = AVATAR_URL.fullmatch(response.json()["avatar_url"])
    assert match is not None, response.json()["avatar_url"]
    return match


def assert_upload_refused(response: httpx.Response, status: int, code: str, uploader: Uploader) -> None:
    """Refused with `code`, and nothing stored: no file, no avatar URL."""
    assert_error(response, status, code)
    assert uploader.files() == []
    assert uploader.me()["avatar_url"] is None


# -- accepted images ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_image_is_stored_and_served_back_exactly(uploader: Uploader, fmt: str) -> None:
    data = image_bytes(fmt)

    response = uploader.upload(data, f"me.{FORMATS[fmt]}", MEDIA[FORMATS[fmt]])

    match = stored_key(response)
    assert match["ext"] == FORMATS[fmt]
    assert uploader.files() == [match["key"]]
    assert uploader.me()["avatar_url"] == response.json()["avatar_url"]
    served = uploader.client.get(response.json()["avatar_url"])
    assert served.status_code == 200
    assert served.content == data
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
    assert uploader.client.get(path).content == image_bytes("PNG")


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


# -- size limits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_file_of_exactly_the_limit_is_accepted(make_uploader: Callable[..., Uploader], streamed: bool) -> None:
    uploader = make_uploader(avatar_max_bytes=SMALL_LIMIT)
    data = png_of_size(SMALL_LIMIT)

    response = uploader.upload(data, streamed=streamed)

    key = stored_key(response)["key"]
    assert (uploader.upload_dir / key).read_bytes() == data


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
@pytest.mark.parametrize(
    "make_data",
    [lambda: png_of_size(SMALL_LIMIT + 1), lambda: noise_png(60), lambda: noise_png(300)],
    ids=["one-byte-over", "twice-the-limit", "far-over"],
)
def test_file_over_the_limit_is_413_and_nothing_is_stored(
    make_uploader: Callable[..., Uploader], make_data: Callable[[], bytes], streamed: bool
) -> None:
    uploader = make_uploader(avatar_max_bytes=SMALL_LIMIT)
    data = make_data()
    assert len(data) > SMALL_LIMIT
    assert Image.open(io.BytesIO(data)).format == "PNG"

    response = uploader.upload(data, streamed=streamed)

    assert_upload_refused(response, 413, "file_too_large", uploader)


def test_default_limit_is_2_mib(uploader: Uploader) -> None:
    response = uploader.upload(png_of_size(2_097_152 + 1))

    assert_upload_refused(response, 413, "file_too_large", uploader)


def test_streamed_oversized_upload_is_refused_before_it_is_all_read(make_uploader: Callable[..., Uploader]) -> None:
    """Drive the ASGI app directly, so we can count how much of a chunked body it pulls before answering."""
    uploader = make_uploader(avatar_max_bytes=SMALL_LIMIT)
    body, content_type = multipart(random.Random(1).randbytes(400 * 1024))
    pieces = list(chunks(body, 1024))
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled == len(pieces):
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": pieces[pulled - 1], "more_body": pulled < len(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/users/me/avatar",
        "raw_path": b"/users/me/avatar",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", content_type.encode()),
            (b"authorization", uploader.headers["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    anyio.run(uploader.app, scope, receive, send)

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert b'"file_too_large"' in b"".join(message.get("body", b"") for message in sent[1:])
    # It stops at the first chunk that takes the body past the limit (the avatar's plus the multipart slack).
    assert (pulled - 1) * 1024 <= SMALL_LIMIT + MULTIPART_SLACK < pulled * 1024
    assert uploader.files() == []


class ReadRecorder(io.BytesIO):
    """A file that remembers the size of every read asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(size)
        return super().read(size)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_upload_is_checked_and_stored_in_chunks_never_read_whole(uploader: Uploader, fmt: str) -> None:
    """Memory per upload stays bounded: the image check (Pillow) and the copy to storage read the uploaded file
    in blocks of at most 1 MiB, never all at once. (WebP is the exception: libwebp decodes from the whole file.)"""
    side = 800 if fmt == "PNG" else 1300
    image = Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format=fmt, quality=95)
    data = out.getvalue()
    assert 1024 * 1024 < len(data) <= 2 * 1024 * 1024
    service: UserService = uploader.app.state.service
    user_id = uuid.UUID(uploader.me()["id"])
    source = ReadRecorder(data)

    profile = service.set_avatar(user_id, source)

    assert profile.avatar_url is not None and profile.avatar_url.endswith(f".{FORMATS[fmt]}")
    assert source.reads, "the file was never read"
    assert all(size is not None and 0 <= size <= 1024 * 1024 for size in source.reads), source.reads
    (stored,) = uploader.files()
    assert (uploader.upload_dir / stored).read_bytes() == data


# -- refused requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer not-a-token", "invalid_token"),
        ("Basic YWxpY2U6c2VjcmV0", "not_authenticated"),
    ],
)
def test_upload_without_a_valid_token_is_401(uploader: Uploader, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = uploader.client.post(
        "/users/me/avatar", files={"file": ("a.png", image_bytes("PNG"), "image/png")}, headers=headers
    )

    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert uploader.files() == []


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"avatar": ("a.png", image_bytes("PNG"), "image/png")}},
        {"data": {"file": "not a file"}},
        {"json": {"file": "iVBORw0KGgo="}},
        {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=empty"}},
        {},
    ],
    ids=["other-field-name", "text-field", "json-body", "empty-multipart", "no-body"],
)
def test_missing_file_field_is_422(uploader: Uploader, request_kwargs: dict[str, Any]) -> None:
    headers = {**uploader.headers, **request_kwargs.pop("headers", {})}

    response = uploader.client.post("/users/me/avatar", headers=headers, **request_kwargs)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert uploader.files() == []


BOUNDARY = b"----boundary"


def part(headers: bytes, body: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + body + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="a.png"'
MALFORMED_MULTIPART: dict[str, Callable[[], bytes]] = {
    "truncated": lambda: part(FILE_PART, image_bytes("PNG"))[:-10],
    "no-closing-boundary": lambda: part(FILE_PART, image_bytes("PNG")),
    "bare-newlines": lambda: form(part(FILE_PART, image_bytes("PNG"))).replace(b"\r\n", b"\n"),
    "no-content-disposition": lambda: form(part(b"Content-Type: image/png", image_bytes("PNG"))),
    "nul-in-filename": lambda: form(part(FILE_PART.replace(b"a.png", b"a\x00.png"), image_bytes("PNG"))),
    "invalid-utf8-filename": lambda: form(part(FILE_PART.replace(b"a.png", b"\xff\xfe.png"), image_bytes("PNG"))),
    "huge-filename": lambda: form(part(FILE_PART.replace(b"a.png", b"a" * 100_000), image_bytes("PNG"))),
    "huge-part-header": lambda: form(part(FILE_PART + b"\r\nX-Junk: " + b"x" * 200_000, image_bytes("PNG"))),
    "too-many-fields": lambda: form(
        *(part(b'Content-Disposition: form-data; name="f%d"' % i, b"x") for i in range(1200))
    ),
    "too-many-files": lambda: form(*(part(FILE_PART, b"x") for _ in range(1200))),
}


# What each is answered: a part the parser cannot read is 400 bad_request; a body that ends before its file part does
# is read as a form without the file (422); a file name the browser mangled does not matter, the bytes are stored.
MULTIPART_STATUS = {
    "truncated": 422,
    "no-closing-boundary": 422,
    "bare-newlines": 400,
    "no-content-disposition": 400,
    "nul-in-filename": 200,
    "invalid-utf8-filename": 200,
    "huge-filename": 400,
    "huge-part-header": 400,
    "too-many-fields": 400,
    "too-many-files": 400,
}
MISSING_FILE = [{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}]


def assert_upload_outcome(response: httpx.Response, status: int, uploader: Uploader) -> None:
    """200 with the file stored, 400 bad_request or 422 for the missing file field, with nothing stored."""
    assert response.status_code == status, response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if status == 200:
        assert uploader.files() == [stored_key(response)["key"]]
        return
    if status == 400:
        assert response.json()["code"] == "bad_request"
    else:
        assert response.json()["detail"] == MISSING_FILE
    assert uploader.files() == []


# A body that ends inside a file part: Starlette never hands that part's spooled file to the form, so it is closed
# only when the request's objects are freed, with a ResourceWarning (python-multipart's finalize() does nothing).
# The answer is still the right one; only that warning is let through, for these two cases alone.
_UNCLOSED_SPOOL = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function SpooledTemporaryFile.__del__:pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(kind, marks=_UNCLOSED_SPOOL) if kind in ("truncated", "no-closing-boundary") else kind
        for kind in MALFORMED_MULTIPART
    ],
)
def test_malformed_multipart_is_a_client_error(uploader: Uploader, kind: str) -> None:
    response = uploader.client.post(
        "/users/me/avatar",
        content=MALFORMED_MULTIPART[kind](),
        headers={**uploader.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
    )

    assert_upload_outcome(response, MULTIPART_STATUS[kind], uploader)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        # A multipart form the parser cannot split.
        ("multipart/form-data", 400),
        ("multipart/form-data; boundary=", 400),
        ('multipart/form-data; boundary="unterminated', 400),
        ("multipart/form-data; boundary=" + "x" * 2000, 400),
        # Not a form at all: no file field.
        ("multipart/mixed; boundary=x", 422),
        ("image/png", 422),
        ("application/octet-stream", 422),
    ],
)
def test_wrong_upload_content_type_is_a_client_error(uploader: Uploader, content_type: str, status: int) -> None:
    response = uploader.client.post(
        "/users/me/avatar", content=image_bytes("PNG"), headers={**uploader.headers, "Content-Type": content_type}
    )

    assert_upload_outcome(response, status, uploader)


# -- serving ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/0123456789abcdef0123456789abcdef.png",
        "/uploads/0123456789abcdef0123456789abcdef.webp",
        "/uploads/nothing-here",
        "/uploads/avatar.png",
    ],
)
def test_unknown_upload_is_404_with_a_code(uploader: Uploader, path: str) -> None:
    response = uploader.client.get(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


SECRET = b"outside the upload folder"
OUTSIDE_KEY = "fedcba9876543210fedcba9876543210.png"


@pytest.fixture
def planted(uploader: Uploader) -> str:
    """Files a traversal would reach: one beside the upload folder, and wrongly named ones inside it."""
    key = stored_key(uploader.upload(image_bytes("PNG")))["key"]
    (uploader.upload_dir.parent / OUTSIDE_KEY).write_bytes(SECRET)
    (uploader.upload_dir.parent / "secret.txt").write_bytes(SECRET)
    (uploader.upload_dir / key.replace(".png", ".html")).write_bytes(SECRET)
    (uploader.upload_dir / f"{key}.html").write_bytes(SECRET)
    (uploader.upload_dir / ".upload-partial").write_bytes(SECRET)
    return key


TRAVERSALS = [
    "/uploads/../{outside}",
    "/uploads/%2e%2e/{outside}",
    "/uploads/..%2f{outside}",
    "/uploads/..%5c{outside}",
    "/uploads/..%252f{outside}",
    "/uploads/{absolute}",
    "/uploads//{absolute_raw}",
    "/uploads/%2f{absolute}",
    "/uploads/..%2fsecret.txt",
    "/uploads/{html}",
    "/uploads/{key}.html",
    "/uploads/{key}%00.html",
    "/uploads/{upper}",
    "/uploads/.upload-partial",
    "/uploads/%2e%2e",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_path_traversal_never_serves_a_file_outside_the_folder(uploader: Uploader, planted: str, template: str) -> None:
    outside = uploader.upload_dir.parent / OUTSIDE_KEY
    path = template.format(
        outside=OUTSIDE_KEY,
        absolute=quote(str(outside), safe=""),
        absolute_raw=str(outside).lstrip("/"),
        html=planted.replace(".png", ".html"),
        key=planted,
        upper=planted.upper(),
    )

    response = uploader.client.get(path)

    assert response.status_code == 404, (path, response.status_code)
    assert response.json()["code"] == "not_found"
    assert SECRET not in response.content
    assert uploader.client.get(f"/uploads/{planted}").status_code == 200
