"""The set-up commands (init, migrate, serve) used from scripts: they ask before destroying, keep what they do not
own, read exactly the settings they are given, create nothing when only asked to look, and fail in one line."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from dotenv import dotenv_values
from sqlalchemy import inspect

from tests.conftest import PASSWORD, TEST_SECRET, Cli
from user_service import db, migrations
from user_service.cli import _server, setup
from user_service.config import Settings, load_settings, secret_problem
from user_service.db import make_engine

TABLES = {"users", "auth_sessions", "refresh_tokens"}


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message: str = result.stderr.strip()
    assert message, result.output
    assert "\n" not in message, result.stderr
    return message


def tables_of(url: str) -> set[str]:
    engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    try:
        return set(inspect(engine).get_table_names()) & TABLES
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()


def create_user(cli: Cli, username: str) -> None:
    result = cli("create-user", "app-x", username, "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


# -- migrating down -----------------------------------------------------------------------------------------------


def test_migrating_down_without_yes_refuses_and_counts_the_users(cli: Cli, db_url: str, schema_restored: None) -> None:
    create_user(cli, "alice")
    create_user(cli, "bob")

    message = one_line_error(cli("migrate", "--revision", "base"))

    assert "2 user" in message
    assert "--yes" in message
    assert tables_of(db_url) == TABLES


def test_migrating_down_one_revision_asks_too(cli: Cli, db_url: str, schema_restored: None) -> None:
    first = migrations.history()[0]

    message = one_line_error(cli("migrate", "--revision", first))

    assert "--yes" in message
    assert revision_of(db_url) == migrations.head_revision()


def test_migrating_down_with_yes_goes_ahead(cli: Cli, db_url: str, schema_restored: None) -> None:
    create_user(cli, "alice")

    result = cli("migrate", "--revision", "base", "--yes")

    assert result.exit_code == 0, result.output
    assert tables_of(db_url) == set()


@pytest.mark.parametrize(("answer", "tables"), [("n", TABLES), ("y", set())], ids=["no", "yes"])
def test_migrating_down_at_a_terminal_asks(
    cli: Cli, db_url: str, schema_restored: None, monkeypatch: pytest.MonkeyPatch, answer: str, tables: set[str]
) -> None:
    create_user(cli, "alice")
    monkeypatch.setattr(setup, "_interactive", lambda: True)

    result = cli("migrate", "--revision", "base", input=answer + "\n")

    assert "1 user" in result.output
    assert result.exit_code == (0 if answer == "y" else 1), result.output
    assert tables_of(db_url) == tables


def test_migrating_up_needs_no_confirmation(cli: Cli, db_url: str, schema_restored: None) -> None:
    assert cli("migrate", "--revision", "base", "--yes").exit_code == 0

    result = cli("migrate")

    assert result.exit_code == 0, result.output
    assert tables_of(db_url) == TABLES


# -- init --force -------------------------------------------------------------------------------------------------


def test_init_force_replaces_only_the_secret(cli: Cli, db_url: str) -> None:
    # The environment names no database: the one in the file is the deployment's.
    del cli.env["DATABASE_URL"]
    env_file = Path(".env")
    old_secret = "an-old-deployment-secret-Q7vR2mX9kL4pW8zT3nB6"
    env_file.write_text(
        f"# our deployment\nDATABASE_URL={db_url}\nJWT_SECRET_KEY={old_secret}\nLOGIN_MAX_FAILURES=3\n"
        "REDIS_URL=redis://127.0.0.1:6379/5\n",
        encoding="utf-8",
    )
    env_file.chmod(0o644)

    result = cli("init", "--force")

    assert result.exit_code == 0, result.output
    written = dotenv_values(env_file)
    assert written["JWT_SECRET_KEY"] != old_secret
    assert secret_problem(str(written["JWT_SECRET_KEY"])) is None
    assert {**written, "JWT_SECRET_KEY": None} == {
        "DATABASE_URL": db_url,
        "JWT_SECRET_KEY": None,
        "LOGIN_MAX_FAILURES": "3",
        "REDIS_URL": "redis://127.0.0.1:6379/5",
    }
    assert env_file.read_text(encoding="utf-8").startswith("# our deployment\n")
    assert "kept" in result.stdout
    # The new secret is readable by the owner only, whatever mode the file had.
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert not Path("user-service.db").exists()


def test_init_force_with_a_database_url_changes_that_setting_too(cli: Cli, db_url: str) -> None:
    env_file = Path(".env")
    env_file.write_text("DATABASE_URL=sqlite:///elsewhere.db\nLOG_LEVEL=WARNING\n", encoding="utf-8")

    result = cli("init", "--force", "--database-url", db_url)

    assert result.exit_code == 0, result.output
    written = dotenv_values(env_file)
    assert (written["DATABASE_URL"], written["LOG_LEVEL"]) == (db_url, "WARNING")
    assert not Path("elsewhere.db").exists()


# -- serve --env-file ---------------------------------------------------------------------------------------------


@pytest.fixture
def worker_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """Stands in for uvicorn: records the settings a worker process would build with `create_app()`, which reads
    them with `load_settings()` from the environment `serve` hands over."""
    built: list[Settings] = []

    def run(settings: Settings, **options: Any) -> None:
        built.append(load_settings())

    monkeypatch.setattr(_server, "run_server", run)
    with patch.dict(os.environ):
        yield built


def test_serve_env_file_is_the_workers_whole_configuration(
    cli: Cli, db_url: str, tmp_path: Path, worker_settings: list[Settings]
) -> None:
    for name in ("DATABASE_URL", "JWT_SECRET_KEY"):
        del cli.env[name]
    Path(".env").write_text("REDIS_URL=redis://127.0.0.1:6379/9\nLOG_LEVEL=DEBUG\n", encoding="utf-8")
    given = tmp_path / "service.env"
    given.write_text(f"DATABASE_URL={db_url}\nJWT_SECRET_KEY={TEST_SECRET}\n", encoding="utf-8")

    result = cli("serve", "--env-file", str(given))

    assert result.exit_code == 0, result.output
    [worker] = worker_settings
    assert worker.redis_url is None
    assert worker.log_level == "INFO"
    assert worker.database_url == db_url


def test_serve_without_env_file_hands_workers_the_working_directorys(cli: Cli, worker_settings: list[Settings]) -> None:
    Path(".env").write_text("REDIS_URL=redis://127.0.0.1:6379/9\n", encoding="utf-8")

    result = cli("serve")

    assert result.exit_code == 0, result.output
    [worker] = worker_settings
    assert worker.redis_url == "redis://127.0.0.1:6379/9"


# -- database URLs, and looking without creating ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://user:hunter2secret@127.0.0.1/accounts", "postgresql://user:hunter2secret@127.0.0.1:port/db"],
    ids=["unparsable", "unknown scheme", "bad port"],
)
@pytest.mark.parametrize("command", [["migrate"], ["migrate", "--current"], ["serve"], ["init"]])
def test_a_bad_database_url_is_one_line(cli: Cli, url: str, command: list[str]) -> None:
    cli.env["DATABASE_URL"] = url

    message = one_line_error(cli(*command))

    assert "DATABASE_URL" in message
    assert "hunter2secret" not in message


def test_migrate_current_exits_non_zero_when_the_schema_is_behind(cli: Cli, db_url: str, schema_restored: None) -> None:
    assert cli("migrate", "--current").exit_code == 0
    assert cli("migrate", "--revision", migrations.history()[0], "--yes").exit_code == 0

    behind = cli("migrate", "--current")

    assert behind.exit_code == 1, behind.output
    assert "behind" in behind.stdout


@pytest.mark.parametrize("command", [["migrate", "--current"], ["serve"]])
def test_looking_at_a_missing_sqlite_file_creates_nothing(cli: Cli, tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "user-servcie.db"
    cli.env["DATABASE_URL"] = f"sqlite:///{typo}"

    message = one_line_error(cli(*command))

    assert str(typo) in message
    assert not typo.exists()
    assert list(tmp_path.glob("user-servcie.db*")) == []


# -- files readable by their owner only ---------------------------------------------------------------------------


def test_a_new_sqlite_database_is_readable_by_its_owner_only(cli: Cli, tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "accounts.db"
    database.parent.mkdir()
    cli.env["DATABASE_URL"] = f"sqlite:///{database}"

    assert cli("migrate").exit_code == 0, "migrate"
    engine = make_engine(Settings(database_url=f"sqlite:///{database}", _env_file=None))  # type: ignore[call-arg]
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('x')")
            # While a connection is open the write-ahead log and its index exist beside the database.
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in database.parent.iterdir()}
            connection.rollback()
    finally:
        engine.dispose()

    assert modes == {"accounts.db": 0o600, "accounts.db-wal": 0o600, "accounts.db-shm": 0o600}


# -- every failure is one line ------------------------------------------------------------------------------------


def test_a_settings_file_that_is_not_text_is_one_line(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.env"
    broken.write_bytes(b"\xff\xfeDATABASE_URL=\x00")

    for command in (["migrate"], ["migrate", "--current"], ["serve"]):
        assert "UTF-8" in one_line_error(cli(*command, "--env-file", str(broken))), command
    Path(".env").write_bytes(b"\xff\xfe")
    assert "UTF-8" in one_line_error(cli("migrate"))


@pytest.mark.parametrize("command", [["migrate"], ["migrate", "--revision", "base", "--yes"], ["init"]])
def test_a_sqlite_database_in_a_missing_folder_is_one_line(cli: Cli, tmp_path: Path, command: list[str]) -> None:
    cli.env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'no-such-folder' / 'accounts.db'}"

    if command == ["init"]:
        command = [*command, "--env-file", str(tmp_path / "written.env")]

    message = one_line_error(cli(*command))

    assert "no-such-folder" in message


@pytest.mark.parametrize(
    "env_file",
    ["/proc/no-such-process/service.env", "a-folder"],
    ids=["folder cannot be created", "a folder, not a file"],
)
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_init_with_an_env_file_it_cannot_write_is_one_line(cli: Cli, env_file: str, force: list[str]) -> None:
    Path("a-folder").mkdir()

    message = one_line_error(cli("init", "--env-file", env_file, *force))

    assert env_file.split("/")[1 if env_file.startswith("/") else 0] in message


def test_init_with_an_upload_folder_it_cannot_create_is_one_line(cli: Cli) -> None:
    cli.env["UPLOAD_DIR"] = "/proc/no-such-process/uploads"

    message = one_line_error(cli("init"))

    assert "/proc/no-such-process" in message


@pytest.mark.parametrize("command", [["migrate"], ["serve"], ["migrate", "--current"]])
def test_a_missing_env_file_is_one_line(cli: Cli, command: list[str]) -> None:
    assert "missing.env" in one_line_error(cli(*command, "--env-file", "missing.env"))


def test_an_unknown_revision_is_one_line(cli: Cli) -> None:
    assert "nonsense" in one_line_error(cli("migrate", "--revision", "nonsense"))


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_locked_sqlite_database_is_one_line(cli: Cli, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = db_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        message = one_line_error(cli("migrate", "--revision", "base", "--yes"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert "database" in message
    assert tables_of(db_url) == TABLES
