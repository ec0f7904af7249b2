"""An avatar's life on local storage: removed by DELETE /users/me/avatar, by a replacement and with its user; served
with a year-long immutable Cache-Control, an ETag and 304; addressed through the mount path of a host app."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.avatar.conftest import Uploader, stored_key
from tests.conftest import PASSWORD, bearer, image_bytes, registration
from tests.helpers import assert_error, service_of
from user_service.api.app import create_app
from user_service.config import Settings

# -- delete -------------------------------------------------------------------------------------------------------


def test_delete_avatar_clears_the_url_and_removes_the_file(uploader: Uploader) -> None:
    stored_key(uploader.upload(image_bytes("PNG")))
    assert len(uploader.files()) == 1

    response = uploader.client.delete("/users/me/avatar", headers=uploader.headers)

    assert response.status_code == 200
    assert response.json()["avatar_url"] is None
    assert uploader.me()["avatar_url"] is None
    assert uploader.files() == []


def test_delete_avatar_clears_an_external_url_and_is_idempotent(uploader: Uploader) -> None:
    patched = uploader.client.patch(
        "/users/me", json={"avatar_url": "https://img.example.com/a.png"}, headers=uploader.headers
    )
    assert patched.status_code == 200

    for _ in range(2):
        response = uploader.client.delete("/users/me/avatar", headers=uploader.headers)
        assert response.status_code == 200
        assert response.json()["avatar_url"] is None


def test_delete_avatar_needs_a_token(uploader: Uploader) -> None:
    stored_key(uploader.upload(image_bytes("PNG")))

    assert_error(uploader.client.delete("/users/me/avatar"), 401, "not_authenticated")
    assert len(uploader.files()) == 1


def test_replacing_leaves_only_the_new_file(uploader: Uploader) -> None:
    stored_key(uploader.upload(image_bytes("PNG")))
    second = stored_key(uploader.upload(image_bytes("JPEG")))["key"]

    assert uploader.files() == [second]


def test_deleting_the_user_removes_their_file_only(uploader: Uploader) -> None:
    service = service_of(uploader.app)
    service.register(registration(namespace="app-x", username="bob", password=PASSWORD))
    bob = bearer(service.issue_tokens(namespace="app-x", username="bob").access_token)
    alice_key = stored_key(uploader.upload(image_bytes("PNG")))["key"]
    files = {"file": ("b.png", image_bytes("PNG"), "image/png")}
    bob_key = stored_key(uploader.client.post("/users/me/avatar", files=files, headers=bob))["key"]

    service.delete_user(namespace="app-x", username="alice")

    assert uploader.files() == [bob_key]
    assert alice_key != bob_key


# -- serving ------------------------------------------------------------------------------------------------------


def test_served_avatar_is_cacheable_with_an_etag_and_304(uploader: Uploader) -> None:
    url = uploader.upload(image_bytes("PNG")).json()["avatar_url"]

    first = uploader.client.get(url)

    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = uploader.client.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304, tag
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=31536000, immutable"
    changed = uploader.client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == first.content


def test_etag_is_the_same_on_every_instance(make_uploader: Callable[..., Uploader]) -> None:
    uploader = make_uploader()
    url = uploader.upload(image_bytes("PNG")).json()["avatar_url"]
    with TestClient(create_app(service_of(uploader.app).settings)) as other:
        assert other.get(url).headers["etag"] == uploader.client.get(url).headers["etag"]


# -- mounted under a path -----------------------------------------------------------------------------------------


def mounted(settings: Settings) -> tuple[TestClient, dict[str, str]]:
    """A host app with user-service mounted at /accounts, and alice's token."""
    inner = create_app(settings)
    host = FastAPI()
    host.mount("/accounts", inner)
    service = service_of(inner)
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    return TestClient(host), bearer(service.issue_tokens(namespace="app-x", username="alice").access_token)


def test_avatar_url_includes_the_mount_path(make_settings: Callable[..., Settings]) -> None:
    web, headers = mounted(make_settings())
    image = image_bytes("PNG")

    uploaded = web.post("/accounts/users/me/avatar", files={"file": ("a.png", image, "image/png")}, headers=headers)

    assert uploaded.status_code == 200, uploaded.text
    url = uploaded.json()["avatar_url"]
    assert url.startswith("/accounts/uploads/")
    assert web.get("/accounts/users/me", headers=headers).json()["avatar_url"] == url
    patched = web.patch("/accounts/users/me", json={"full_name": "Alice"}, headers=headers)
    assert patched.json()["avatar_url"] == url
    served = web.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"


def test_public_base_url_wins_over_the_mount_path(make_settings: Callable[..., Settings]) -> None:
    web, headers = mounted(make_settings(public_base_url="https://id.example.com/accounts"))

    uploaded = web.post(
        "/accounts/users/me/avatar", files={"file": ("a.png", image_bytes("PNG"), "image/png")}, headers=headers
    )

    assert uploaded.json()["avatar_url"].startswith("https://id.example.com/accounts/uploads/")
