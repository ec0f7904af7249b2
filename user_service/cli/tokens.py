"""Issuing tokens for existing users without their password (operators, scripts, service accounts)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption, JsonOption, NamespaceArg, UsernameArg
from user_service.cli._output import console, operator_service
from user_service.config import MAX_ACCESS_TOKEN_TTL_SECONDS


def register(app: typer.Typer) -> None:
    app.command("issue-token")(issue_token)


def issue_token(
    namespace: NamespaceArg,
    username: UsernameArg,
    refresh: Annotated[bool, typer.Option("--refresh", help="Start a session: print a refresh token too.")] = False,
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl",
            min=1,
            max=MAX_ACCESS_TOKEN_TTL_SECONDS,
            help="Access token lifetime in seconds (at most a day).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print an access token (and with --refresh a refresh token) for an existing active user."""
    with operator_service(env_file, database_url, needs_secret=True) as service:
        tokens = service.issue_tokens(namespace=namespace, username=username, ttl_seconds=ttl)
    body = {"access_token": tokens.access_token, "token_type": "bearer", "expires_in": tokens.expires_in}
    if refresh:
        body["refresh_token"] = tokens.refresh_token
    if as_json:
        console.print_json(json.dumps(body))
    elif refresh:
        console.print(f"access_token: {tokens.access_token}\nrefresh_token: {tokens.refresh_token}")
    else:
        console.print(tokens.access_token)
