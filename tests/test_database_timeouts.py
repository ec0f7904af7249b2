"""PostgreSQL session limits: a row locked from elsewhere costs the requests for that row a bounded wait and a 503,
while every other request (health, other users' reads and logins) is answered. On SQLite, a database another process
holds for writing costs a write the busy timeout and a 503."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import Api, MakeApi, bearer
from user_service import db
from user_service.config import Settings
from user_service.db import make_engine, normalize_url

LOCKED_PATCHES = 8
# Generous against a slow shared machine, far below the lock being held until the test ends.
PATCH_BOUND_SECONDS = 8.0


def patch_me(api: Api, access_token: str) -> tuple[int, str, float]:
    started = time.monotonic()
    response = api.client.patch("/users/me", json={"full_name": "Alice"}, headers=bearer(access_token))
    return response.status_code, response.json().get("code", ""), time.monotonic() - started


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_locked_row_costs_only_its_own_requests(make_api: MakeApi, db_url: str) -> None:
    # Two connections per process, as in a small deployment: without the session limits the waiting PATCHes hold
    # both, and everything else waits DB_POOL_TIMEOUT_SECONDS for a connection, then answers 503.
    api = make_api(
        db_lock_timeout_seconds=0.2, db_pool_size=2, db_max_overflow=0, db_pool_timeout_seconds=3, bcrypt_rounds=4
    )
    alice = api.tokens(username="alice")
    bob = api.tokens(username="bob")
    holder = create_engine(normalize_url(db_url))
    lock = holder.connect()
    results: list[tuple[int, str, float]] = []
    with ThreadPoolExecutor(max_workers=LOCKED_PATCHES) as pool:
        try:
            lock.begin()
            lock.execute(text("SELECT id FROM users WHERE username = 'alice' FOR UPDATE"))
            patches = [pool.submit(patch_me, api, alice["access_token"]) for _ in range(LOCKED_PATCHES)]

            health = api.client.get("/health")
            bob_me = api.me(bob["access_token"])
            bob_login = api.login(username="bob")
            results = [future.result(timeout=PATCH_BOUND_SECONDS * 2) for future in patches]
            still_locked = lock.execute(text("SELECT 1")).scalar_one()
        finally:
            lock.rollback()
            lock.close()
            holder.dispose()

    assert still_locked == 1
    assert health.status_code == 200, health.text
    assert bob_me.status_code == 200, bob_me.text
    assert bob_login.status_code == 200, bob_login.text
    assert [(status, code) for status, code, _ in results] == [(503, "database_unavailable")] * LOCKED_PATCHES
    assert max(elapsed for _, _, elapsed in results) < PATCH_BOUND_SECONDS
    # The lock gone, the same request succeeds.
    assert patch_me(api, alice["access_token"])[0] == 200


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_long_statement_is_cancelled(make_settings: Any) -> None:
    engine = make_engine(make_settings(db_statement_timeout_seconds=0.2))
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.execute(text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()
    assert time.monotonic() - started < 4


def test_session_limits_are_startup_options_in_milliseconds() -> None:
    from user_service.db import session_options

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        db_lock_timeout_seconds=0.2,
        db_statement_timeout_seconds=10,
        db_idle_in_transaction_timeout_seconds=30,
    )

    assert session_options(settings) == (
        "-c lock_timeout=200 -c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000"
    )


def test_session_limits_default_to_bounded_waits() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert (
        settings.db_lock_timeout_seconds,
        settings.db_statement_timeout_seconds,
        settings.db_idle_in_transaction_timeout_seconds,
    ) == (2.0, 10.0, 30.0)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_migration_waits_for_another_beyond_the_lock_timeout(make_settings: Any, db_url: str) -> None:
    from user_service import migrations

    holder = create_engine(normalize_url(db_url))
    engine = make_engine(make_settings(db_lock_timeout_seconds=0.1))
    lock = holder.connect()
    release = threading.Timer(1.0, lock.rollback)
    try:
        lock.begin()
        lock.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": migrations.MIGRATION_LOCK_KEY})
        release.start()
        before, after = migrations.migrate_to(engine, "head")
    finally:
        release.join(timeout=10)
        lock.close()
        holder.dispose()
        engine.dispose()

    assert before == after == migrations.head_revision()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_sqlite_database_another_process_writes_answers_unavailable_and_keeps_the_token(
    make_api: MakeApi, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh whose transaction cannot begin (another process holds the write lock past the busy timeout) is a
    503 `database_unavailable`, not a 500, and spends nothing: the same token refreshes once the lock is gone."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    api = make_api()
    refresh_token = api.tokens()["refresh_token"]
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        refused = api.refresh(refresh_token)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert (refused.status_code, refused.json()["code"]) == (503, "database_unavailable")
    assert api.refresh(refresh_token).status_code == 200
