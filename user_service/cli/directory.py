"""Seeing who exists: list and search a namespace's users, show one account's state, count the namespaces, and end a
user's sessions. Tables for a person, JSON Lines (`--json`) for scripts; the same core as the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption, JsonOption, NamespaceArg, UsernameArg
from user_service.cli._output import console, err_console, exit_with_error, operator_service

if TYPE_CHECKING:
    from rich.text import Text

    from user_service.schemas import UserDetail


def register(app: typer.Typer) -> None:
    app.command("list-users")(list_users)
    app.command("show-user")(show_user)
    app.command("namespaces")(namespaces)
    app.command("revoke-sessions")(revoke_sessions)


def _plain(*values: str) -> list[Text]:
    """Cells as plain text: names and addresses are data, never rich markup."""
    from rich.text import Text

    return [Text(value) for value in values]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def list_users(
    namespace: NamespaceArg,
    search: Annotated[
        str | None,
        typer.Option(
            "--search", help="Only users whose username or email starts with this (any case).", show_default=False
        ),
    ] = None,
    active_only: Annotated[bool, typer.Option("--active", help="Only enabled users.")] = False,
    disabled_only: Annotated[bool, typer.Option("--disabled", help="Only disabled users.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Users per page (1-500).")] = 50,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Start after this cursor (printed on stderr after a page).", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line (JSON Lines).")] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a namespace's users in order of creation, one page at a time; the next page's cursor goes to stderr."""
    if active_only and disabled_only:
        exit_with_error("--active and --disabled cannot be used together")
    active = True if active_only else False if disabled_only else None
    with operator_service(env_file, database_url) as service:
        page = service.list_users(namespace, search=search, active=active, limit=limit, after=after)
    if as_json:
        for item in page.items:
            typer.echo(item.model_dump_json())
    else:
        from rich.table import Table

        table = Table("username", "email", "full name", "active", "created (UTC)", "last login (UTC)")
        for item in page.items:
            cells = (item.username, item.email or "-", item.full_name or "-", "yes" if item.is_active else "no")
            table.add_row(*_plain(*cells, _when(item.created_at), _when(item.last_login_at)))
        console.print(table)
    if page.next is not None:
        err_console.print(f"next: {page.next}", markup=False)


def _detail_lines(detail: UserDetail) -> list[tuple[str, str]]:
    return [
        ("id", str(detail.id)),
        ("namespace", detail.namespace),
        ("username", detail.username),
        ("email", detail.email or "-"),
        ("full name", detail.full_name or "-"),
        ("avatar url", detail.avatar_url or "-"),
        ("extra", ", ".join(f"{key}={value}" for key, value in detail.extra.items()) or "-"),
        ("active", "yes" if detail.is_active else "no"),
        ("second factor", "yes" if detail.mfa_enabled else "no"),
        ("locked until", _when(detail.locked_until)),
        ("failed logins", str(detail.failed_login_count)),
        ("last login", _when(detail.last_login_at)),
        ("live sessions", str(detail.live_sessions)),
        ("created", _when(detail.created_at)),
        ("updated", _when(detail.updated_at)),
    ]


def show_user(
    namespace: NamespaceArg,
    username: UsernameArg,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show a user's profile and state: active, second factor, locked until, failed logins, last login, sessions."""
    with operator_service(env_file, database_url) as service:
        detail = service.user_detail(namespace=namespace, username=username)
    if as_json:
        typer.echo(detail.model_dump_json())
        return
    width = max(len(label) for label, _ in _detail_lines(detail))
    for label, value in _detail_lines(detail):
        console.print(f"{label:<{width}}  {value}", markup=False)


def namespaces(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line (JSON Lines).")] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List every namespace that holds users, with its number of users."""
    with operator_service(env_file, database_url) as service:
        counts = service.namespaces()
    if as_json:
        for count in counts:
            typer.echo(count.model_dump_json())
        return
    from rich.table import Table

    table = Table("namespace", "users")
    for count in counts:
        table.add_row(*_plain(count.namespace, f"{count.users:,}"))
    console.print(table)


def revoke_sessions(
    namespace: NamespaceArg,
    username: UsernameArg,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """End every session of a user: their refresh and access tokens stop working at once."""
    with operator_service(env_file, database_url) as service:
        ended = service.revoke_sessions(namespace=namespace, username=username)
    console.print(f"ended {ended} sessions of {namespace}/{username}", markup=False)
