"""Fixtures and builders of the avatar tests: an app with an account (alice) that uploads, and images made to
measure. The stored type is the one the bytes prove, never the one the client claims; refused uploads leave
nothing on disk."""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import PASSWORD, MakeClient, bearer, image_bytes, registration
from tests.helpers import assert_error, service_of

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


def same_pixels(stored: bytes, original: bytes) -> bool:
    """Whether two encoded images hold the same pixels (a lossless format re-encoded)."""
    with Image.open(io.BytesIO(stored)) as a, Image.open(io.BytesIO(original)) as b:
        return a.format == b.format and a.size == b.size and a.convert("RGBA").tobytes() == b.convert("RGBA").tobytes()


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
def make_uploader(make_client: MakeClient) -> Callable[..., Uploader]:
    """Build an app with the given setting overrides and an account (alice) that can upload to it."""

    def build(**overrides: Any) -> Uploader:
        client = make_client(**overrides)
        app = client.app
        assert isinstance(app, FastAPI)
        service = service_of(app)
        service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
        token = service.issue_tokens(namespace="app-x", username="alice").access_token
        return Uploader(app, client, bearer(token), service.settings.upload_dir)

    return build


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


# -- an S3-compatible server (moto's server mode, a real HTTP server in its own process) -----------------------------

S3_ENVIRONMENT = {
    # Credentials reach boto3 through its standard chain, as in production; moto accepts any.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
S3_START_ATTEMPTS = 5
S3_START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_s3_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto_server on a free loopback port, once it accepts connections; another port if the one chosen was taken
    in between (the process then exits)."""
    moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    for _ in range(S3_START_ATTEMPTS):
        port = free_port()
        process = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + S3_START_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                return process, f"http://127.0.0.1:{port}"
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=10)
    raise RuntimeError("moto_server did not start")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3-compatible server that runs for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in S3_ENVIRONMENT.items():
            patch.setenv(name, value)
        process, url = start_s3_server()
        try:
            yield url
        finally:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 client of the test S3 server; the environment holds the test credentials."""
    import boto3

    for name, value in S3_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket of its own, whose objects anyone may read (the policy README.md gives operators)."""
    name = f"avatars-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_policy(Bucket=name, Policy=public_read_policy(name))
    return name


def public_read_policy(bucket: str) -> str:
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def objects_in(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))
