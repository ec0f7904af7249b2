"""Console output, the options every command shares, and the one way errors leave the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from user_service.errors import UserServiceError

if TYPE_CHECKING:
    from user_service.config import Settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EnvFileOption = Annotated[
    Path | None,
    typer.Option("--env-file", help="Read settings from this file instead of ./.env.", dir_okay=False),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Use this database instead of DATABASE_URL.", show_default=False),
]


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
