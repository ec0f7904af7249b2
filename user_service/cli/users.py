"""Managing accounts from scripts: create, disable, enable, delete, set a password, prune sessions. Same core, same
rules as the HTTP API."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from user_service.cli._options import (
    DatabaseUrlOption,
    EnvFileOption,
    JsonOption,
    NamespaceArg,
    PasswordStdinOption,
    UsernameArg,
)
from user_service.cli._output import EXIT_USAGE, console, exit_with_error, operator_service
from user_service.errors import ErrorCode, UsernameTaken, UserNotFound

if TYPE_CHECKING:
    from user_service.schemas import Profile


def register(app: typer.Typer) -> None:
    app.command("create-user")(create_user)
    app.command("disable-user")(disable_user)
    app.command("enable-user")(enable_user)
    app.command("delete-user")(delete_user)
    app.command("set-password")(set_password)
    app.command("prune-sessions")(prune_sessions)
    app.command("reset-mfa")(reset_mfa)


def _parse_extra(pairs: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            exit_with_error(
                f"--extra takes key=value, got {pair!r}", code=ErrorCode.INVALID_INPUT, exit_code=EXIT_USAGE
            )
        extra[key] = value
    return extra


def stdin_is_a_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            exit_with_error(
                "--password-stdin was given but standard input is empty",
                code=ErrorCode.INVALID_INPUT,
                exit_code=EXIT_USAGE,
            )
        return line.removesuffix("\n").removesuffix("\r")
    if not stdin_is_a_terminal():
        # A script without --password-stdin: asking would read the password from a pipe and write the prompts to
        # standard output, in among what the script reads.
        exit_with_error(
            "no terminal to ask for the password on; pass --password-stdin and write it to standard input",
            code=ErrorCode.INVALID_INPUT,
            exit_code=EXIT_USAGE,
        )
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def create_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    password_stdin: PasswordStdinOption = False,
    email: Annotated[str | None, typer.Option(help="Email address.", show_default=False)] = None,
    full_name: Annotated[str | None, typer.Option(help="Full name.", show_default=False)] = None,
    extra: Annotated[
        list[str] | None, typer.Option("--extra", help="key=value for the extra map; repeatable.", show_default=False)
    ] = None,
    if_not_exists: Annotated[
        bool,
        typer.Option(
            "--if-not-exists", help="When the user exists already, print its id and exit 0 (scripts can re-run)."
        ),
    ] = False,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user; prints the new user's id."""
    from user_service.schemas import RegisterRequest
    from user_service.validation import parse_input

    extra_map = _parse_extra(extra or [])
    with operator_service(env_file, database_url) as service:
        existing: Profile | None = None
        if if_not_exists:
            try:
                existing = service.get_user(namespace=namespace, username=username)
            except UserNotFound:
                existing = None
        if existing is not None:
            _print_profile(existing, as_json=as_json)
            return
        password = _read_password(password_stdin)
        data = parse_input(
            RegisterRequest,
            {
                "namespace": namespace,
                "username": username,
                "password": password,
                "email": email,
                "full_name": full_name,
                "extra": extra_map or None,
            },
        )
        try:
            profile = service.register(data, by_operator=True)
        except UsernameTaken:
            # Created meanwhile by another run of the same script.
            if not if_not_exists:
                raise
            profile = service.get_user(namespace=namespace, username=username)
    _print_profile(profile, as_json=as_json)


def _print_profile(profile: Profile, *, as_json: bool) -> None:
    if as_json:
        console.print_json(profile.model_dump_json())
    else:
        console.print(str(profile.id))


def _set_active_command(*, active: bool, summary: str) -> Callable[..., None]:
    """The command that enables (or disables) a user; one body for both."""

    def command(
        namespace: NamespaceArg,
        username: UsernameArg,
        as_json: JsonOption = False,
        env_file: EnvFileOption = None,
        database_url: DatabaseUrlOption = None,
    ) -> None:
        with operator_service(env_file, database_url) as service:
            profile = service.set_active(namespace=namespace, username=username, active=active)
        if as_json:
            console.print_json(json.dumps({"id": str(profile.id), "active": active}))
        else:
            console.print(f"{profile.namespace}/{profile.username} {'enabled' if active else 'disabled'}")

    command.__doc__ = summary
    return command


disable_user = _set_active_command(
    active=False, summary="Disable a user: logins are refused and existing tokens stop working at once."
)
enable_user = _set_active_command(active=True, summary="Enable a disabled user again.")


def delete_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete a user with their sessions and avatar."""
    with operator_service(env_file, database_url) as service:
        if not yes and not typer.confirm(f"Delete {namespace}/{username} for good?"):
            exit_with_error("not deleted", code=ErrorCode.BAD_REQUEST)
        service.delete_user(namespace=namespace, username=username)
    console.print(f"deleted {namespace}/{username}")


def set_password(
    namespace: NamespaceArg,
    username: UsernameArg,
    password_stdin: PasswordStdinOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Set a user's password (the same policy as everywhere); ends their sessions and lifts a lock."""
    with operator_service(env_file, database_url) as service:
        password = _read_password(password_stdin)
        service.reset_password(namespace=namespace, username=username, new_password=password)
    console.print(f"password set for {namespace}/{username}; their sessions have ended")


def prune_sessions(
    keep_ended_days: Annotated[
        int, typer.Option("--keep-ended-days", min=0, help="Keep ended sessions this many days (for audits).")
    ] = 7,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete expired sessions, and ended ones older than --keep-ended-days, with their refresh tokens."""
    with operator_service(env_file, database_url) as service:
        deleted = service.prune_sessions(keep_revoked_seconds=keep_ended_days * 86_400)
    console.print(f"deleted {deleted} sessions")


def reset_mfa(
    namespace: NamespaceArg,
    username: UsernameArg,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Remove a user's second factor and recovery codes (a lost phone) and end their sessions."""
    with operator_service(env_file, database_url) as service:
        removed, ended = service.reset_mfa(namespace=namespace, username=username)
    if as_json:
        console.print_json(json.dumps({"removed": removed, "sessions_ended": ended}))
        return
    what = "second factor removed" if removed else "no second factor to remove"
    console.print(f"{namespace}/{username}: {what}; {ended} sessions ended", markup=False)
