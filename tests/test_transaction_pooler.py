"""PostgreSQL behind a transaction pooler (a real PgBouncer in transaction mode): every client gets its own rows,
the session limits hold per transaction without leaking onto server connections other clients use, a pooler that
drops the startup options is named with the setting to use, and migrations hold their lock through the pooler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from tests.conftest import Cli, MakeApi, TemplateDatabase, bearer, postgres_database
from tests.helpers import one_line_error, revision_of
from tests.pgbouncer import POOL_SIZE, running_pgbouncer
from user_service import migrations
from user_service.cli import app as cli_app
from user_service.config import Settings
from user_service.db import make_engine
from user_service.service.database import Database

USERS = 6
READS_EACH = 20
# More connections in the service's pool than PgBouncer has server connections: they take turns on them.
SERVICE_POOL = 2 * POOL_SIZE


def through(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@pytest.mark.parametrize("database", ["pgbouncer"], indirect=True)
def test_many_clients_through_pgbouncer_each_read_their_own_profile(make_api: MakeApi) -> None:
    api = make_api(db_pooler="transaction", db_pool_size=SERVICE_POOL, db_max_overflow=0)
    tokens = {f"user{number}": api.tokens(username=f"user{number}")["access_token"] for number in range(USERS)}

    def reads(username: str) -> list[tuple[int, str]]:
        answers = []
        for _ in range(READS_EACH):
            response = api.me(tokens[username])
            answers.append((response.status_code, response.json().get("username", response.text)))
        return answers

    with ThreadPoolExecutor(max_workers=USERS) as pool:
        results = dict(zip(tokens, pool.map(reads, tokens), strict=True))

    # psycopg would have prepared these statements after five runs, on server connections PgBouncer shares.
    assert results == {username: [(200, username)] * READS_EACH for username in tokens}
    patched = api.client.patch("/users/me", json={"full_name": "Zero"}, headers=bearer(tokens["user0"]))
    assert patched.status_code == 200, patched.text
    assert api.refresh(api.logged_in(username="user1")["refresh_token"]).status_code == 200


def read_lock_timeout(database: Database) -> str:
    row = database.read_one(text("SELECT current_setting('lock_timeout') AS lock_timeout"), {})
    assert row is not None
    return str(row["lock_timeout"])


@pytest.mark.parametrize("database", ["pgbouncer"], indirect=True)
def test_the_session_limits_hold_inside_each_transaction_and_do_not_stay_on_the_server_connection(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(db_pooler="transaction", db_lock_timeout_seconds=1.5)
    database = Database(settings)
    try:
        with database.write() as tx:
            inside = tx.execute(text("SHOW lock_timeout")).scalar_one()
            backend = tx.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # The server connections are PgBouncer's; after the transaction, the next client on any of them finds the
        # server's own setting.
        after = {read_lock_timeout(database) for _ in range(2 * POOL_SIZE)}
    finally:
        database.close()
    assert inside == "1500ms"
    assert backend > 0
    assert after == {"0"}


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_default_settings_behind_a_pooler_that_drops_startup_options_name_the_setting(
    database: TemplateDatabase, make_api: MakeApi, cli: Cli, caplog: pytest.LogCaptureFixture
) -> None:
    with running_pgbouncer(make_url(database.url).port or 5432, ignore_startup_parameters="options") as port:
        url = through(database.url, port)
        with caplog.at_level(logging.ERROR, logger="user_service.service"):
            response = make_api(database_url=url).register()
        result = cli.runner.invoke(
            cli_app, ["migrate", "--current"], env={**cli.env, "DATABASE_URL": url}, catch_exceptions=False
        )
    assert (response.status_code, response.json()["code"]) == (500, "configuration_error")
    assert "DB_POOLER=transaction" in caplog.text
    assert "DB_POOLER=transaction" in one_line_error(result)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_migration_through_pgbouncer_holds_its_lock_until_it_commits(database: TemplateDatabase) -> None:
    with postgres_database("user_service_migrate") as direct, running_pgbouncer(make_url(direct).port or 5432) as port:
        settings = Settings(database_url=through(direct, port), db_pooler="transaction", _env_file=None)
        engine = make_engine(settings)
        checker = create_engine(direct)
        held_at_commit: list[bool] = []

        @event.listens_for(engine, "commit")
        def _before_commit(_connection: object) -> None:
            with checker.begin() as other:
                free = other.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": migrations.MIGRATION_LOCK_KEY}
                ).scalar_one()
            held_at_commit.append(not free)

        try:
            before, after = migrations.migrate_to(engine, "head")
        finally:
            engine.dispose()
            checker.dispose()
        assert (before, after) == (None, migrations.head_revision())
        assert held_at_commit == [True]
        assert revision_of(direct) == migrations.head_revision()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_migrate_uses_the_migration_database_url_when_it_is_set(cli: Cli, tmp_path: Path) -> None:
    with postgres_database("user_service_migrate") as direct:
        # DATABASE_URL names a port where nothing listens: only the direct URL can do the work.
        env = {**cli.env, "DATABASE_URL": through(direct, 1), "MIGRATION_DATABASE_URL": direct}
        result = cli.runner.invoke(cli_app, ["migrate"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert revision_of(direct) == migrations.head_revision()
