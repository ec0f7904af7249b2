"""The arguments and options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from user_service.cli._output import remember_json_mode

EnvFileOption = Annotated[
    Path | None,
    typer.Option("--env-file", help="Read settings from this file instead of ./.env.", dir_okay=False),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Use this database instead of DATABASE_URL.", show_default=False),
]
NamespaceArg = Annotated[str, typer.Argument(help="The namespace (tenant).", show_default=False)]
UsernameArg = Annotated[str, typer.Argument(help="The username.", show_default=False)]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print JSON instead of text; errors too, as one JSON object on stderr.",
        callback=remember_json_mode,
    ),
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
]
