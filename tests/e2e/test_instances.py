"""Two `serve` processes on different ports and one database behave as one service: tokens, logouts, lockouts and
(through Redis) per-address rate limits are shared. Runs on SQLite and PostgreSQL, directly and through PgBouncer in
transaction mode."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, TemplateDatabase, bearer
from tests.e2e._cluster import (
    REQUEST_TIMEOUT,
    Call,
    assert_overlapped,
    codes,
    database_engine,
    login,
    migrated_copy,
    register,
    released_together,
    serve_env,
    serving,
    status_and_code,
)
from tests.e2e.conftest import Server
from tests.helpers import REDIS_URL
from user_service.models import LoginFailure, User

# Also through a real PgBouncer in transaction mode in front of PostgreSQL.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database", ["sqlite", "postgresql", "pgbouncer"], indirect=True),
]

MAX_FAILURES = 4
RATE_LIMIT = 3


@pytest.fixture(scope="module")
def shared_db_url(database: TemplateDatabase, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated database behind every instance of the module."""
    return migrated_copy(database, tmp_path_factory.mktemp("instances"))


@contextlib.contextmanager
def two_instances(env: dict[str, str], cwd: Path) -> Iterator[tuple[Server, Server]]:
    with serving(env=env, cwd=cwd, instances=2) as (first, second):
        yield first, second


@pytest.fixture(scope="module")
def instances(
    database: TemplateDatabase, shared_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    env = serve_env(shared_db_url, LOGIN_MAX_FAILURES=str(MAX_FAILURES), **database.service_env)
    with two_instances(env, tmp_path_factory.mktemp("instances-cwd")) as servers:
        yield servers


@contextlib.contextmanager
def clients(servers: tuple[Server, Server]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=servers[0].base_url, timeout=REQUEST_TIMEOUT) as a,
        httpx.Client(base_url=servers[1].base_url, timeout=REQUEST_TIMEOUT) as b,
    ):
        yield a, b


@pytest.fixture
def a_and_b(instances: tuple[Server, Server]) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with clients(instances) as pair:
        yield pair


@pytest.fixture
def account() -> dict[str, str]:
    return {"namespace": f"two-{uuid.uuid4().hex[:12]}", "username": "alice", "password": PASSWORD}


def test_a_token_pair_from_one_instance_refreshes_on_the_other(
    a_and_b: tuple[httpx.Client, httpx.Client], account: dict[str, str]
) -> None:
    a, b = a_and_b
    register(a, account)
    pair = login(a, account)

    refreshed = b.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})

    assert refreshed.status_code == 200, refreshed.text
    new_pair = refreshed.json()
    for http in (a, b):
        me = http.get("/users/me", headers=bearer(new_pair["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "alice"
    # The spent token is known as spent on the instance that issued it, too.
    reused = a.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status_and_code(reused) == (401, "refresh_token_reused")


def test_a_logout_on_one_instance_is_seen_by_the_other_at_once(
    a_and_b: tuple[httpx.Client, httpx.Client], account: dict[str, str]
) -> None:
    a, b = a_and_b
    register(a, account)
    pair = login(a, account)
    assert b.get("/users/me", headers=bearer(pair["access_token"])).status_code == 200

    logout = a.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert logout.status_code == 204, logout.text
    refreshed = b.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status_and_code(refreshed) == (401, "invalid_token")
    me = b.get("/users/me", headers=bearer(pair["access_token"]))
    assert status_and_code(me) == (401, "invalid_token")


def test_failed_logins_on_both_instances_add_up_to_the_lockout(
    instances: tuple[Server, Server],
    a_and_b: tuple[httpx.Client, httpx.Client],
    account: dict[str, str],
    shared_db_url: str,
) -> None:
    a, b = a_and_b
    register(a, account)
    wrong = {**account, "password": "wrong " + PASSWORD}

    # Half the clients on each instance, all in flight at once.
    results = released_together(
        [server.base_url for server in instances], [Call("POST", "/auth/login", wrong)] * MAX_FAILURES
    )

    assert_overlapped(results)
    assert codes(results) == [(401, "invalid_credentials")] * MAX_FAILURES
    # The right password no longer helps, on either instance.
    for http in (a, b):
        locked = http.post("/auth/login", json=account)
        assert status_and_code(locked) == (429, "too_many_attempts")
        assert int(locked.headers["Retry-After"]) >= 1
    with database_engine(shared_db_url) as engine, Session(engine) as session:
        user = session.scalars(select(User).where(User.namespace == account["namespace"])).one()
        (client,) = session.scalars(select(LoginFailure).where(LoginFailure.user_id == user.id)).all()
    # The lock is this client's (the account-wide backstop is further off); the account counted every failure too.
    assert (client.client, client.failures) == ("127.0.0.1", MAX_FAILURES)
    assert client.locked_until is not None
    assert user.failed_login_count == MAX_FAILURES


def random_client_address() -> str:
    """An address in 10/8 that no other run uses within the limit's window."""
    return "10." + ".".join(str(byte) for byte in secrets.token_bytes(3))


def test_per_address_rate_limits_are_shared_through_redis(
    database: TemplateDatabase, shared_db_url: str, tmp_path: Path, account: dict[str, str]
) -> None:
    env = serve_env(
        shared_db_url,
        **database.service_env,
        REDIS_URL=REDIS_URL,
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT=f"{RATE_LIMIT}/minute",
        TRUSTED_PROXIES="127.0.0.1",
    )
    with two_instances(env, tmp_path) as servers, clients(servers) as (a, b):
        register(a, account, headers={"X-Forwarded-For": random_client_address()})
        client_address = {"X-Forwarded-For": random_client_address()}

        allowed = [
            status_and_code(http.post("/auth/login", json=account, headers=client_address)) for http in (a, b, a)
        ]
        over = [http.post("/auth/login", json=account, headers=client_address) for http in (b, a)]
        other_address = b.post("/auth/login", json=account, headers={"X-Forwarded-For": random_client_address()})

        output = servers[0].output() + servers[1].output()
    assert allowed == [(200, None)] * RATE_LIMIT
    assert [status_and_code(response) for response in over] == [(429, "rate_limited")] * 2
    assert all(int(response.headers["Retry-After"]) >= 1 for response in over)
    assert other_address.status_code == 200, other_address.text
    assert "rate limit store unavailable" not in output
