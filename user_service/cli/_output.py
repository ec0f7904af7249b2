"""Console output, the one way errors leave the CLI, and opening the service for an operator command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from user_service.errors import ErrorCode, UserServiceError

if TYPE_CHECKING:
    from user_service.config import Settings
    from user_service.service import UserService

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# Exit codes scripts can branch on (README, "Exit codes"); click itself exits 2 on a usage error.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
# The one place where the catalogue's errors get their exit codes: by the HTTP status they share.
_EXIT_BY_STATUS = {409: EXIT_CONFLICT, 404: EXIT_NOT_FOUND}


def exit_code_for(error: UserServiceError) -> int:
    """The exit code of a core error: conflicts 3, not found 4, anything else 1."""
    return _EXIT_BY_STATUS.get(error.status, EXIT_ERROR)


# Set while its options are parsed (before the command runs) by the --json option's callback.
_json_errors: ContextVar[bool] = ContextVar("json_errors", default=False)


def remember_json_mode(value: bool) -> bool:
    """The --json option's callback: with --json, the command's errors are JSON too."""
    _json_errors.set(value)
    return value


def json_errors_requested() -> bool:
    return _json_errors.get()


def print_json_error(code: str, detail: str) -> None:
    """An error as one JSON object on one line of stderr, with the same code as HTTP gives."""
    print(json.dumps({"code": str(code), "detail": detail}), file=sys.stderr)


def exit_with_error(
    message: str, *, code: ErrorCode = ErrorCode.CONFIGURATION_ERROR, exit_code: int = EXIT_ERROR
) -> NoReturn:
    """One line on stderr (a JSON object with --json) and a non-zero exit code: never a traceback, never an error
    with exit 0."""
    if json_errors_requested():
        print_json_error(code, message)
    else:
        err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(exit_code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the core's errors, and a database that cannot be reached, into exit_with_error."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except UserServiceError as exc:
        exit_with_error(exc.message, code=exc.code, exit_code=exit_code_for(exc))
    except SQLAlchemyError as exc:
        exit_with_error(
            f"the database failed: {type(exc).__name__}; check DATABASE_URL and that it is running",
            code=ErrorCode.DATABASE_UNAVAILABLE,
        )


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
