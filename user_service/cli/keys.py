"""Signing keys: listing them and rotating them (`user-service keys list|rotate`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption, JsonOption
from user_service.cli._output import console, operator_service

if TYPE_CHECKING:
    from user_service.service.keys import KeyInfo

keys_app = typer.Typer(
    help="The keys that sign access tokens: list them, rotate them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _as_dict(key: KeyInfo) -> dict[str, Any]:
    def when(moment: Any) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": key.state,
        "published": key.published,
        "created_at": when(key.created_at),
        "activated_at": when(key.activated_at),
        "retired_at": when(key.retired_at),
    }


@keys_app.command("list")
def list_keys(
    as_json: JsonOption = False, env_file: EnvFileOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """List the signing keys (kid, algorithm, state, dates; never private material), oldest first."""
    with operator_service(env_file, database_url) as service:
        keys = [_as_dict(key) for key in service.list_keys()]
    if as_json:
        console.print_json(json.dumps(keys))
        return
    if not keys:
        console.print("No signing keys yet: `serve` or `keys rotate` creates the first ones.")
        return
    for key in keys:
        shown = "published" if key["published"] else "no longer published"
        console.print(
            f"{key['kid']}  {key['algorithm']}  {key['state']}  {shown}  created {key['created_at']}  "
            f"activated {key['activated_at'] or '-'}  retired {key['retired_at'] or '-'}"
        )


@keys_app.command("rotate")
def rotate(env_file: EnvFileOption = None, database_url: DatabaseUrlOption = None) -> None:
    """The next key starts signing, a new next key (of JWT_ALGORITHM) is made, the old current key is retired.
    Running instances follow within a minute; tokens signed before stay valid until they expire."""
    with operator_service(env_file, database_url, needs_secret=True) as service:
        current = service.rotate_keys()
    console.print(f"Rotated: {current.kid} ({current.algorithm}) now signs access tokens.")
