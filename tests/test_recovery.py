"""Password resets and email verification by one-time tokens; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.conftest import PASSWORD, WRONG, Api, FakeClock, MakeApi, bearer
from tests.helpers import assert_error
from user_service import security
from user_service.errors import OneTimeTokenInvalid
from user_service.service import UserService

NEW_PASSWORD = "a brand new passphrase"
ALICE = "/admin/namespaces/app-x/users/alice"


def admin_headers(service: UserService) -> dict[str, str]:
    return bearer(service.create_admin_key(name="backend")[1])


def reset_token(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(ALICE + "/password-reset", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def reset(client: TestClient, token: str, new_password: str = NEW_PASSWORD) -> Any:
    return client.post("/auth/password-reset", json={"token": token, "new_password": new_password})


def test_a_reset_sets_the_password_ends_every_session_and_starts_none(
    api: Api, client: TestClient, service: UserService
) -> None:
    pair = api.tokens()
    headers = admin_headers(service)
    issued = reset_token(client, headers)

    done = reset(client, issued["token"])

    assert done.status_code == 204, done.text
    assert done.content == b""
    assert api.me(pair["access_token"]).status_code == 401
    assert api.refresh(pair["refresh_token"]).status_code == 401
    assert api.login().status_code == 401
    assert api.login(password=NEW_PASSWORD).status_code == 200


def test_a_reset_token_is_single_use(api: Api, client: TestClient, service: UserService) -> None:
    api.created()
    token = reset_token(client, admin_headers(service))["token"]

    assert reset(client, token).status_code == 204
    assert_error(reset(client, token, "yet another passphrase"), 400, "one_time_token_invalid")
    assert api.login(password=NEW_PASSWORD).status_code == 200


def test_an_expired_token_is_refused(api: Api, client: TestClient, service: UserService, clock: FakeClock) -> None:
    api.created()
    issued = reset_token(client, admin_headers(service))

    clock.advance(1801)

    assert_error(reset(client, issued["token"]), 400, "one_time_token_invalid")
    assert api.login().status_code == 200


def test_a_newer_token_and_a_password_change_void_older_tokens(
    api: Api, client: TestClient, service: UserService
) -> None:
    pair = api.tokens()
    headers = admin_headers(service)
    older = reset_token(client, headers)["token"]
    newer = reset_token(client, headers)["token"]

    assert_error(reset(client, older), 400, "one_time_token_invalid")
    changed = client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "changed by the user"},
        headers=bearer(pair["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    assert_error(reset(client, newer), 400, "one_time_token_invalid")


def test_the_policy_applies_and_a_refused_password_keeps_the_token(
    api: Api, client: TestClient, service: UserService
) -> None:
    api.created()
    token = reset_token(client, admin_headers(service))["token"]

    assert_error(reset(client, token, "short"), 422, "password_too_short")
    assert_error(reset(client, token, "alice is my password"), 422, "password_contains_username")
    assert reset(client, token).status_code == 204


def test_a_reset_lifts_a_lock(make_api: MakeApi, service: UserService) -> None:
    api = make_api(login_max_failures=2, login_account_max_failures=2)
    api.created()
    for _ in range(2):
        api.login(password=WRONG)
    assert api.login().status_code == 429
    app_service: UserService = api.client.app.state.service  # type: ignore[attr-defined]
    token = reset_token(api.client, admin_headers(app_service))["token"]

    assert reset(api.client, token).status_code == 204

    assert api.login(password=NEW_PASSWORD).status_code == 200


def test_unknown_and_other_kind_tokens_get_one_answer(api: Api, client: TestClient, service: UserService) -> None:
    api.created(email="alice@example.com")
    headers = admin_headers(service)
    verification = client.post(ALICE + "/email-verification", headers=headers).json()["token"]
    reset_one = reset_token(client, headers)["token"]

    assert_error(reset(client, "x" * 43), 400, "one_time_token_invalid")
    assert_error(reset(client, verification), 400, "one_time_token_invalid")
    assert_error(client.post("/auth/verify-email", json={"token": reset_one}), 400, "one_time_token_invalid")
    assert client.post("/auth/verify-email", json={"token": "y" * 2000}).status_code == 422


def test_of_two_concurrent_uses_exactly_one_resets(api: Api, client: TestClient, service: UserService) -> None:
    api.created()
    token = reset_token(client, admin_headers(service))["token"]
    start = threading.Barrier(2, timeout=10)

    def use(password: str) -> str:
        start.wait()
        try:
            service.complete_password_reset(token, password)
        except OneTimeTokenInvalid:
            return "refused"
        return "reset"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(use, ["first new passphrase", "second new passphrase"], timeout=30))

    assert sorted(outcomes) == ["refused", "reset"]
    winner = "first new passphrase" if outcomes[0] == "reset" else "second new passphrase"
    assert api.login(password=winner).status_code == 200


def test_verify_email_marks_the_current_address(api: Api, client: TestClient, service: UserService) -> None:
    pair = api.tokens(email="alice@example.com")
    assert api.me(pair["access_token"]).json()["email_verified"] is False
    token = client.post(ALICE + "/email-verification", headers=admin_headers(service)).json()["token"]

    verified = client.post("/auth/verify-email", json={"token": token})

    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True
    assert_error(client.post("/auth/verify-email", json={"token": token}), 400, "one_time_token_invalid")
    moved = client.patch("/users/me", json={"email": "new@example.com"}, headers=bearer(pair["access_token"]))
    assert moved.json()["email_verified"] is False


def test_a_token_for_a_changed_email_is_refused(api: Api, client: TestClient, service: UserService) -> None:
    pair = api.tokens(email="alice@example.com")
    token = client.post(ALICE + "/email-verification", headers=admin_headers(service)).json()["token"]
    client.patch("/users/me", json={"email": "new@example.com"}, headers=bearer(pair["access_token"]))

    assert_error(client.post("/auth/verify-email", json={"token": token}), 400, "one_time_token_invalid")
    assert api.me(pair["access_token"]).json()["email_verified"] is False


def test_verification_needs_an_email(api: Api, client: TestClient, service: UserService) -> None:
    api.created()

    response = client.post(ALICE + "/email-verification", headers=admin_headers(service))

    assert_error(response, 422, "invalid_input")


def test_login_can_require_a_verified_email(make_api: MakeApi) -> None:
    api = make_api(login_require_verified_email=True)
    api.created(email="alice@example.com")
    app_service: UserService = api.client.app.state.service  # type: ignore[attr-defined]

    assert_error(api.login(), 403, "email_not_verified")
    assert_error(api.login(password=WRONG), 401, "invalid_credentials")
    token = api.client.post(ALICE + "/email-verification", headers=admin_headers(app_service)).json()["token"]
    assert api.client.post("/auth/verify-email", json={"token": token}).status_code == 200
    assert api.login().status_code == 200


def test_the_token_endpoints_are_rate_limited_per_address(make_api: MakeApi) -> None:
    api = make_api(rate_limit_enabled=True, rate_limit="2/minute")

    for _ in range(2):
        assert reset(api.client, "z" * 43).status_code == 400
    assert_error(reset(api.client, "z" * 43), 429, "rate_limited")
    for _ in range(2):
        assert api.client.post("/auth/verify-email", json={"token": "z" * 43}).status_code == 400
    assert_error(api.client.post("/auth/verify-email", json={"token": "z" * 43}), 429, "rate_limited")


def test_a_refused_token_costs_the_same_work_whether_it_matched_a_user_or_not(
    api: Api, client: TestClient, service: UserService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.created(email="alice@example.com")
    headers = admin_headers(service)
    spent = reset_token(client, headers)["token"]
    assert reset(client, spent).status_code == 204
    expired = reset_token(client, headers)["token"]
    verification = client.post(ALICE + "/email-verification", headers=headers).json()["token"]
    clock.advance(1801)
    work: list[str] = []
    real_hash = security.hash_password

    def counted_hash(password: str, rounds: int) -> str:
        work.append("bcrypt")
        return real_hash(password, rounds)

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        work.append(" ".join(sql.split()))

    monkeypatch.setattr(security, "hash_password", counted_hash)
    event.listen(service.engine, "before_cursor_execute", statement)
    try:
        costs = {}
        for name, token in (("unknown", "q" * 43), ("spent", spent), ("expired", expired), ("other", verification)):
            work.clear()
            assert_error(reset(client, token), 400, "one_time_token_invalid")
            costs[name] = list(work)
    finally:
        event.remove(service.engine, "before_cursor_execute", statement)

    assert costs["unknown"].count("bcrypt") == 1
    assert costs["spent"] == costs["unknown"] == costs["expired"] == costs["other"]
