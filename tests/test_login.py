"""POST /auth/login: the token pair, indistinguishable failures, disabled accounts, lockout and hash upgrades."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import bcrypt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import PASSWORD, Api, FakeClock
from user_service import security
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.service import UserService

WRONG = "not the password"
KELVIN_SIGN = "\u212a"
MakeApi = Callable[..., Api]


@pytest.fixture
def make_api(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[MakeApi]:
    """An Api on its own app, built with setting overrides, on this test's database and clock."""
    with ExitStack() as stack:

        def build(**overrides: Any) -> Api:
            app = create_app(make_settings(**overrides), clock=clock)
            return Api(stack.enter_context(TestClient(app)))

        yield build


def user_row(service: UserService, username: str = "alice") -> dict[str, Any]:
    with service.engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT password_hash, failed_login_count, locked_until FROM users "
                "WHERE namespace = 'app-x' AND username = :u"
            ),
            {"u": username},
        ).one()
    return dict(row._mapping)


def assert_invalid_credentials(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_credentials"


def assert_locked(response: Any, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_attempts"
    assert isinstance(response.json()["detail"], str)
    header = response.headers["Retry-After"]
    assert header.isdigit()
    assert int(header) == retry_after


def test_login_returns_a_token_pair(api: Api) -> None:
    assert api.register().status_code == 201

    response = api.login()

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert isinstance(body["refresh_token"], str) and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert api.me(body["access_token"]).json()["username"] == "alice"


def test_each_login_starts_a_new_session(api: Api) -> None:
    assert api.register().status_code == 201

    first, second = api.login().json(), api.login().json()

    assert first["access_token"] != second["access_token"]
    assert first["refresh_token"] != second["refresh_token"]


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


FAILED_LOGINS = {
    "unknown-namespace": {"namespace": "app-z"},
    "unknown-user": {"username": "mallory"},
    "wrong-password": {"password": WRONG},
    "password-over-72-bytes": {"password": PASSWORD + "é" * 40},
    "password-73-bytes-multibyte": {"password": "é" * 36 + "a"},
    "malformed-username": {"username": "al ice!"},
    "username-too-long": {"username": "a" * 65},
    "empty-username": {"username": ""},
    "non-ascii-username": {"username": "ålice"},
    "malformed-namespace": {"namespace": "app_x"},
    "empty-password": {"password": ""},
}


def test_failed_logins_are_indistinguishable(api: Api) -> None:
    assert api.register().status_code == 201
    assert api.register(username="bob").status_code == 201

    responses = {name: api.login(**fields) for name, fields in FAILED_LOGINS.items()}

    reference = responses["wrong-password"]
    assert_invalid_credentials(reference)
    assert reference.headers["WWW-Authenticate"].startswith("Bearer")
    for name, response in responses.items():
        assert response.status_code == reference.status_code, name
        assert response.content == reference.content, name
        assert dict(response.headers) == dict(reference.headers), name


def test_kelvin_sign_does_not_log_in_to_an_ascii_account(api: Api) -> None:
    assert api.register(username="kate").status_code == 201

    response = api.login(username=f"{KELVIN_SIGN}ate")

    assert_invalid_credentials(response)
    assert api.login(username="KATE").status_code == 200


@pytest.mark.parametrize(
    "fields",
    [
        {"namespace": "app-z"},
        {"username": "mallory"},
        {"username": "al ice!"},
        {"password": WRONG},
        {"password": "é" * 36 + "a"},
    ],
    ids=["unknown-namespace", "unknown-user", "malformed-username", "wrong-password", "over-long-password"],
)
def test_every_failed_login_costs_one_password_check(
    api: Api, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str]
) -> None:
    assert api.register().status_code == 201
    checks: list[tuple[str, str]] = []
    original = security.check_password

    def counting(password: str, password_hash: str) -> bool:
        checks.append((password, password_hash))
        return original(password, password_hash)

    monkeypatch.setattr(security, "check_password", counting)

    assert_invalid_credentials(api.login(**fields))

    assert len(checks) == 1
    assert checks[0][0] == fields.get("password", PASSWORD)
    # The stand-in hash has the configured cost, so a miss takes as long as a wrong password.
    assert security.hash_rounds(checks[0][1]) == 4


@pytest.mark.parametrize(
    "fields", [{"namespace": "app-z"}, {"username": "mallory"}, {"password": WRONG}], ids=["ns", "user", "password"]
)
def test_unknown_accounts_run_a_real_bcrypt_check(
    api: Api, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str]
) -> None:
    assert api.register().status_code == 201
    assert api.login(namespace="app-z").status_code == 401  # the stand-in hash is made once, on the first miss
    hashes: list[bytes] = []
    original = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        hashes.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)

    assert_invalid_credentials(api.login(**fields))

    assert len(hashes) == 1
    assert hashes[0].startswith(b"$2b$04$")


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


def test_lockout_after_ten_failures(api: Api, clock: FakeClock, service: UserService) -> None:
    assert api.register().status_code == 201

    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(password=WRONG), 30)
    assert_locked(api.login(), 30)

    clock.advance(10)
    assert_locked(api.login(), 20)
    clock.advance(19)
    assert_locked(api.login(), 1)
    clock.advance(1)

    response = api.login()
    assert response.status_code == 200, response.text
    assert user_row(service)["failed_login_count"] == 0
    assert user_row(service)["locked_until"] is None


def test_success_after_a_lock_resets_the_count(api: Api, clock: FakeClock) -> None:
    assert api.register().status_code == 201
    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    clock.advance(30)
    assert api.login().status_code == 200

    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_success_resets_the_failure_count(api: Api, service: UserService) -> None:
    assert api.register().status_code == 201
    for _ in range(9):
        assert_invalid_credentials(api.login(password=WRONG))
    assert user_row(service)["failed_login_count"] == 9

    assert api.login().status_code == 200
    assert user_row(service)["failed_login_count"] == 0

    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


@pytest.mark.parametrize(("cap", "waits"), [(100, [30, 60, 100, 100]), (900, [30, 60, 120, 240, 480, 900, 900])])
def test_each_failure_after_a_lock_doubles_the_wait_up_to_the_cap(
    make_api: MakeApi, clock: FakeClock, cap: int, waits: list[int]
) -> None:
    api = make_api(login_max_failures=3, login_lockout_max_seconds=cap)
    assert api.register().status_code == 201
    for _ in range(3):
        assert_invalid_credentials(api.login(password=WRONG))

    for index, wait in enumerate(waits):
        assert_locked(api.login(), wait)
        clock.advance(wait)
        if index < len(waits) - 1:
            # The lock has run out; one more wrong password locks again for twice as long.
            assert_invalid_credentials(api.login(password=WRONG))

    assert api.login().status_code == 200
    for _ in range(3):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_lockout_uses_the_configured_base_wait(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(login_max_failures=2, login_lockout_seconds=5, login_lockout_max_seconds=5)
    assert api.register().status_code == 201
    for _ in range(2):
        assert_invalid_credentials(api.login(password=WRONG))

    assert_locked(api.login(), 5)
    clock.advance(5)
    assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 5)


@pytest.mark.parametrize("max_failures", [1, 3, 25])
def test_max_failures_is_configurable(make_api: MakeApi, max_failures: int) -> None:
    api = make_api(login_max_failures=max_failures)
    assert api.register().status_code == 201

    for _ in range(max_failures):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_max_failures_is_read_from_the_environment(make_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "2")
    api = make_api()
    assert api.register().status_code == 201

    assert_invalid_credentials(api.login(password=WRONG))
    assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_lockout_is_per_account(api: Api) -> None:
    assert api.register().status_code == 201
    assert api.register(username="bob").status_code == 201
    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)

    assert api.login(username="bob").status_code == 200
    assert api.login(namespace="app-y").status_code == 401


def test_failures_of_unknown_accounts_never_lock(api: Api) -> None:
    for _ in range(12):
        assert_invalid_credentials(api.login(username="mallory"))
    assert api.register(username="mallory").status_code == 201
    assert api.login(username="mallory").status_code == 200


def test_login_rehashes_with_the_configured_cost(api: Api, make_api: MakeApi, service: UserService) -> None:
    assert api.register().status_code == 201
    assert user_row(service)["password_hash"].startswith("$2b$04$")
    stronger = make_api(bcrypt_rounds=5)

    assert_invalid_credentials(stronger.login(password=WRONG))
    assert user_row(service)["password_hash"].startswith("$2b$04$")

    assert stronger.login().status_code == 200
    upgraded = user_row(service)["password_hash"]
    assert upgraded.startswith("$2b$05$")
    assert bcrypt.checkpw(PASSWORD.encode(), upgraded.encode())

    assert stronger.login().status_code == 200
    assert user_row(service)["password_hash"] == upgraded
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
