"""Throttling (ASVS 5.0 6.3.1, NIST SP 800-63B 5.2.2): the per-account lockout and the per-address rate limits."""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import limits.storage.memory
import limits.strategies
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import (
    PASSWORD,
    WRONG,
    Api,
    Cli,
    FakeClock,
    MakeApi,
    assert_invalid_credentials,
    bearer,
    registration,
    user_row,
)
from tests.helpers import REDIS_URL, service_of
from user_service.api import ratelimit
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.errors import InvalidCredentials, UserNotFound, UserServiceError
from user_service.service import UserService

NEW_PASSWORD = "velvet quartz harbor"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
LIMIT = 3
RACERS = 8
RACE_TIMEOUT_SECONDS = 60
# 15.25 s into a one-minute window, and off the whole second as a real clock always is.
LIMITER_START = 60 * 31_666_667 + 15.25


def assert_locked(response: Any, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "too_many_attempts"
    assert isinstance(response.json()["detail"], str)
    header = response.headers["Retry-After"]
    assert header.isdigit()
    assert int(header) == retry_after


# -- per account --------------------------------------------------------------------------------------------------


def test_lockout_after_ten_failures(api: Api, clock: FakeClock, service: UserService) -> None:
    """ASVS 5.0 6.3.1: after 10 failures the account locks for 30 s, even the right password gets 429 with
    Retry-After counting down, and the lock lifts on time."""
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
    """ASVS 5.0 6.3.1: a success after a lock starts the count and the wait from scratch."""
    assert api.register().status_code == 201
    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    clock.advance(30)
    assert api.login().status_code == 200

    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_success_resets_the_failure_count(api: Api, service: UserService) -> None:
    """ASVS 5.0 6.3.1: the lock needs consecutive failures; a success resets the count in the database."""
    assert api.register().status_code == 201
    for _ in range(9):
        assert_invalid_credentials(api.login(password=WRONG))
    assert user_row(service)["failed_login_count"] == 9

    assert api.login().status_code == 200
    assert user_row(service)["failed_login_count"] == 0

    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_set_password_lifts_a_lock(api: Api, cli: Cli, service: UserService) -> None:
    """An operator's `set-password` lifts a lock (README): the new password logs in at once and the count of
    failures starts again from zero."""
    assert api.register().status_code == 201
    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)

    result = cli("set-password", "app-x", "alice", "--password-stdin", input=NEW_PASSWORD + "\n")

    assert result.exit_code == 0, result.output
    assert user_row(service)["failed_login_count"] == 0
    assert user_row(service)["locked_until"] is None
    response = api.login(password=NEW_PASSWORD)
    assert response.status_code == 200, response.text
    assert user_row(service)["failed_login_count"] == 0


@pytest.mark.parametrize(("cap", "waits"), [(100, [30, 60, 100, 100]), (900, [30, 60, 120, 240, 480, 900, 900])])
def test_each_failure_after_a_lock_doubles_the_wait_up_to_the_cap(
    make_api: MakeApi, clock: FakeClock, cap: int, waits: list[int]
) -> None:
    """ASVS 5.0 6.3.1: each failure after a lock doubles the wait (30 s, 60 s, ...) up to the cap."""
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
    """ASVS 5.0 6.3.1: LOGIN_LOCKOUT_SECONDS and LOGIN_LOCKOUT_MAX_SECONDS set the wait."""
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
    """ASVS 5.0 6.3.1: LOGIN_MAX_FAILURES sets how many failures lock the account."""
    api = make_api(login_max_failures=max_failures)
    assert api.register().status_code == 201

    for _ in range(max_failures):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_max_failures_is_read_from_the_environment(make_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """ASVS 5.0 6.3.1: the LOGIN_MAX_FAILURES environment variable is honoured."""
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "2")
    api = make_api()
    assert api.register().status_code == 201

    assert_invalid_credentials(api.login(password=WRONG))
    assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)


def test_lockout_is_per_account(api: Api) -> None:
    """ASVS 5.0 6.3.1: a locked account does not lock others, in its namespace or another."""
    assert api.register().status_code == 201
    assert api.register(username="bob").status_code == 201
    for _ in range(10):
        assert_invalid_credentials(api.login(password=WRONG))
    assert_locked(api.login(), 30)

    assert api.login(username="bob").status_code == 200
    assert api.login(namespace="app-y").status_code == 401


def test_failures_of_unknown_accounts_never_lock(api: Api) -> None:
    """ASVS 5.0 6.3.1: failures against a name nobody holds lock nothing, not even the account created later."""
    for _ in range(12):
        assert_invalid_credentials(api.login(username="mallory"))
    assert api.register(username="mallory").status_code == 201
    assert api.login(username="mallory").status_code == 200


def test_wrong_current_password_at_password_change_counts_toward_the_lock(make_api: MakeApi, clock: FakeClock) -> None:
    """ASVS 5.0 6.3.1: a wrong current_password at POST /users/me/password is a failed attempt like a failed login,
    and a locked account cannot change its password either."""
    api = make_api(login_max_failures=3)
    token = api.tokens()["access_token"]
    attempt = {"current_password": WRONG, "new_password": NEW_PASSWORD}

    assert_invalid_credentials(api.login(password=WRONG))
    for _ in range(2):
        assert_invalid_credentials(api.client.post("/users/me/password", json=attempt, headers=bearer(token)))

    assert_locked(api.login(), 30)
    right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert_locked(api.client.post("/users/me/password", json=right, headers=bearer(token)), 30)
    clock.advance(30)
    response = api.client.post("/users/me/password", json=right, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert api.login(password=NEW_PASSWORD).status_code == 200


@pytest.mark.usefixtures("client")
def test_concurrent_failures_are_all_counted(service: UserService) -> None:
    """ASVS 5.0 6.3.1: failures arriving at once are each counted, atomically, in the database."""
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    barrier = threading.Barrier(RACERS, timeout=RACE_TIMEOUT_SECONDS)

    def fail(_index: int) -> None:
        barrier.wait()
        service.login(namespace="app-x", username="alice", password=WRONG)

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        errors = [
            future.exception(timeout=RACE_TIMEOUT_SECONDS)
            for future in [pool.submit(fail, index) for index in range(RACERS)]
        ]

    assert all(isinstance(error, InvalidCredentials) for error in errors), errors
    assert user_row(service)["failed_login_count"] == RACERS
    assert user_row(service)["locked_until"] is None
    for _ in range(10 - RACERS):
        with pytest.raises(InvalidCredentials):
            service.login(namespace="app-x", username="alice", password=WRONG)
    with pytest.raises(UserServiceError) as locked:
        service.login(namespace="app-x", username="alice", password=PASSWORD)
    assert locked.value.code == "too_many_attempts"


# -- per client address -------------------------------------------------------------------------------------------


@dataclass
class LimiterTime:
    """Stands in for the `time` module inside the limits library and the limiter, so windows pass without sleeping."""

    now: float = LIMITER_START

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def limiter_time(monkeypatch: pytest.MonkeyPatch) -> LimiterTime:
    fake = LimiterTime()
    # The memory storage, the strategy computing the reset time and the Retry-After arithmetic all read time.time().
    for module in (limits.storage.memory, limits.strategies, ratelimit):
        monkeypatch.setattr(module, "time", fake)
    return fake


def random_address() -> str:
    """A loopback address of its own, so that tests sharing the Redis server never share a count."""
    return f"127.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@dataclass
class Limited:
    """Apps with the per-address limit on, over this test's database and clock, and clients at chosen addresses."""

    make_settings: Callable[..., Settings]
    clock: FakeClock
    stack: ExitStack
    request: pytest.FixtureRequest

    def app(self, storage: str = "memory", **overrides: Any) -> FastAPI:
        values: dict[str, Any] = {"rate_limit_enabled": True, "rate_limit": f"{LIMIT}/minute"}
        if storage == "redis":
            values["redis_url"] = REDIS_URL
        else:
            # The memory storage's windows follow the wall clock: a test crossing a minute boundary would see its
            # count decay mid-test. Frozen time keeps every memory-storage test deterministic.
            self.request.getfixturevalue("limiter_time")
        values.update(overrides)
        return create_app(self.make_settings(**values), clock=self.clock)

    def client(self, app: FastAPI, address: str | None = None) -> TestClient:
        return self.stack.enter_context(TestClient(app, client=(address or random_address(), 50000)))


@pytest.fixture
def limited(
    make_settings: Callable[..., Settings], clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[Limited]:
    with ExitStack() as stack:
        yield Limited(make_settings, clock, stack, request)


def with_alice(app: FastAPI) -> FastAPI:
    """Create the account through the core, so that setting up costs no request against any limit."""
    service_of(app).register(registration(namespace="app-x", username="alice", password=PASSWORD))
    return app


def hit(client: TestClient, endpoint: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request to a limited endpoint; each would be answered (201, 200 or 401) if it were not limited."""
    if endpoint == "register":
        body = {"namespace": "app-x", "username": f"u-{uuid.uuid4().hex[:12]}", "password": PASSWORD}
        return client.post("/auth/register", json=body, headers=headers)
    if endpoint == "login":
        body = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
        return client.post("/auth/login", json=body, headers=headers)
    if endpoint == "refresh":
        return client.post("/auth/refresh", json={"refresh_token": "not-a-refresh-token"}, headers=headers)
    assert endpoint == "password"
    app = client.app
    assert isinstance(app, FastAPI)
    token = service_of(app).login(namespace="app-x", username="alice", password=PASSWORD).access_token
    body = {"current_password": WRONG, "new_password": NEW_PASSWORD}
    return client.post("/users/me/password", json=body, headers={**(headers or {}), **bearer(token)})


# What each request `hit` sends is answered when it is not limited: a new account, a token pair, an unknown refresh
# token and a wrong current password.
ALLOWED = {
    "register": (201, None),
    "login": (200, None),
    "refresh": (401, "invalid_token"),
    "password": (401, "invalid_credentials"),
}


def assert_allowed(response: httpx.Response, endpoint: str) -> None:
    body = response.json()
    assert (response.status_code, body.get("code")) == ALLOWED[endpoint], response.text


def assert_rate_limited(response: httpx.Response) -> int:
    """A 429 rate_limited with an integer Retry-After within the window; returns the Retry-After."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert isinstance(body["detail"], str)
    assert "access_token" not in response.text
    header = response.headers["Retry-After"]
    assert header.isdigit(), header
    assert 1 <= int(header) <= 60
    return int(header)


def use_up(client: TestClient, endpoint: str, headers: dict[str, str] | None = None) -> None:
    for _ in range(LIMIT):
        assert_allowed(hit(client, endpoint, headers), endpoint)


STORAGES = ["memory", "redis"]
ENDPOINTS = ["register", "login", "refresh", "password"]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_address_over_the_limit_gets_429_with_retry_after(limited: Limited, storage: str, endpoint: str) -> None:
    """ASVS 5.0 6.3.1 and 2.4.1: register, login, refresh and password change allow RATE_LIMIT requests per client
    address, then answer 429 rate_limited with an integer Retry-After."""
    app = with_alice(limited.app(storage))
    client = limited.client(app)

    use_up(client, endpoint)

    assert_rate_limited(hit(client, endpoint))
    assert_rate_limited(hit(client, endpoint))


@pytest.mark.parametrize("storage", STORAGES)
def test_a_refused_request_does_nothing(limited: Limited, storage: str) -> None:
    """ASVS 5.0 2.4.1: a request over the limit is refused before it acts: no account made, no token issued."""
    app = with_alice(limited.app(storage))
    client = limited.client(app)
    use_up(client, "register")
    use_up(client, "login")

    register = client.post("/auth/register", json={"namespace": "app-x", "username": "zoe", "password": PASSWORD})
    login = client.post("/auth/login", json={"namespace": "app-x", "username": "alice", "password": PASSWORD})

    assert_rate_limited(register)
    assert_rate_limited(login)
    with pytest.raises(UserNotFound):
        service_of(app).get_user(namespace="app-x", username="zoe")


@pytest.mark.parametrize("storage", STORAGES)
def test_endpoints_are_counted_separately(limited: Limited, storage: str) -> None:
    """ASVS 5.0 2.4.1: each endpoint has its own count; using up the login limit leaves the others open."""
    app = with_alice(limited.app(storage))
    client = limited.client(app)

    use_up(client, "login")
    assert_rate_limited(hit(client, "login"))

    for endpoint in ("register", "refresh", "password"):
        assert_allowed(hit(client, endpoint), endpoint)


@pytest.mark.parametrize("storage", STORAGES)
def test_addresses_are_counted_separately(limited: Limited, storage: str) -> None:
    """ASVS 5.0 6.3.1: one address over the limit does not limit another."""
    app = with_alice(limited.app(storage))
    first, second = limited.client(app), limited.client(app)

    use_up(first, "login")
    assert_rate_limited(hit(first, "login"))

    response = hit(second, "login")
    assert response.status_code == 200, response.text


def test_instances_sharing_redis_share_one_count(limited: Limited) -> None:
    """ASVS 5.0 6.3.1: with REDIS_URL set, several instances of the service count one address together."""
    first_app = with_alice(limited.app("redis"))
    second_app = limited.app("redis")
    address = random_address()
    first, second = limited.client(first_app, address), limited.client(second_app, address)

    assert_allowed(hit(first, "login"), "login")
    assert_allowed(hit(second, "login"), "login")
    assert_allowed(hit(first, "login"), "login")

    assert_rate_limited(hit(second, "login"))
    assert_rate_limited(hit(first, "login"))
    assert hit(limited.client(second_app), "login").status_code == 200


def test_unreachable_redis_does_not_break_logins(limited: Limited, caplog: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 6.3.1: when the Redis store is down the limit fails open (logins keep working) and says so in the
    log, while the per-account lockout, which lives in the database, still holds."""
    app = with_alice(limited.app(redis_url=UNREACHABLE_REDIS_URL, login_max_failures=3))
    client = limited.client(app)

    with caplog.at_level(logging.WARNING, logger="user_service.api"):
        for _ in range(LIMIT + 2):
            response = hit(client, "login")
            assert response.status_code == 200, response.text

    assert any("rate limit store unavailable" in record.getMessage() for record in caplog.records)
    body = {"namespace": "app-x", "username": "alice", "password": WRONG}
    for _ in range(3):
        assert_invalid_credentials(client.post("/auth/login", json=body))
    assert_locked(hit(client, "login"), 30)


@pytest.mark.parametrize("storage", STORAGES)
def test_rate_limit_can_be_switched_off(limited: Limited, storage: str) -> None:
    """ASVS 5.0 6.3.1: RATE_LIMIT_ENABLED=false switches the per-address limit off."""
    app = with_alice(limited.app(storage, rate_limit_enabled=False))
    client = limited.client(app)

    for _ in range(3 * LIMIT):
        response = hit(client, "login")
        assert response.status_code == 200, response.text


def test_the_limit_recovers_after_retry_after(limited: Limited, limiter_time: LimiterTime) -> None:
    """ASVS 5.0 6.3.1: a refused address may try again once Retry-After has passed, and after a quiet window it has
    its whole allowance back."""
    app = with_alice(limited.app())
    client = limited.client(app)
    use_up(client, "login")
    retry_after = assert_rate_limited(hit(client, "login"))

    limiter_time.advance(1)
    assert_rate_limited(hit(client, "login"))
    limiter_time.advance(retry_after - 1)
    response = hit(client, "login")
    assert response.status_code == 200, response.text

    limiter_time.advance(2 * 60)
    use_up(client, "login")
    assert_rate_limited(hit(client, "login"))


def test_retry_after_counts_down(limited: Limited, limiter_time: LimiterTime) -> None:
    """ASVS 5.0 6.3.1: Retry-After says how long is left, not a fixed figure."""
    app = with_alice(limited.app())
    client = limited.client(app)
    use_up(client, "login")

    first = assert_rate_limited(hit(client, "login"))
    limiter_time.advance(10)
    later = assert_rate_limited(hit(client, "login"))

    assert later == first - 10


# -- which address counts -----------------------------------------------------------------------------------------


def session_ips(app: FastAPI) -> set[str | None]:
    with service_of(app).engine.connect() as connection:
        return set(connection.execute(text("SELECT ip FROM auth_sessions")).scalars())


@pytest.mark.parametrize("trusted_proxies", ["", "10.0.0.0/8"], ids=["none-trusted", "peer-not-trusted"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored(limited: Limited, trusted_proxies: str) -> None:
    """ASVS 5.0 15.3.4 and 4.1.3: X-Forwarded-For is believed only from TRUSTED_PROXIES, so a client cannot escape
    its limit, or pose as another address, by writing the header itself."""
    app = with_alice(limited.app(trusted_proxies=trusted_proxies))
    peer = random_address()
    client = limited.client(app, peer)

    for index in range(LIMIT):
        assert hit(client, "login", {"X-Forwarded-For": f"198.51.100.{index + 1}"}).status_code == 200

    assert_rate_limited(hit(client, "login", {"X-Forwarded-For": "198.51.100.99"}))
    assert session_ips(app) == {peer}


def test_forwarded_clients_behind_a_trusted_proxy_are_counted_apart(limited: Limited) -> None:
    """ASVS 5.0 15.3.4: behind a trusted proxy each forwarded client has its own count and is the address
    recorded."""
    app = with_alice(limited.app(trusted_proxies="127.0.0.0/8, 10.0.0.0/8"))
    proxy = limited.client(app)
    first = {"X-Forwarded-For": "198.51.100.7"}
    second = {"X-Forwarded-For": "203.0.113.9, 10.0.0.2"}  # through a second trusted hop

    use_up(proxy, "login", first)
    assert_rate_limited(hit(proxy, "login", first))

    assert hit(proxy, "login", second).status_code == 200
    assert session_ips(app) == {"198.51.100.7", "203.0.113.9"}


def test_a_client_behind_a_trusted_proxy_cannot_escape_by_prepending_addresses(limited: Limited) -> None:
    """ASVS 5.0 15.3.4 and 4.1.3: the proxy appends the real client; what the client wrote to the left is not
    believed."""
    app = with_alice(limited.app(trusted_proxies="127.0.0.0/8"))
    proxy = limited.client(app)

    for index in range(LIMIT):
        headers = {"X-Forwarded-For": f"192.0.2.{index + 1}, 198.51.100.7"}
        assert hit(proxy, "login", headers).status_code == 200

    assert_rate_limited(hit(proxy, "login", {"X-Forwarded-For": "192.0.2.200, 198.51.100.7"}))
    assert session_ips(app) == {"198.51.100.7"}
