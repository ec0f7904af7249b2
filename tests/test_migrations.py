"""Migrations are the only source of the schema: they go up and down, agree with the models, and run both from
`user-service migrate` (in code) and from `alembic` at the repository root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from tests.conftest import TEST_SECRET, postgres_database, registration
from tests.helpers import REPO_ROOT, TABLES
from user_service import (
    migrations,
    models,  # noqa: F401  (registers the tables on Base.metadata)
)
from user_service.config import Settings
from user_service.db import Base, make_engine
from user_service.errors import ConfigurationError, InvalidInput
from user_service.service import UserService

USER_SERVICE = Path(sys.executable).parent / "user-service"
MIGRATORS = 2
WAIT_SECONDS = 60.0


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The test database; handed back at head, since the PostgreSQL one is shared by the whole run."""
    engine = make_engine(Settings(database_url=db_url, _env_file=None))  # type: ignore[call-arg]
    try:
        yield engine
        migrations.migrate_to(engine, "head")
    finally:
        engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trip(engine: Engine) -> None:
    head = migrations.head_revision()
    assert migrations.current_revision(engine) == head
    assert table_names(engine) == TABLES

    assert migrations.migrate_to(engine, "base") == (head, None)
    assert table_names(engine) == set()
    assert migrations.current_revision(engine) is None

    assert migrations.migrate_to(engine, "head") == (None, head)
    assert table_names(engine) == TABLES
    assert migrations.is_at_head(engine)


def test_migrate_at_head_is_a_no_op_that_keeps_the_data(engine: Engine, make_settings: Callable[..., Settings]) -> None:
    service = UserService(make_settings())
    try:
        created = service.register(registration(namespace="app-x", username="alice", password="correct horse battery"))
        head = migrations.head_revision()

        assert migrations.migrate_to(engine, "head") == (head, head)

        assert service.get_user(namespace="app-x", username="alice") == created
    finally:
        service.close()


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_the_quick_head_check_agrees_with_alembic_at_every_revision(engine: Engine) -> None:
    """Commands check that the database is at head without importing Alembic: the answer is Alembic's own."""
    assert migrations.shipped_head() == migrations.head_revision()
    seen = []
    for revision in ["base", *migrations.history()]:
        migrations.migrate_to(engine, revision)
        seen.append((migrations.stored_revision(engine), migrations.is_at_head(engine)))

    expected = [(None, False)] + [(rev, rev == migrations.head_revision()) for rev in migrations.history()]
    assert seen == expected


def test_unknown_target_revision_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="unknown revision"):
        migrations.migrate_to(engine, "0123456789ab")
    assert migrations.is_at_head(engine)


def test_database_at_an_unknown_revision_is_refused(engine: Engine) -> None:
    head = migrations.head_revision()
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'fedcba987654'"))
    try:
        with pytest.raises(ConfigurationError, match="fedcba987654"):
            migrations.migrate_to(engine, "base")
        assert table_names(engine) == TABLES
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})


def alembic_upgrade_head(database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_upgrade_head_from_the_repository_root(engine: Engine, db_url: str) -> None:
    migrations.migrate_to(engine, "base")

    done = alembic_upgrade_head(db_url)

    assert done.returncode == 0, done.stderr
    assert migrations.is_at_head(engine)
    assert table_names(engine) == TABLES


def test_alembic_upgrade_head_creates_a_fresh_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"

    done = alembic_upgrade_head(f"sqlite:///{path}")

    assert done.returncode == 0, done.stderr
    fresh = make_engine(Settings(database_url=f"sqlite:///{path}", _env_file=None))  # type: ignore[call-arg]
    try:
        assert migrations.is_at_head(fresh)
        assert table_names(fresh) == TABLES
    finally:
        fresh.dispose()


def test_script_location_is_the_repository_alembic_folder() -> None:
    location = migrations.script_location().resolve()

    assert location == REPO_ROOT / "alembic"
    assert (location / "env.py").is_file()
    head = migrations.head_revision()
    assert [path.name for path in (location / "versions").glob(f"*_{head}_*.py")] != []


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, empty (no schema, no alembic_version); dropped afterwards."""
    with postgres_database("user_service_migrate") as url:
        yield url


def advisory_lock_waiters(connection: Any) -> int:
    """How many sessions on this database wait for an advisory lock held by another."""
    waiting = connection.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    ).scalar_one()
    return int(waiting)


def test_concurrent_migrations_on_postgresql_queue_on_the_advisory_lock(
    empty_postgres_url: str, tmp_path: Path
) -> None:
    """README (Deploying): instances migrating at once queue on an advisory lock; the first builds the schema, the
    other finds it done. The test holds the lock itself until both `user-service migrate` processes are seen
    waiting for it, then lets them go together."""
    env = {**os.environ, "DATABASE_URL": empty_postgres_url, "JWT_SECRET_KEY": TEST_SECRET}
    holder = create_engine(empty_postgres_url)
    processes: list[subprocess.Popen[str]] = []
    try:
        with holder.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": migrations.MIGRATION_LOCK_KEY})
            for _ in range(MIGRATORS):
                processes.append(
                    subprocess.Popen(
                        [USER_SERVICE, "migrate"],
                        env=env,
                        cwd=tmp_path,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            deadline = time.monotonic() + WAIT_SECONDS
            while advisory_lock_waiters(connection) < MIGRATORS:
                assert time.monotonic() < deadline, "the migrations never waited for the advisory lock"
                for process in processes:
                    # Waiting on a migration doubles as the poll interval and notices one that did not wait.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(0.01)
                    assert process.returncode is None, process.communicate()[0]
            transaction.rollback()
        outputs = [process.communicate(timeout=WAIT_SECONDS)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(WAIT_SECONDS)
        holder.dispose()
    assert [process.returncode for process in processes] == [0] * MIGRATORS, outputs
    head = migrations.head_revision()
    # One built the schema; the other, let in after it, found the work done.
    assert sorted(outputs) == [f"Database already at {head}.\n", f"Database migrated from base to {head}.\n"]
    engine = make_engine(Settings(database_url=empty_postgres_url, _env_file=None))  # type: ignore[call-arg]
    try:
        assert migrations.is_at_head(engine)
        assert table_names(engine) == TABLES
    finally:
        engine.dispose()
