"""Avatar size limits: the file size limit, enforced while the body streams in, and reading in chunks."""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from PIL import Image

from tests.avatar.conftest import (
    FORMATS,
    SMALL_LIMIT,
    Uploader,
    assert_upload_refused,
    chunks,
    multipart,
    noise_png,
    png_of_size,
    same_pixels,
    stored_key,
)
from user_service.api.middleware import MULTIPART_SLACK
from user_service.service import UserService

# -- size limits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "streamed"])
def test_file_of_exactly_the_limit_is_accepted(make_uploader: Callable[..., Uploader], streamed: bool) -> None:
    uploader = make_uploader(avatar_max_bytes=SMALL_LIMIT)
    data = png_of_size(SMALL_LIMIT)

    response = uploader.upload(data, streamed=streamed)

    key = stored_key(response)["key"]
    assert same_pixels((uploader.upload_dir / key).read_bytes(), data)


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
    with Image.open(uploader.upload_dir / stored) as kept:
        assert kept.format == fmt
