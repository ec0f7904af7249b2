"""GET /health, and how every endpoint answers when the database cannot be reached."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, TEST_SECRET, FakeClock, bearer, image_bytes
from user_service import __version__, security
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.service import UserService


def test_health_reports_ok_with_the_version(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "storage": "ok", "version": __version__}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_health_does_not_need_a_token(client: TestClient) -> None:
    response = client.get("/health", headers=bearer("garbage"))

    assert response.status_code == 200


UNREACHABLE = {
    # Nothing listens on port 1: the connection is refused at once.
    "postgresql-refused": lambda tmp: "postgresql://postgres@127.0.0.1:1/nothing",
    "sqlite-missing-folder": lambda tmp: f"sqlite:///{tmp / 'no-such-folder' / 'user-service.db'}",
}


@pytest.fixture(params=list(UNREACHABLE))
def unreachable(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    """An app whose database cannot be reached (the test database is not involved)."""
    settings = Settings(
        database_url=UNREACHABLE[request.param](tmp_path),
        db_connect_timeout_seconds=1,
        jwt_secret_key=TEST_SECRET,
        # The tokens below are signed with the secret: checking them needs the database only for the user's row.
        jwt_algorithm="HS256",
        bcrypt_rounds=4,
        upload_dir=tmp_path / "uploads",
        rate_limit_enabled=False,
        _env_file=None,
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        yield client


def test_health_is_503_when_the_database_is_unreachable(unreachable: TestClient) -> None:
    response = unreachable.get("/health")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "unavailable",
        "storage": "ok",
        "version": __version__,
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def access_token_for_missing_row(clock: FakeClock) -> str:
    """A correctly signed access token; checking it needs the user's row, which the database cannot give."""
    return security.encode_access_token(
        key=TEST_SECRET,
        algorithm="HS256",
        issuer="user-service",
        audience="user-service",
        user_id=uuid.uuid4(),
        namespace="app-x",
        username="alice",
        session_id=uuid.uuid4(),
        now=clock.now,
        ttl_seconds=900,
    )


CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "register": ("POST", "/auth/register", {"json": {"namespace": "app-x", "username": "alice", "password": PASSWORD}}),
    "login": ("POST", "/auth/login", {"json": {"namespace": "app-x", "username": "alice", "password": PASSWORD}}),
    "login-wrong-password": (
        "POST",
        "/auth/login",
        {"json": {"namespace": "app-x", "username": "alice", "password": "not the password"}},
    ),
    "refresh": ("POST", "/auth/refresh", {"json": {"refresh_token": "x" * 43}}),
    "get-me": ("GET", "/users/me", {}),
    "patch-me": ("PATCH", "/users/me", {"json": {"full_name": "Alice"}}),
    "avatar": ("POST", "/users/me/avatar", {"files": {"file": ("a.png", image_bytes("PNG"), "image/png")}}),
}


@pytest.mark.parametrize("call", CALLS)
def test_endpoints_answer_503_database_unavailable(unreachable: TestClient, clock: FakeClock, call: str) -> None:
    method, path, kwargs = CALLS[call]
    headers = bearer(access_token_for_missing_row(clock)) if path.startswith("/users") else {}

    response = unreachable.request(method, path, headers=headers, **kwargs)

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert isinstance(response.json()["detail"], str)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_no_avatar_file_is_left_when_the_database_is_unreachable(unreachable: TestClient, clock: FakeClock) -> None:
    response = unreachable.post(
        "/users/me/avatar",
        files={"file": ("a.png", image_bytes("PNG"), "image/png")},
        headers=bearer(access_token_for_missing_row(clock)),
    )

    assert response.status_code == 503
    service: UserService = unreachable.app.state.service  # type: ignore[attr-defined]
    upload_dir = service.settings.upload_dir
    assert not upload_dir.exists() or not any(upload_dir.iterdir())


def test_database_url_is_not_leaked_when_unreachable(unreachable: TestClient) -> None:
    response = unreachable.post("/auth/login", json={"namespace": "app-x", "username": "alice", "password": PASSWORD})

    assert response.status_code == 503
    assert "127.0.0.1" not in response.text
    assert "no-such-folder" not in response.text
