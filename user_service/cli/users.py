"""Managing accounts from scripts: create, disable, enable, delete. Same core, same rules as the HTTP API."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from user_service.cli._output import (
    DatabaseUrlOption,
    EnvFileOption,
    cli_errors,
    console,
    exit_with_error,
    settings_from,
)

if TYPE_CHECKING:
    from user_service.config import Settings
    from user_service.service import UserService

NamespaceArg = Annotated[str, typer.Argument(help="The namespace (tenant).", show_default=False)]
UsernameArg = Annotated[str, typer.Argument(help="The username.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    app.command("create-user")(create_user)
    app.command("disable-user")(disable_user)
    app.command("enable-user")(enable_user)
    app.command("delete-user")(delete_user)
    app.command("set-password")(set_password)
    app.command("prune-sessions")(prune_sessions)


def open_service(settings: Settings) -> UserService:
    """The core for one CLI command; like `serve`, it works only on a migrated database."""
    from user_service import migrations
    from user_service.service import UserService

    service = UserService(settings)
    with cli_errors():
        at_head = migrations.is_at_head(service.engine)
    if not at_head:
        service.close()
        exit_with_error("the database schema is not up to date; run `user-service migrate` first")
    return service


def _parse_extra(pairs: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            exit_with_error(f"--extra takes key=value, got {pair!r}")
        extra[key] = value
    return extra


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            exit_with_error("--password-stdin was given but standard input is empty")
        return line.removesuffix("\n").removesuffix("\r")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def create_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    email: Annotated[str | None, typer.Option(help="Email address.", show_default=False)] = None,
    full_name: Annotated[str | None, typer.Option(help="Full name.", show_default=False)] = None,
    extra: Annotated[
        list[str] | None, typer.Option("--extra", help="key=value for the extra map; repeatable.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user; prints the new user's id."""
    settings = settings_from(env_file, database_url)
    extra_map = _parse_extra(extra or [])
    password = _read_password(password_stdin)
    service = open_service(settings)
    try:
        with cli_errors():
            profile = service.register(
                namespace=namespace,
                username=username,
                password=password,
                email=email,
                full_name=full_name,
                extra=extra_map or None,
            )
    finally:
        service.close()
    if as_json:
        console.print_json(profile.model_dump_json())
    else:
        console.print(str(profile.id))


def _set_active(namespace: str, username: str, active: bool, settings: Settings, as_json: bool) -> None:
    service = open_service(settings)
    try:
        with cli_errors():
            profile = service.set_active(namespace=namespace, username=username, active=active)
    finally:
        service.close()
    if as_json:
        console.print_json(json.dumps({"id": str(profile.id), "active": active}))
    else:
        console.print(f"{profile.namespace}/{profile.username} {'enabled' if active else 'disabled'}")


def disable_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Disable a user: logins are refused and existing tokens stop working at once."""
    _set_active(namespace, username, False, settings_from(env_file, database_url), as_json)


def enable_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Enable a disabled user again."""
    _set_active(namespace, username, True, settings_from(env_file, database_url), as_json)


def delete_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete a user with their sessions and avatar."""
    settings = settings_from(env_file, database_url)
    if not yes and not typer.confirm(f"Delete {namespace}/{username} for good?"):
        exit_with_error("not deleted")
    service = open_service(settings)
    try:
        with cli_errors():
            service.delete_user(namespace=namespace, username=username)
    finally:
        service.close()
    console.print(f"deleted {namespace}/{username}")


def set_password(
    namespace: NamespaceArg,
    username: UsernameArg,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Set a user's password (the same policy as everywhere); ends their sessions and lifts a lock."""
    settings = settings_from(env_file, database_url)
    password = _read_password(password_stdin)
    service = open_service(settings)
    try:
        with cli_errors():
            service.reset_password(namespace=namespace, username=username, new_password=password)
    finally:
        service.close()
    console.print(f"password set for {namespace}/{username}; their sessions have ended")


def prune_sessions(
    keep_ended_days: Annotated[
        int, typer.Option("--keep-ended-days", min=0, help="Keep ended sessions this many days (for audits).")
    ] = 7,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete expired sessions, and ended ones older than --keep-ended-days, with their refresh tokens."""
    settings = settings_from(env_file, database_url)
    service = open_service(settings)
    try:
        with cli_errors():
            deleted = service.prune_sessions(keep_revoked_seconds=keep_ended_days * 86_400)
    finally:
        service.close()
    console.print(f"deleted {deleted} sessions")
