"""The set-up commands (init, migrate, serve) used from scripts: they ask before destroying, keep what they do not
own, read exactly the settings they are given, create nothing when only asked to look, and fail in one line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect

from tests.conftest import PASSWORD, Cli
from user_service import migrations
from user_service.cli import setup
from user_service.config import Settings
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


@pytest.fixture
def schema_restored(db_url: str) -> Iterator[None]:
    """The PostgreSQL database is shared by the run: hand it back at head."""
    yield
    engine = make_engine(Settings(database_url=db_url, _env_file=None))  # type: ignore[call-arg]
    try:
        migrations.migrate_to(engine, "head")
    finally:
        engine.dispose()


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
