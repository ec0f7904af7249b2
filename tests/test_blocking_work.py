"""Where the blocking work of a request runs: the event loop must stay free to answer other requests.

Password hashing always runs in a worker thread (see test_login), at most one per core at once. The one database
read of an authenticated request (and of /health) goes to a worker thread on PostgreSQL, where it is a network
round trip; on SQLite it runs in place, on a connection the event loop keeps: a read of a local WAL database waits
for nothing and costs less than the hop to a thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from tests.conftest import TEST_SECRET, Api, MakeApi, TemplateDatabase, bearer
from tests.helpers import REDIS_URL
from user_service import security, telemetry
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.cpu import usable_cores
from user_service.db import make_engine
from user_service.service import UserService

SETTLE_SECONDS = 30.0


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def record_where(calls: list[bool], original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(on_event_loop())
        return original(*args, **kwargs)

    return wrapper


def test_at_most_one_password_hash_per_core_runs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt is CPU-bound: threads beyond the cores would not hash sooner, only take CPU from the event loop.

    More callers than cores are released together against a hash that holds every caller inside until the test lets
    go. The test waits until the count has settled, every caller either hashing or queued on the slots (none still
    on its way), so a caller let in beyond the cores cannot arrive after the check."""
    cores = usable_cores()
    callers = cores + 2
    slots = security._HASHING_SLOTS
    lock = threading.Lock()
    release = threading.Event()
    start = threading.Barrier(callers, timeout=SETTLE_SECONDS)
    counts = {"hashing": 0, "peak": 0, "done": 0}

    def blocking_hashpw(password: bytes, salt: bytes) -> bytes:
        with lock:
            counts["hashing"] += 1
            counts["peak"] = max(counts["peak"], counts["hashing"])
        assert release.wait(timeout=SETTLE_SECONDS), "the test never let the hash finish"
        with lock:
            counts["hashing"] -= 1
        return salt + b"b" * 31

    def caller() -> None:
        start.wait()
        security.hash_password("a password", 4)
        with lock:
            counts["done"] += 1

    def queued() -> int:
        # Threads blocked on the semaphore wait on its condition (CPython's threading.Semaphore).
        return len(slots._cond._waiters)  # type: ignore[attr-defined]

    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds: b"$2b$04$" + b"a" * 22)
    monkeypatch.setattr(bcrypt, "hashpw", blocking_hashpw)
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        while counts["hashing"] + queued() < callers:
            assert time.monotonic() < deadline, (counts, queued())
            # Waiting on the threads doubles as the poll interval.
            threads[0].join(0.01)
        settled = (counts["hashing"], queued())
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=SETTLE_SECONDS)
    assert settled == (cores, callers - cores)
    assert counts == {"hashing": 0, "peak": cores, "done": callers}


def test_the_token_check_never_blocks_the_event_loop_on_postgresql_and_runs_in_place_on_sqlite(
    api: Api, service: UserService, database: TemplateDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a token's first check (a signature to verify, perhaps keys to read) runs in a worker thread;
    later checks of the same token await their read on the event loop's own connections, with no thread at all."""
    token = api.tokens()["access_token"]
    full_checks: list[bool] = []
    monkeypatch.setattr(service, "authenticate", record_where(full_checks, service.authenticate))

    assert api.me(token).status_code == 200
    assert api.client.get("/users/me/sessions", headers=bearer(token)).status_code == 200
    assert api.me(token).status_code == 200
    assert api.me("not-a-token").status_code == 401

    if database.kind == "sqlite":
        assert full_checks == [True] * 4
        assert service.db.loop_reads == {}
    else:
        # The new token's check and the bad token's, in worker threads; the seen token's two, on the loop.
        assert full_checks == [False, False]
        (reads,) = service.db.loop_reads.values()
        assert reads.open_connections == 1


def test_the_token_check_sees_the_requests_id_wherever_it_runs(
    api: Api, service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token check's read runs in the request's context (in a worker thread, on the event loop, or in place),
    so what it logs carries the request's id."""
    token = api.tokens()["access_token"]
    seen: list[str | None] = []

    def record(*_args: Any) -> None:
        seen.append(telemetry.current_request_id.get(None))

    event.listen(service.engine, "before_cursor_execute", record)
    try:
        for request_id in ("first-request", "second-request", "third-request"):
            headers = {**bearer(token), "X-Request-ID": request_id}
            assert api.client.get("/users/me", headers=headers).status_code == 200
    finally:
        event.remove(service.engine, "before_cursor_execute", record)

    assert seen == ["first-request", "second-request", "third-request"]


def test_health_checks_the_database_off_the_event_loop_on_postgresql_and_in_place_on_sqlite(
    api: Api, service: UserService, database: TemplateDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(service, "database_ok", record_where(calls, service.database_ok))

    assert api.client.get("/health").status_code == 200

    assert calls == [database.kind == "sqlite"]


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_rate_limit_counts_go_to_a_worker_thread_only_when_they_live_in_redis(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    # Counted, never refused here: every TestClient request comes from one address, and Redis keeps its counts.
    overrides: dict[str, Any] = {"rate_limit_enabled": True, "rate_limit": "100000/minute"}
    if store == "redis":
        overrides["redis_url"] = REDIS_URL
    api = make_api(**overrides)
    limiter = api.client.app.state.rate_limiter  # type: ignore[attr-defined]
    calls: list[bool] = []
    monkeypatch.setattr(limiter, "hit", record_where(calls, limiter.hit))

    assert api.register(username=f"rl-{uuid.uuid4().hex[:8]}").status_code == 201
    assert api.login(password="not the password").status_code == 401

    assert calls == [store == "memory"] * 2


def test_an_authenticated_read_leaves_no_read_transaction_open(
    api: Api, service: UserService, database: TemplateDatabase
) -> None:
    """Single reads run outside a transaction; none is left open on a pooled connection (on SQLite an open read
    would keep the WAL from being checkpointed; on PostgreSQL it would hold a snapshot)."""
    token = api.tokens()["access_token"]
    for _ in range(3):
        assert api.me(token).status_code == 200
        assert api.client.get("/health").status_code == 200

    pool = service.engine.pool
    # What stays checked out is at most the connection the event loop keeps for its reads on SQLite.
    kept = [connection for connection in service.db.thread_readers.values() if connection is not None]
    assert pool.checkedout() == len(kept) <= (1 if database.kind == "sqlite" else 0)
    with service.engine.connect() as connection:
        if service.engine.dialect.name == "sqlite":
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            assert busy == 0
        else:
            open_transactions = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                )
            ).scalar_one()
            assert open_transactions == 0


def test_on_sqlite_the_event_loop_keeps_one_connection_for_its_reads_and_replaces_it_after_an_error(
    settings: Settings, database: TemplateDatabase
) -> None:
    app = create_app(settings)
    service: UserService = app.state.service
    with TestClient(app) as client:
        api = Api(client)
        token = api.tokens()["access_token"]
        for _ in range(3):
            assert api.me(token).status_code == 200
        if database.kind != "sqlite":
            assert service.db.thread_readers == {}
        else:
            (kept,) = service.db.thread_readers.values()
            assert service.engine.pool.checkedout() == 1

            def broken(*args: Any) -> None:
                event.remove(service.engine, "before_cursor_execute", broken)
                raise sqlite3.OperationalError("disk I/O error")

            # The next statement the driver is given fails, as a failing disk makes it.
            event.listen(service.engine, "before_cursor_execute", broken)
            failed = api.me(token)
            assert (failed.status_code, failed.json()["code"]) == (503, "database_unavailable")
            assert api.me(token).status_code == 200
            (replacement,) = service.db.thread_readers.values()
            assert replacement is not kept and kept.closed
    # Shutting the app down returns every connection.
    assert service.db.thread_readers == {}
    assert service.engine.pool.checkedout() == 0


def test_on_sqlite_a_burst_of_threads_never_waits_for_a_pooled_connection(tmp_path: Path) -> None:
    """More threads at once than DB_POOL_SIZE + DB_MAX_OVERFLOW each get a connection at once: on the event loop,
    a wait for a connection would stall every request."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'burst.db'}",
        jwt_secret_key=TEST_SECRET,
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_seconds=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )
    engine = make_engine(settings)
    holding = 4
    all_hold = threading.Barrier(holding + 1, timeout=10)
    errors: list[BaseException] = []

    def hold_a_connection() -> None:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                all_hold.wait()
                all_hold.wait()
        except BaseException as exc:  # reported below
            errors.append(exc)
            all_hold.abort()

    threads = [threading.Thread(target=hold_a_connection) for _ in range(holding)]
    try:
        for thread in threads:
            thread.start()
        all_hold.wait()
        assert engine.pool.checkedout() == holding
        all_hold.wait()
    finally:
        for thread in threads:
            thread.join(timeout=10)
        engine.dispose()
    assert errors == []


def test_sql_statements_are_not_logged_unless_an_operator_turns_sqlalchemy_logging_on(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Every enabled log record costs time on every query; SQLAlchemy's loggers stay at their WARNING default."""
    caplog.set_level(logging.INFO)
    token = api.tokens()["access_token"]
    assert api.me(token).status_code == 200

    assert [record.name for record in caplog.records if record.name.startswith("sqlalchemy")] == []
