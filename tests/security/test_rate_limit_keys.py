"""What the per-address rate limit counts a request under (ASVS 5.0 2.4.1, 6.3.1), how it behaves when its Redis
store fails (ASVS 5.0 13.x, availability), and that a forwarded address cannot write fields into the logs
(ASVS 5.0 16.4.1: log injection)."""

from __future__ import annotations

import contextlib
import logging
import secrets
import shlex
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import limits.storage.memory
import limits.strategies
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, FakeClock, bearer, registration
from user_service.addresses import NO_ADDRESS, client_key
from user_service.api import ratelimit
from user_service.api.app import create_app
from user_service.api.ratelimit import AddressRateLimiter
from user_service.config import Settings
from user_service.errors import RateLimited, UsernameTaken
from user_service.events import TextFormatter, quote_value, security_event
from user_service.service import UserService

LIMIT = 2
REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


@dataclass
class FrozenTime:
    """Stands in for the `time` module inside the limits library, so that a window never ends mid-test."""

    now: float = 60 * 31_666_667 + 15.25

    def time(self) -> float:
        return self.now


@pytest.fixture
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> FrozenTime:
    fake = FrozenTime()
    for module in (limits.storage.memory, limits.strategies, ratelimit):
        monkeypatch.setattr(module, "time", fake)
    return fake


class Apps:
    def __init__(self, make_settings: Callable[..., Settings], clock: FakeClock, stack: ExitStack) -> None:
        self.make_settings = make_settings
        self.clock = clock
        self.stack = stack

    def app(self, **overrides: Any) -> FastAPI:
        values: dict[str, Any] = {"rate_limit_enabled": True, "rate_limit": f"{LIMIT}/minute", **overrides}
        app = create_app(self.make_settings(**values), clock=self.clock)
        service: UserService = app.state.service
        with contextlib.suppress(UsernameTaken):  # apps of one test share its database
            service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
        return app

    def client(self, app: FastAPI, address: str | None) -> TestClient:
        peer = None if address is None else (address, 50000)
        return self.stack.enter_context(TestClient(app, client=peer))  # type: ignore[arg-type]


@pytest.fixture
def apps(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[Apps]:
    with ExitStack() as stack:
        yield Apps(make_settings, clock, stack)


def login(client: TestClient, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
    return client.post("/auth/login", json=body, headers=headers)


def use_up(client: TestClient) -> None:
    for _ in range(LIMIT):
        response = login(client)
        assert response.status_code == 200, response.text


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"


# -- what a request is counted under ------------------------------------------------------------------------------


@pytest.mark.usefixtures("frozen_time")
def test_requests_without_a_client_address_share_one_count(apps: Apps) -> None:
    """ASVS 5.0 2.4.1: a request with no client address (a Unix socket) is counted, under one shared key, instead
    of switching the limit off."""
    app = apps.app()
    client = apps.client(app, None)
    use_up(client)

    assert_limited(login(client))
    assert login(apps.client(app, "127.0.4.1")).status_code == 200


@pytest.mark.usefixtures("frozen_time")
@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", id="one-ipv6-64"),
        pytest.param("::ffff:127.0.5.9", "127.0.5.9", id="ipv4-mapped"),
        pytest.param("fe80::1%eth0", "fe80::1%eth1", id="scope-ids"),
    ],
)
def test_forms_of_one_client_share_a_count(apps: Apps, first: str, second: str) -> None:
    """ASVS 5.0 2.4.1: an IPv6 client cannot escape the limit by moving within its /64, by an IPv4-mapped form, or
    by a scope id."""
    app = apps.app()
    use_up(apps.client(app, first))

    assert_limited(login(apps.client(app, second)))


@pytest.mark.usefixtures("frozen_time")
def test_different_ipv6_64s_count_apart(apps: Apps) -> None:
    app = apps.app()
    use_up(apps.client(app, "2001:db8:1:2::1"))

    assert login(apps.client(app, "2001:db8:1:3::1")).status_code == 200


def test_rate_keys() -> None:
    assert client_key(None) == NO_ADDRESS
    assert client_key("198.51.100.7") == "198.51.100.7"
    assert client_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("fe80::1%anything") == "fe80::/64"
    assert client_key("testclient") == "testclient"


# -- the prefix of the keys in Redis -------------------------------------------------------------------------


def test_deployments_with_different_issuers_sharing_redis_count_apart(apps: Apps) -> None:
    """ASVS 5.0 2.4.1: two deployments sharing one Redis database keep their own counts (the key prefix derives
    from JWT_ISSUER unless RATE_LIMIT_KEY_PREFIX is set); instances of one deployment share theirs."""
    address = f"127.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    issuer = f"issuer-{uuid.uuid4().hex[:8]}"
    first = apps.client(apps.app(redis_url=REDIS_URL, jwt_issuer=issuer), address)
    sibling = apps.client(apps.app(redis_url=REDIS_URL, jwt_issuer=issuer), address)
    other = apps.client(apps.app(redis_url=REDIS_URL, jwt_issuer=f"{issuer}-other"), address)
    prefixed = apps.client(
        apps.app(redis_url=REDIS_URL, jwt_issuer=issuer, rate_limit_key_prefix=f"x-{issuer}"), address
    )
    use_up(first)

    assert_limited(login(sibling))
    assert login(other).status_code == 200
    assert login(prefixed).status_code == 200


def test_the_key_prefix_setting_is_checked(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT_KEY_PREFIX"):
        make_settings(rate_limit_key_prefix="has spaces\nand a newline")


# -- email changes -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("frozen_time")
def test_email_changes_are_rate_limited_per_address(apps: Apps) -> None:
    """ASVS 5.0 6.3.1 / 2.4.1: a PATCH that sets the email says whether that email is taken, so it is counted per
    address like registration; a PATCH of other fields is not."""
    app = apps.app()
    service: UserService = app.state.service
    headers = bearer(service.issue_tokens(namespace="app-x", username="alice").access_token)
    client = apps.client(app, "127.0.6.1")

    for number in range(LIMIT):
        response = client.patch("/users/me", json={"email": f"a{number}@example.com"}, headers=headers)
        assert response.status_code == 200, response.text
    assert_limited(client.patch("/users/me", json={"email": "probe@example.com"}, headers=headers))
    assert client.patch("/users/me", json={"full_name": "Alice"}, headers=headers).status_code == 200


# -- a failing Redis -----------------------------------------------------------------------------------------------


class FailingStrategy:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = True

    def hit(self, *_: object) -> bool:
        self.calls += 1
        if self.fail:
            raise ConnectionError("down")
        return True


@dataclass
class Monotonic:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_redis_is_not_asked_again_for_a_while(make_settings: Callable[..., Settings]) -> None:
    """ASVS 5.0 13.x (availability): after a few consecutive failures the limiter stops calling Redis for a while
    (no request waits on it meanwhile), then tries again; a success closes the breaker."""
    clock = Monotonic()
    limiter = AddressRateLimiter(
        make_settings(rate_limit_enabled=True, redis_url=UNREACHABLE_REDIS_URL), monotonic=clock
    )
    failing = FailingStrategy()
    limiter.strategy = failing  # type: ignore[assignment]

    for _ in range(ratelimit.BREAKER_FAILURES + 5):
        limiter.hit("login", "127.0.0.1")
    assert failing.calls == ratelimit.BREAKER_FAILURES
    assert not limiter.blocks

    clock.now += ratelimit.BREAKER_OPEN_SECONDS
    assert limiter.blocks
    limiter.hit("login", "127.0.0.1")
    assert failing.calls == ratelimit.BREAKER_FAILURES + 1
    # Still failing: one more failure opens it again at once.
    limiter.hit("login", "127.0.0.1")
    assert failing.calls == ratelimit.BREAKER_FAILURES + 1

    clock.now += ratelimit.BREAKER_OPEN_SECONDS
    failing.fail = False
    limiter.hit("login", "127.0.0.1")
    limiter.hit("login", "127.0.0.1")
    assert failing.calls == ratelimit.BREAKER_FAILURES + 3
    assert limiter.blocks


def test_a_memory_limiter_still_refuses(make_settings: Callable[..., Settings], frozen_time: FrozenTime) -> None:
    limiter = AddressRateLimiter(make_settings(rate_limit_enabled=True, rate_limit="1/minute"))
    limiter.hit("login", None)
    with pytest.raises(RateLimited):
        limiter.hit("login", None)


# -- log injection through a forwarded address --------------------------------------------------------------------


def test_a_forwarded_address_with_a_scope_id_is_not_taken(
    apps: Apps, caplog: pytest.LogCaptureFixture, frozen_time: FrozenTime
) -> None:
    """ASVS 5.0 16.4.1: `fe80::1%<text>` parses as an IP address in Python; as a forwarded address it is refused
    (the proxy's address is used), so its text never reaches a log line."""
    app = apps.app(trusted_proxies="10.0.0.0/8")
    client = apps.client(app, "10.0.0.5")
    caplog.set_level(logging.INFO, logger="user_service.security")

    response = login(client, headers={"X-Forwarded-For": "fe80::1%eth0 user_id=admin event=x"})

    assert response.status_code == 200, response.text
    (record,) = [record for record in caplog.records if record.name == "user_service.security"]
    assert record.__dict__["ip"] == "10.0.0.5"


@pytest.mark.parametrize(
    "value",
    ["1.2.3.4 user_id=admin", 'a"b', "x=y", "line\nfake 2030 INFO user_service.security login", "\x1b[31m", "", "a\\b"],
)
def test_text_log_values_are_quoted_so_a_line_never_gains_fields(value: str) -> None:
    """ASVS 5.0 16.4.1: a value with spaces, `=`, quotes or control characters is written quoted and escaped: the
    line stays one line, and splitting it gives back exactly the fields logged."""
    record = logging.LogRecord("user_service.security", logging.INFO, __file__, 1, "login", (), None)
    record.__dict__.update({"event": "login", "ip": value, "username": "alice"})

    line = TextFormatter().format(record)

    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    fields = dict(part.split("=", 1) for part in shlex.split(line)[5:])
    assert fields.keys() == {"ip", "username"}
    assert fields["username"] == "alice"
    assert quote_value(value).startswith('"')


def test_plain_values_stay_unquoted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="user_service.security")
    security_event("login", ip="198.51.100.7", username="alice")
    (record,) = caplog.records

    assert TextFormatter().format(record).endswith(" ip=198.51.100.7 username=alice")
