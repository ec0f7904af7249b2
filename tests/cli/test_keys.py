"""`user-service keys list|rotate`, the first keys made by init/migrate/serve, and serve refusing keys or algorithms
it cannot use, each with one line."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from tests.conftest import TEST_SECRET, Api, Cli
from tests.helpers import create_user, one_line_error

OTHER_SECRET = "another-service-signing-key-9876543210-zyxwv"


def keys_of(cli: Cli) -> list[dict[str, Any]]:
    result = cli("keys", "list", "--json")
    assert result.exit_code == 0, result.output
    keys: list[dict[str, Any]] = json.loads(result.stdout)
    return keys


def test_keys_list_is_empty_before_any_key_is_made(cli: Cli) -> None:
    assert keys_of(cli) == []
    result = cli("keys", "list")
    assert result.exit_code == 0
    assert "No signing keys yet" in result.stdout


def test_rotate_makes_the_next_key_current(cli: Cli) -> None:
    assert cli("keys", "rotate").exit_code == 0
    first = {key["state"]: key for key in keys_of(cli)}
    assert set(first) == {"current", "next"}

    result = cli("keys", "rotate")

    assert result.exit_code == 0, result.output
    assert first["next"]["kid"] in result.stdout
    after = {key["kid"]: key for key in keys_of(cli)}
    assert after[first["current"]["kid"]]["state"] == "retired"
    assert after[first["current"]["kid"]]["retired_at"] is not None
    assert after[first["current"]["kid"]]["published"] is True
    assert after[first["next"]["kid"]]["state"] == "current"
    assert after[first["next"]["kid"]]["activated_at"] is not None
    assert sorted(key["state"] for key in after.values()) == ["current", "next", "retired"]
    for key in after.values():
        assert set(key) == {"kid", "algorithm", "state", "published", "created_at", "activated_at", "retired_at"}
        assert key["algorithm"] == "ES256"


def test_keys_list_shows_no_private_material(cli: Cli) -> None:
    cli("keys", "rotate")

    text = cli("keys", "list").stdout + cli("keys", "list", "--json").stdout

    assert "v1:" not in text
    assert "PRIVATE" not in text
    assert '"d"' not in text


def test_rotate_with_a_shared_secret_algorithm_is_one_line(cli: Cli) -> None:
    cli.env["JWT_ALGORITHM"] = "HS256"

    message = one_line_error(cli("keys", "rotate"))

    assert "JWT_ALGORITHM is HS256" in message


def test_rotation_reaches_tokens_issued_by_the_cli(cli: Cli, web: Api) -> None:
    create_user(cli)
    before = cli("issue-token", "app-x", "alice").stdout.strip()
    assert cli("keys", "rotate").exit_code == 0
    after = cli("issue-token", "app-x", "alice").stdout.strip()

    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    for token in (before, after):
        assert web.me(token).status_code == 200, token


def test_migrate_makes_the_first_keys(cli: Cli, schema_restored: None) -> None:
    assert cli("migrate", "--revision", "base", "--yes").exit_code == 0
    assert cli("migrate").exit_code == 0

    assert sorted(key["state"] for key in keys_of(cli)) == ["current", "next"]


def test_serve_makes_the_first_keys(cli: Cli, uvicorn_calls: list[dict[str, Any]]) -> None:
    assert cli("serve").exit_code == 0
    assert len(uvicorn_calls) == 1
    assert sorted(key["state"] for key in keys_of(cli)) == ["current", "next"]


def test_serve_with_a_secret_that_cannot_open_the_keys_is_one_line(
    cli: Cli, uvicorn_calls: list[dict[str, Any]]
) -> None:
    cli("keys", "rotate")
    cli.env["JWT_SECRET_KEY"] = OTHER_SECRET

    message = one_line_error(cli("serve"))

    assert "JWT_SECRET_KEY cannot decrypt the signing key" in message
    assert OTHER_SECRET not in message and TEST_SECRET not in message
    assert uvicorn_calls == []


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"JWT_ALGORITHM": "ES512"}, "JWT_ALGORITHM"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_ALGORITHM": "HS512"}, "at least 64 bytes for HS512"),
    ],
    ids=["unknown", "none", "hs-secret-too-short"],
)
def test_serve_refuses_an_algorithm_it_cannot_use_in_one_line(
    cli: Cli, uvicorn_calls: list[dict[str, Any]], variables: dict[str, str], expected: str
) -> None:
    cli.env.update(variables)

    message = one_line_error(cli("serve"))

    assert expected in message
    assert uvicorn_calls == []
