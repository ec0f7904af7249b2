"""The `user-service` command: operators set up, migrate, serve, and manage users and tokens from scripts.

Heavy modules (uvicorn, alembic, the service core) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperCommand

from user_service import __version__
from user_service.cli import admin, directory, keys, setup, tokens, transfer, users
from user_service.cli._help import Command, Group
from user_service.cli._output import EXIT_ERROR, EXIT_USAGE, console, print_json_error, remember_json_mode
from user_service.errors import ErrorCode

app = typer.Typer(
    name="user-service",
    help="Username/password accounts with JWT access tokens and rotating refresh tokens.",
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"user-service {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Username/password accounts with JWT access tokens and rotating refresh tokens."""
    # Runs before the command's options are parsed: a command without --json prints its errors as text.
    remember_json_mode(False)


for module in (setup, users, tokens, keys, directory, transfer, admin):
    module.register(app)
# Every command gets the help screen without type tags on flags (Typer fills in its own class when none is given).
for info in app.registered_commands:
    if info.cls is None or info.cls is TyperCommand:
        info.cls = Command


def main() -> None:
    if "--json" not in sys.argv[1:]:
        app()
        return
    # With --json even a usage error (found before the command runs) is one JSON object on stderr, exit 2.
    try:
        result = app(standalone_mode=False)
    except typer.TyperException as exc:
        # Click's usage errors (exit code 2) and its other errors, which Typer re-exports under this base.
        print_json_error(ErrorCode.INVALID_INPUT, exc.format_message())
        sys.exit(exc.exit_code if exc.exit_code != EXIT_ERROR else EXIT_USAGE)
    except typer.Abort:
        print_json_error(ErrorCode.BAD_REQUEST, "aborted")
        sys.exit(EXIT_ERROR)
    sys.exit(result if isinstance(result, int) else 0)
