"""Console output, the one way errors leave the CLI, and opening the service for an operator command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from user_service.errors import UserServiceError

if TYPE_CHECKING:
    from user_service.config import Settings
    from user_service.service import UserService

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def exit_with_error(message: str) -> NoReturn:
    """One line on stderr and exit code 1: never a traceback, never an error with exit 0."""
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(1)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the core's errors, and a database that cannot be reached, into exit_with_error."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except UserServiceError as exc:
        exit_with_error(exc.message)
    except SQLAlchemyError as exc:
        exit_with_error(f"the database failed: {type(exc).__name__}; check DATABASE_URL and that it is running")


def settings_from(env_file: Path | None, database_url: str | None) -> Settings:
    from user_service.config import load_settings

    with cli_errors():
        return load_settings(env_file, database_url=database_url)


@contextmanager
def operator_service(
    env_file: Path | None, database_url: str | None, *, needs_secret: bool = False
) -> Iterator[UserService]:
    """The core for one operator command, closed when the command ends. Like `serve`, it works only on a migrated
    database, and says so before the command asks anything (a password prompt comes after this check). The core's
    errors inside the block end the command with one line on stderr and exit code 1."""
    from user_service import migrations
    from user_service.db import make_engine
    from user_service.service import UserService

    settings = settings_from(env_file, database_url)
    if needs_secret:
        with cli_errors():
            settings.signing_key()
    # An operator command never creates a database (a mistyped path must not leave an empty file behind).
    with cli_errors(), UserService(settings, engine=make_engine(settings, create=False)) as service:
        if not migrations.is_at_head(service.engine):
            exit_with_error("the database schema is not up to date; run `user-service migrate` first")
        yield service
