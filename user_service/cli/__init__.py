"""The `user-service` command: operators set up, migrate, serve, and manage users and tokens from scripts.

Heavy modules (uvicorn, alembic, the service core) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from user_service import __version__
from user_service.cli import admin, setup, tokens, users
from user_service.cli._output import console

app = typer.Typer(
    name="user-service",
    help="Username/password accounts with JWT access tokens and rotating refresh tokens.",
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


for module in (setup, users, tokens, admin):
    module.register(app)


def main() -> None:
    app()
