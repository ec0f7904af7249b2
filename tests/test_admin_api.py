"""The admin API for apps' back ends: admin keys, scope, users, sessions; on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, Api, FakeClock, MakeClient, bearer
from tests.helpers import assert_error
from user_service.security import hash_password
from user_service.service import UserService

USERS = "/admin/namespaces/{}/users"


def admin_key(service: UserService, name: str = "backend", namespace: str | None = None) -> dict[str, str]:
    _info, key = service.create_admin_key(name=name, namespace=namespace)
    return bearer(key)


def test_a_key_scoped_to_one_namespace_meets_others_as_if_they_did_not_exist(
    api: Api, client: TestClient, service: UserService
) -> None:
    api.created(namespace="app-x", username="alice")
    api.created(namespace="app-y", username="bob")
    key = admin_key(service, namespace="app-x")

    mine = client.get(USERS.format("app-x"), headers=key)
    assert mine.status_code == 200, mine.text
    assert [user["username"] for user in mine.json()["items"]] == ["alice"]
    other = client.get(USERS.format("app-y"), headers=key)
    missing = client.get(USERS.format("no-such-ns"), headers=key)
    assert_error(other, 404, "namespace_not_found")
    assert other.json() == missing.json()
    assert_error(client.get(USERS.format("app-y") + "/bob", headers=key), 404, "user_not_found")
    assert_error(client.delete(USERS.format("app-y") + "/bob", headers=key), 404, "user_not_found")
    assert_error(client.post(USERS.format("app-y") + "/bob/password-reset", headers=key), 404, "user_not_found")
    created = client.post(USERS.format("app-y"), headers=key, json={"username": "mallory", "password": PASSWORD})
    assert_error(created, 404, "namespace_not_found")
    assert service.get_user(namespace="app-y", username="bob").username == "bob"


def test_missing_wrong_and_user_credentials_do_not_open_the_admin_api(api: Api, client: TestClient) -> None:
    pair = api.tokens()
    url = USERS.format("app-x")

    assert_error(client.get(url), 401, "not_authenticated")
    assert_error(client.get(url, headers=bearer("usk_" + "A" * 43)), 401, "invalid_token")
    assert_error(client.get(url, headers=bearer(pair["access_token"])), 401, "invalid_token")


def test_an_admin_key_is_not_a_user_token(api: Api, client: TestClient, service: UserService) -> None:
    api.created()
    key = admin_key(service)

    assert_error(client.get("/users/me", headers=key), 401, "invalid_token")


def test_a_revoked_key_is_refused_at_once_on_another_instance(
    api: Api, service: UserService, make_client: MakeClient
) -> None:
    api.created()
    key = admin_key(service)
    other_instance = make_client()
    assert other_instance.get(USERS.format("app-x"), headers=key).status_code == 200

    service.revoke_admin_key(name="backend")

    assert_error(other_instance.get(USERS.format("app-x"), headers=key), 401, "invalid_token")


def test_listing_pages_with_a_cursor_and_bounds_the_limit(
    api: Api, client: TestClient, service: UserService, clock: FakeClock
) -> None:
    for name in ("u1", "u2", "u3"):
        api.created(username=name)
        clock.advance(1)
    key = admin_key(service)

    first = client.get(USERS.format("app-x"), params={"limit": 2}, headers=key).json()
    second = client.get(USERS.format("app-x"), params={"limit": 2, "after": first["next"]}, headers=key).json()

    assert [user["username"] for user in first["items"] + second["items"]] == ["u1", "u2", "u3"]
    assert second["next"] is None
    assert client.get(USERS.format("app-x"), params={"limit": 501}, headers=key).status_code == 422
    assert_error(client.get(USERS.format("app-x"), params={"after": "garbage"}, headers=key), 422, "invalid_input")
    assert client.get(USERS.format("Bad_NS!"), headers=key).status_code == 422


def test_create_with_a_password_or_a_bcrypt_hash_then_log_in(
    api: Api, client: TestClient, service: UserService
) -> None:
    key = admin_key(service)
    url = USERS.format("app-x")

    made = client.post(url, headers=key, json={"username": "alice", "password": PASSWORD, "email": "a@example.com"})
    imported = client.post(
        url, headers=key, json={"username": "bob", "password_hash": hash_password("imported secret 1", 4)}
    )

    assert made.status_code == 201, made.text
    assert made.json()["email_verified"] is False
    assert imported.status_code == 201, imported.text
    assert api.login(username="bob", password="imported secret 1").status_code == 200
    assert api.login(username="alice").status_code == 200
    assert_error(
        client.post(url, headers=key, json={"username": "carol", "password": "short"}), 422, "password_too_short"
    )
    both = {"username": "dan", "password": PASSWORD, "password_hash": hash_password("x" * 10, 4)}
    assert client.post(url, headers=key, json=both).status_code == 422
    assert (
        client.post(url, headers=key, json={"username": "erin", "password_hash": "$2b$04$tooshort"}).status_code == 422
    )
    again = client.post(url, headers=key, json={"username": "alice", "password": PASSWORD})
    assert_error(again, 409, "username_taken")


def test_patch_changes_the_profile_and_state(api: Api, client: TestClient, service: UserService) -> None:
    api.created(email="alice@example.com")
    pair = api.logged_in()
    key = admin_key(service)
    url = USERS.format("app-x") + "/alice"

    verified = client.patch(url, headers=key, json={"email_verified": True, "extra": {"plan": "pro"}})
    assert verified.json()["email_verified"] is True
    assert verified.json()["extra"] == {"plan": "pro"}
    moved = client.patch(url, headers=key, json={"email": "new@example.com"})
    assert moved.json()["email_verified"] is False
    disabled = client.patch(url, headers=key, json={"is_active": False})
    assert disabled.status_code == 200, disabled.text

    assert_error(api.me(pair["access_token"]), 403, "user_disabled")
    assert client.get(url, headers=key).json()["is_active"] is False
    # Disabling ended the sessions: enabled again, the old token stays dead.
    client.patch(url, headers=key, json={"is_active": True})
    assert api.me(pair["access_token"]).status_code == 401
    assert client.patch(url, headers=key, json={"is_active": None}).status_code == 422
    assert client.patch(url, headers=key, json={"username": "bob"}).status_code == 422


def test_sessions_listed_and_ended_and_user_deleted(api: Api, client: TestClient, service: UserService) -> None:
    pair = api.tokens()
    key = admin_key(service)
    url = USERS.format("app-x") + "/alice"

    sessions: list[dict[str, Any]] = client.get(url + "/sessions", headers=key).json()
    assert len(sessions) == 1
    assert client.delete(url + "/sessions", headers=key).status_code == 204
    assert api.me(pair["access_token"]).status_code == 401
    assert client.get(url + "/sessions", headers=key).json() == []

    assert client.delete(url, headers=key).status_code == 204
    assert_error(client.get(url, headers=key), 404, "user_not_found")
    assert_error(client.delete(url, headers=key), 404, "user_not_found")


def test_admin_actions_are_security_events_naming_the_key_and_the_user(
    api: Api, client: TestClient, service: UserService, caplog: pytest.LogCaptureFixture
) -> None:
    api.created()
    key = admin_key(service, name="billing")
    caplog.set_level(logging.INFO, logger="user_service.security")

    client.patch(USERS.format("app-x") + "/alice", headers=key, json={"full_name": "Alice"})
    issued = client.post(USERS.format("app-x") + "/alice/password-reset", headers=key).json()
    client.delete(USERS.format("app-x") + "/alice/sessions", headers=key)

    records = [record.__dict__ for record in caplog.records if record.name == "user_service.security"]
    actions = [(r["event"], r.get("action"), r.get("key"), r.get("actor")) for r in records]
    assert actions == [
        ("admin_action", "update_user", "billing", None),
        ("password_reset_issued", None, None, "admin-key:billing"),
        ("sessions_revoked", None, None, "admin-key:billing"),
    ]
    assert all(r["namespace"] == "app-x" for r in records)
    assert issued["token"] not in caplog.text
    assert key["Authorization"].removeprefix("Bearer ") not in caplog.text


def test_openapi_documents_the_admin_api_and_the_token_refusals(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert schema["components"]["securitySchemes"]["AdminKey"]["scheme"] == "bearer"
    admin_operations = [
        op for path, item in schema["paths"].items() if path.startswith("/admin/") for op in item.values()
    ]
    assert len(admin_operations) == 10
    assert all(op["tags"] == ["admin"] and op["security"] == [{"AdminKey": []}] for op in admin_operations)
    for path in ("/auth/password-reset", "/auth/verify-email"):
        assert "one_time_token_invalid" in schema["paths"][path]["post"]["responses"]["400"]["description"]
