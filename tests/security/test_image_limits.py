"""Avatar decode cost (ASVS 5.0 5.2.1, 5.2.2: uploads are checked for what they cost before being processed) and
the per-address and per-account limits on uploads (ASVS 5.0 2.4.1)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import PASSWORD, FakeClock, bearer, registration
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.images import MAX_JPEG_SCANS, SCANS_AT_MAX_PIXELS, jpeg_scan_count
from user_service.service import UserService

SOS = b"\xff\xda"


def progressive_jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format="JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def with_repeated_last_scan(data: bytes, copies: int) -> bytes:
    """The JPEG with its last scan (its SOS segment and entropy-coded data, up to the EOI) repeated `copies` times
    more: libjpeg decodes every one of them."""
    start = data.rindex(SOS)
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[start:end] * copies + data[end:]


def crafted_jpeg(scans: int, size: tuple[int, int] = (64, 64)) -> bytes:
    plain = progressive_jpeg(size)
    crafted = with_repeated_last_scan(plain, scans - plain.count(SOS))
    assert crafted.count(SOS) == scans
    return crafted


class Uploads:
    """Accounts on one app, uploading from chosen client addresses."""

    def __init__(self, app: FastAPI, stack: ExitStack) -> None:
        self.app = app
        self.stack = stack
        self.service: UserService = app.state.service

    def account(self, username: str) -> dict[str, str]:
        self.service.register(registration(namespace="app-x", username=username, password=PASSWORD))
        return bearer(self.service.issue_tokens(namespace="app-x", username=username).access_token)

    def client(self, address: str = "127.0.0.1") -> TestClient:
        return self.stack.enter_context(TestClient(self.app, client=(address, 50000)))


@pytest.fixture
def make_uploads(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[Callable[..., Uploads]]:
    with ExitStack() as stack:

        def build(**overrides: Any) -> Uploads:
            return Uploads(create_app(make_settings(**overrides), clock=clock), stack)

        yield build


def upload(client: TestClient, headers: dict[str, str], data: bytes) -> httpx.Response:
    return client.post("/users/me/avatar", files={"file": ("a.jpg", data, "image/jpeg")}, headers=headers)


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(make_uploads: Callable[..., Uploads]) -> None:
    """ASVS 5.0 5.2.1: a small progressive JPEG of repeated scans, whose decode cost is out of all proportion to
    its size, is refused (415) and nothing is stored."""
    uploads = make_uploads()
    headers, client = uploads.account("alice"), uploads.client()
    crafted = crafted_jpeg(MAX_JPEG_SCANS + 1)

    started = time.process_time()
    response = upload(client, headers, crafted)

    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert "scans" in response.json()["detail"]
    assert time.process_time() - started < 5
    assert client.get("/users/me", headers=headers).json()["avatar_url"] is None


def test_a_large_jpeg_gets_fewer_scans(make_uploads: Callable[..., Uploads]) -> None:
    """ASVS 5.0 5.2.1: the scan budget shrinks with the pixel count: at the pixel limit, a JPEG of more than
    SCANS_AT_MAX_PIXELS scans is refused, and an ordinary progressive one is accepted."""
    size = (64, 64)
    uploads = make_uploads(avatar_max_pixels=size[0] * size[1])
    headers, client = uploads.account("alice"), uploads.client()

    assert upload(client, headers, crafted_jpeg(SCANS_AT_MAX_PIXELS, size)).status_code == 200
    refused = upload(client, headers, crafted_jpeg(SCANS_AT_MAX_PIXELS + 1, size))
    assert refused.status_code == 415, refused.text
    assert refused.json()["code"] == "unsupported_media_type"


def test_ordinary_jpegs_are_accepted(make_uploads: Callable[..., Uploads]) -> None:
    uploads = make_uploads()
    headers, client = uploads.account("alice"), uploads.client()
    baseline = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(baseline, format="JPEG")

    for data in (baseline.getvalue(), progressive_jpeg((640, 480))):
        response = upload(client, headers, data)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("split_at", [0, 1, 2])
def test_scan_count_sees_a_marker_split_across_chunks(split_at: int) -> None:
    data = b"\xff\xd8" + b"\x00" * (64 * 1024 - 1 - 2 + split_at) + SOS + b"\x00\xff\x00" + SOS + b"\xff\xd9"
    source = io.BytesIO(b"skip" + data)
    source.seek(4)

    assert jpeg_scan_count(source) == 2
    assert source.tell() == 4


def test_uploads_are_rate_limited_per_address(make_uploads: Callable[..., Uploads]) -> None:
    """ASVS 5.0 2.4.1: uploads from one address are counted, whichever accounts they use."""
    uploads = make_uploads(rate_limit_enabled=True, rate_limit="2/minute")
    client = uploads.client("127.0.8.1")
    image = progressive_jpeg((16, 16))
    for username in ("alice", "bob"):
        assert upload(client, uploads.account(username), image).status_code == 200
    refused = upload(client, uploads.account("carol"), image)

    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"


def test_uploads_are_rate_limited_per_account(make_uploads: Callable[..., Uploads]) -> None:
    """ASVS 5.0 2.4.1: one account uploading from many addresses is counted too."""
    uploads = make_uploads(rate_limit_enabled=True, rate_limit="2/minute")
    headers = uploads.account("alice")
    image = progressive_jpeg((16, 16))
    for last in (1, 2):
        assert upload(uploads.client(f"127.0.9.{last}"), headers, image).status_code == 200
    refused = upload(uploads.client("127.0.9.3"), headers, image)

    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert upload(uploads.client("127.0.9.4"), uploads.account("bob"), image).status_code == 200
