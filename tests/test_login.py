"""POST /auth/login: the token pair, identifiers, disabled accounts, hashing off the event loop, malformed bodies.

Lockout, enumeration, sessions and hash upgrades are checked in tests/security/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import PASSWORD, WRONG, Api, assert_invalid_credentials, user_row
from user_service import security
from user_service.service import UserService

KELVIN_SIGN = "\u212a"


def test_login_returns_a_token_pair(api: Api) -> None:
    assert api.register().status_code == 201

    response = api.login()

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "expires_at"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert isinstance(body["refresh_token"], str) and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert api.me(body["access_token"]).json()["username"] == "alice"


@pytest.mark.parametrize(("namespace", "username"), [("APP-X", "alice"), ("app-x", "Alice"), ("App-X", "ALICE")])
def test_login_is_case_insensitive_on_identifiers(api: Api, namespace: str, username: str) -> None:
    assert api.register().status_code == 201

    response = api.login(namespace=namespace, username=username)

    assert response.status_code == 200, response.text


def test_login_never_returns_the_hash(api: Api, service: UserService) -> None:
    assert api.register().status_code == 201

    response = api.login()

    assert user_row(service)["password_hash"] not in response.text
    assert PASSWORD not in response.text


def test_kelvin_sign_does_not_log_in_to_an_ascii_account(api: Api) -> None:
    assert api.register(username="kate").status_code == 201

    response = api.login(username=f"{KELVIN_SIGN}ate")

    assert_invalid_credentials(response)
    assert api.login(username="KATE").status_code == 200


def test_disabled_user_gets_403_only_with_the_right_password(api: Api, service: UserService) -> None:
    assert api.register().status_code == 201
    service.set_active(namespace="app-x", username="alice", active=False)

    wrong = api.login(password=WRONG)
    right = api.login()

    assert_invalid_credentials(wrong)
    assert right.status_code == 403, right.text
    assert right.json()["code"] == "user_disabled"
    assert "access_token" not in right.text

    service.set_active(namespace="app-x", username="alice", active=True)
    assert api.login().status_code == 200


def test_password_hashing_runs_off_the_event_loop(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []

    def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                calls.append((name, False))
            else:
                calls.append((name, True))
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(security, "hash_password", recording("hash_password", security.hash_password))
    monkeypatch.setattr(security, "check_password", recording("check_password", security.check_password))

    assert api.register().status_code == 201
    assert api.login().status_code == 200
    assert api.login(password=WRONG).status_code == 401
    assert api.login(username="mallory").status_code == 401

    assert {name for name, _ in calls} == {"hash_password", "check_password"}
    assert [name for name, on_loop in calls if on_loop] == []


@pytest.mark.parametrize(
    "body",
    [
        {"namespace": "app-x", "username": "alice"},
        {"namespace": "app-x", "password": PASSWORD},
        {"username": "alice", "password": PASSWORD},
        {"namespace": "app-x", "username": "alice", "password": 12345678},
        {"namespace": "app-x", "username": None, "password": PASSWORD},
        {"namespace": ["app-x"], "username": "alice", "password": PASSWORD},
        {"namespace": "app-x", "username": "alice", "password": PASSWORD, "remember": True},
        ["app-x", "alice", PASSWORD],
    ],
)
def test_malformed_login_body_is_422(api: Api, body: Any) -> None:
    assert api.register().status_code == 201

    response = api.client.post("/auth/login", json=body)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
