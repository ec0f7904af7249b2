"""AVATAR_STORAGE=s3 against a real S3-compatible server over HTTP (moto's server mode): every change leaves exactly
the objects it should, objects carry their type and Cache-Control, the URL in the profile reads the object from the
bucket, and an outage is a 503 that changes nothing."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.avatar.conftest import Uploader, free_port, objects_in
from tests.conftest import PASSWORD, bearer, image_bytes, registration
from tests.helpers import assert_error, service_of
from user_service.api.app import create_app
from user_service.config import Settings, load_settings
from user_service.errors import ConfigurationError
from user_service.storage import CachedReachability, S3AvatarStorage

PREFIX = "avatars/"


@pytest.fixture
def s3_uploader(make_uploader: Callable[..., Uploader], s3_endpoint: str, bucket: str) -> Uploader:
    return make_uploader(
        avatar_storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        s3_key_prefix=PREFIX,
    )


def object_key(url: str) -> str:
    """The object's name in the bucket, from the URL the profile gives."""
    return PREFIX + url.rsplit("/", 1)[1]


def test_upload_stores_one_object_readable_at_the_profile_url(
    s3_uploader: Uploader, s3: Any, bucket: str, s3_endpoint: str
) -> None:
    response = s3_uploader.upload(image_bytes("JPEG"), "me.jpg", "image/jpeg")

    assert response.status_code == 200, response.text
    url = response.json()["avatar_url"]
    assert url.startswith(f"{s3_endpoint}/{bucket}/{PREFIX}")
    assert url.endswith(".jpg")
    assert s3_uploader.me()["avatar_url"] == url
    assert objects_in(s3, bucket) == [object_key(url)]
    head = s3.head_object(Bucket=bucket, Key=object_key(url))
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert s3_uploader.files() == []  # nothing on the local disk
    # The URL works from the bucket, as a browser would read it.
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert (image.format, image.size) == ("JPEG", (32, 32))


def test_replace_delete_and_user_deletion_leave_no_orphans(s3_uploader: Uploader, s3: Any, bucket: str) -> None:
    first = s3_uploader.upload(image_bytes("PNG")).json()["avatar_url"]
    second = s3_uploader.upload(image_bytes("WEBP"), "a.webp", "image/webp").json()["avatar_url"]
    assert objects_in(s3, bucket) == [object_key(second)]
    assert s3.head_object(Bucket=bucket, Key=object_key(second))["ContentType"] == "image/webp"
    assert first != second

    deleted = s3_uploader.client.delete("/users/me/avatar", headers=s3_uploader.headers)
    assert deleted.status_code == 200
    assert deleted.json()["avatar_url"] is None
    assert objects_in(s3, bucket) == []

    third = s3_uploader.upload(image_bytes("PNG")).json()["avatar_url"]
    patched = s3_uploader.client.patch(
        "/users/me", json={"avatar_url": "https://img.example.com/me.png"}, headers=s3_uploader.headers
    )
    assert patched.json()["avatar_url"] == "https://img.example.com/me.png"
    assert objects_in(s3, bucket) == []
    assert third != second

    s3_uploader.upload(image_bytes("PNG"))
    service_of(s3_uploader.app).delete_user(namespace="app-x", username="alice")
    assert objects_in(s3, bucket) == []


def test_public_base_url_names_the_cdn(make_uploader: Callable[..., Uploader], s3_endpoint: str, bucket: str) -> None:
    uploader = make_uploader(
        avatar_storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        avatar_public_base_url="https://cdn.example.com/",
    )

    url = uploader.upload(image_bytes("PNG")).json()["avatar_url"]

    assert url.startswith("https://cdn.example.com/")
    assert url.removeprefix("https://cdn.example.com/").count("/") == 0


def test_mounted_app_hands_out_the_bucket_url(
    make_settings: Callable[..., Settings], s3_endpoint: str, bucket: str
) -> None:
    inner = create_app(make_settings(avatar_storage="s3", s3_bucket=bucket, s3_endpoint_url=s3_endpoint))
    host = FastAPI()
    host.mount("/accounts", inner)
    service = service_of(inner)
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    headers = bearer(service.issue_tokens(namespace="app-x", username="alice").access_token)

    with TestClient(host) as web:
        files = {"file": ("a.png", image_bytes("PNG"), "image/png")}
        url = web.post("/accounts/users/me/avatar", files=files, headers=headers).json()["avatar_url"]

    assert url.startswith(f"{s3_endpoint}/{bucket}/")
    assert httpx.get(url).status_code == 200


def test_local_uploads_route_serves_nothing_for_s3(s3_uploader: Uploader) -> None:
    url = s3_uploader.upload(image_bytes("PNG")).json()["avatar_url"]

    assert_error(s3_uploader.client.get("/uploads/" + url.rsplit("/", 1)[1]), 404, "not_found")


# -- outage -------------------------------------------------------------------------------------------------------


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_outage_during_upload_is_503_and_keeps_the_old_avatar(s3_uploader: Uploader, s3: Any, bucket: str) -> None:
    old = s3_uploader.upload(image_bytes("PNG")).json()["avatar_url"]
    storage = service_of(s3_uploader.app).storage
    assert isinstance(storage, S3AvatarStorage)
    working = storage.client
    storage.client = S3AvatarStorage(bucket=bucket, endpoint_url=closed_endpoint(), region="us-east-1").client

    response = s3_uploader.upload(image_bytes("JPEG"), "new.jpg", "image/jpeg")

    assert_error(response, 503, "storage_unavailable")
    assert s3_uploader.me()["avatar_url"] == old
    storage.client = working
    assert objects_in(s3, bucket) == [object_key(old)]


def test_outage_during_delete_still_clears_the_avatar(s3_uploader: Uploader, bucket: str) -> None:
    s3_uploader.upload(image_bytes("PNG"))
    storage = service_of(s3_uploader.app).storage
    assert isinstance(storage, S3AvatarStorage)
    storage.client = S3AvatarStorage(bucket=bucket, endpoint_url=closed_endpoint(), region="us-east-1").client

    response = s3_uploader.client.delete("/users/me/avatar", headers=s3_uploader.headers)

    assert response.status_code == 200
    assert s3_uploader.me()["avatar_url"] is None


# -- health and configuration -------------------------------------------------------------------------------------


def test_health_reports_the_storage(s3_uploader: Uploader, bucket: str) -> None:
    assert s3_uploader.client.get("/health").json()["storage"] == "ok"

    down = S3AvatarStorage(bucket=bucket, endpoint_url=closed_endpoint(), region="us-east-1")
    with TestClient(create_app(service_of(s3_uploader.app).settings, storage=down)) as other:
        response = other.get("/health")

    assert response.status_code == 200
    assert response.json()["storage"] == "unavailable"
    assert response.json()["status"] == "degraded"
    assert response.json()["database"] == "ok"


def test_health_probes_the_storage_at_most_once_per_interval() -> None:
    probes: list[int] = []
    now = [100.0]

    class Probed:
        def reachable(self) -> bool:
            probes.append(1)
            return len(probes) == 1

    cached = CachedReachability(Probed(), ttl_seconds=10.0, monotonic=lambda: now[0])  # type: ignore[arg-type]

    assert [cached() for _ in range(50)] == [True] * 50
    assert len(probes) == 1
    now[0] += 10.0
    assert cached() is False
    assert len(probes) == 2


def test_s3_without_a_bucket_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="S3_BUCKET"):
        load_settings(avatar_storage="s3", _env_file=None)


def test_s3_without_boto3_is_refused_at_start(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)

    with pytest.raises(ConfigurationError, match=r"user-service\[s3\]"):
        create_app(make_settings(avatar_storage="s3", s3_bucket="avatars"))


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("s3_endpoint_url", "minio:9000", "S3_ENDPOINT_URL"),
        ("avatar_public_base_url", "cdn.example.com", "AVATAR_PUBLIC_BASE_URL"),
        ("s3_key_prefix", "../escape/", "S3_KEY_PREFIX"),
        ("s3_key_prefix", "/rooted/", "S3_KEY_PREFIX"),
    ],
)
def test_invalid_s3_settings_are_named(setting: str, value: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load_settings(_env_file=None, **{setting: value})
