"""Admin keys for apps' back ends: make one (shown once), list them, revoke one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption, JsonOption
from user_service.cli._output import console, operator_service


def register(app: typer.Typer) -> None:
    app.command("create-admin-key")(create_admin_key)
    app.command("admin-keys")(admin_keys)
    app.command("revoke-admin-key")(revoke_admin_key)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def create_admin_key(
    name: Annotated[str, typer.Option("--name", help="A unique name for the key (who holds it).", show_default=False)],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", help="The one namespace the key reaches; without it, every one.", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Make an admin key for the admin API and print it once; only its hash is kept."""
    with operator_service(env_file, database_url) as service:
        info, key = service.create_admin_key(name=name, namespace=namespace)
    if as_json:
        console.print_json(json.dumps({"name": info.name, "namespace": info.namespace, "key": key}))
    else:
        console.print(key)


def admin_keys(
    as_json: JsonOption = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List the admin keys: name, scope, when made, last used and revoked (never the keys)."""
    with operator_service(env_file, database_url) as service:
        keys = service.admin_keys()
    rows = [
        {
            "name": key.name,
            "namespace": key.namespace,
            "created_at": _when(key.created_at),
            "last_used_at": _when(key.last_used_at),
            "revoked_at": _when(key.revoked_at),
        }
        for key in keys
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("name", "namespace", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            row["name"],
            row["namespace"] or "*",
            row["created_at"],
            row["last_used_at"] or "-",
            row["revoked_at"] or "-",
        )
    console.print(table)


def revoke_admin_key(
    name: Annotated[str, typer.Argument(help="The key's name.", show_default=False)],
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke an admin key: every request with it is refused from now on, on every instance."""
    with operator_service(env_file, database_url) as service:
        service.revoke_admin_key(name=name)
    console.print(f"admin key {name} revoked")
