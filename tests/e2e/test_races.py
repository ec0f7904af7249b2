"""Races against one `serve --workers 2`: many clients released at once on the same account or token get the
answers one client at a time would get, and the database afterwards holds exactly what they imply. Runs on SQLite
and PostgreSQL, directly and through PgBouncer in transaction mode; each test asserts that its requests really were
in flight together."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from sqlalchemy import func, select
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
    peak_in_flight,
    register,
    released_together,
    serve_env,
    serving,
)
from tests.e2e.conftest import Server
from user_service.models import AuthSession, RefreshToken, User
from user_service.security import refresh_token_digest

# Also through a real PgBouncer in transaction mode in front of PostgreSQL.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("database", ["sqlite", "postgresql", "pgbouncer"], indirect=True),
]

CLIENTS = 24
BURST_USERS = 200
BURST_CLIENTS = 16
WORKERS = 2
# High enough that the failed-login race never reaches the lock; the count itself is what is checked.
MAX_FAILURES = 100
# A few milliseconds of bcrypt between a registration's look-up and its insert, so that racing registrations all
# pass the look-up and meet at the unique constraint.
BCRYPT_ROUNDS = "6"


@pytest.fixture(scope="module")
def race_db_url(database: TemplateDatabase, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated database for the module's one server."""
    return migrated_copy(database, tmp_path_factory.mktemp("races"))


@pytest.fixture(scope="module")
def server(database: TemplateDatabase, race_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = serve_env(
        race_db_url, BCRYPT_ROUNDS=BCRYPT_ROUNDS, LOGIN_MAX_FAILURES=str(MAX_FAILURES), **database.service_env
    )
    with serving(env=env, cwd=tmp_path_factory.mktemp("races-cwd"), workers=WORKERS) as (started,):
        yield started


@pytest.fixture
def log_start(server: Server) -> int:
    """Where this test's part of the shared server's output begins."""
    return len(server.output())


@pytest.fixture
def namespace() -> str:
    return f"race-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT) as client:
        yield client


def register_and_login(http: httpx.Client, namespace: str, username: str = "alice") -> dict[str, str]:
    account = {"namespace": namespace, "username": username, "password": PASSWORD}
    register(http, account)
    return login(http, account)


def assert_clean_log(server: Server, since: int) -> None:
    output = server.output()[since:]
    for sign in ("Traceback", "unhandled error", "database is locked", "database unavailable"):
        assert sign not in output, f"{sign!r} in the server's output:\n{output}"


def test_one_username_registered_at_once_by_many_clients_is_created_once(
    server: Server, namespace: str, race_db_url: str, log_start: int
) -> None:
    def register(number: int) -> Call:
        body = {"namespace": namespace, "username": "alice", "password": PASSWORD, "email": f"a{number}@example.com"}
        return Call("POST", "/auth/register", body)

    results = released_together(server.base_url, [register(number) for number in range(CLIENTS)])

    assert_overlapped(results)
    assert codes(results) == [(201, None)] + [(409, "username_taken")] * (CLIENTS - 1)
    with database_engine(race_db_url) as engine, Session(engine) as session:
        rows = session.scalars(select(User).where(User.namespace == namespace)).all()
    assert [row.username for row in rows] == ["alice"]
    winner = next(result.response.json() for result in results if result.response.status_code == 201)
    assert rows[0].email == winner["email"]
    assert str(rows[0].id) == winner["id"]
    assert_clean_log(server, log_start)


def test_one_refresh_token_spent_at_once_by_many_clients_rotates_once_and_ends_the_session(
    server: Server, http: httpx.Client, namespace: str, race_db_url: str, log_start: int
) -> None:
    pair = register_and_login(http, namespace)
    presented = pair["refresh_token"]

    results = released_together(
        server.base_url,
        [Call("POST", "/auth/refresh", {"refresh_token": presented})] * CLIENTS,
    )

    assert_overlapped(results)
    assert codes(results) == [(200, None)] + [(401, "refresh_token_reused")] * (CLIENTS - 1)
    issued = next(result.response.json() for result in results if result.response.status_code == 200)
    with database_engine(race_db_url) as engine, Session(engine) as session:
        user_sessions = session.scalars(
            select(AuthSession).join(User, AuthSession.user_id == User.id).where(User.namespace == namespace)
        ).all()
        tokens = session.scalars(
            select(RefreshToken)
            .join(AuthSession, RefreshToken.session_id == AuthSession.id)
            .join(User, AuthSession.user_id == User.id)
            .where(User.namespace == namespace)
        ).all()
    by_hash = {token.token_hash: token for token in tokens}
    # Exactly one successor, and the presented token is marked spent: nothing is half-rotated.
    assert set(by_hash) == {refresh_token_digest(presented), refresh_token_digest(issued["refresh_token"])}
    assert by_hash[refresh_token_digest(presented)].used_at is not None
    assert by_hash[refresh_token_digest(issued["refresh_token"])].used_at is None
    # Presenting a spent token is treated as theft: the session is over, for the pair the winner got too, and its
    # tokens say why (session_revoked).
    assert len(user_sessions) == 1
    assert user_sessions[0].revoked_at is not None
    again = http.post("/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert (again.status_code, again.json()["code"]) == (401, "session_revoked")
    me = http.get("/users/me", headers=bearer(issued["access_token"]))
    assert (me.status_code, me.json()["code"]) == (401, "session_revoked")
    assert_clean_log(server, log_start)


def test_concurrent_failed_logins_are_all_counted(
    server: Server, http: httpx.Client, namespace: str, race_db_url: str, log_start: int
) -> None:
    register_and_login(http, namespace)
    wrong = {"namespace": namespace, "username": "alice", "password": "wrong " + PASSWORD}

    results = released_together(server.base_url, [Call("POST", "/auth/login", wrong)] * CLIENTS)

    assert_overlapped(results)
    assert codes(results) == [(401, "invalid_credentials")] * CLIENTS
    with database_engine(race_db_url) as engine, Session(engine) as session:
        user = session.scalars(select(User).where(User.namespace == namespace)).one()
    assert user.failed_login_count == CLIENTS
    assert user.locked_until is None
    assert_clean_log(server, log_start)


def test_concurrent_patches_of_different_extra_keys_all_survive(
    server: Server, http: httpx.Client, namespace: str, race_db_url: str, log_start: int
) -> None:
    pair = register_and_login(http, namespace)
    headers = bearer(pair["access_token"])

    def patch(number: int) -> Call:
        body = {"extra": {f"key-{number}": f"value-{number}"}}
        return Call("PATCH", "/users/me", body, headers)

    results = released_together(server.base_url, [patch(number) for number in range(CLIENTS)])

    assert_overlapped(results)
    assert codes(results) == [(200, None)] * CLIENTS
    expected = {f"key-{number}": f"value-{number}" for number in range(CLIENTS)}
    with database_engine(race_db_url) as engine, Session(engine) as session:
        user = session.scalars(select(User).where(User.namespace == namespace)).one()
    assert user.extra == expected
    me = http.get("/users/me", headers=headers)
    assert me.json()["extra"] == expected
    assert_clean_log(server, log_start)


def test_a_burst_of_registrations_gets_no_server_error(
    server: Server, namespace: str, race_db_url: str, log_start: int
) -> None:
    def register(number: int) -> Call:
        body = {
            "namespace": namespace,
            "username": f"user{number}",
            "password": PASSWORD,
            "email": f"user{number}@example.com",
        }
        return Call("POST", "/auth/register", body)

    results = released_together(
        server.base_url, [register(number) for number in range(BURST_USERS)], clients=BURST_CLIENTS
    )

    assert peak_in_flight(results) >= BURST_CLIENTS // 2
    failures = [(r.response.status_code, r.response.text) for r in results if r.response.status_code != 201]
    assert failures == []
    with database_engine(race_db_url) as engine, Session(engine) as session:
        stored = session.scalar(select(func.count()).select_from(User).where(User.namespace == namespace))
    assert stored == BURST_USERS
    assert_clean_log(server, log_start)
