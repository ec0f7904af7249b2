"""`user-service issue-token`: access tokens and pairs an operator issues, and the users it refuses."""

from __future__ import annotations

import json

import jwt
import pytest

from tests.conftest import Api, Cli
from tests.helpers import (
    create_user,
    one_line_error,
)

# -- issue-token --------------------------------------------------------------------------------------------------


def test_issue_token_prints_an_access_token(cli: Cli, web: Api) -> None:
    assert create_user(cli).exit_code == 0

    result = cli("issue-token", "app-x", "alice")

    assert result.exit_code == 0, result.output
    me = web.me(result.stdout.strip())
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "alice"


def test_issue_token_refresh_prints_a_working_pair(cli: Cli, web: Api) -> None:
    assert create_user(cli).exit_code == 0

    result = cli("issue-token", "app-x", "alice", "--refresh")

    assert result.exit_code == 0, result.output
    pair = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in result.stdout.splitlines())}
    assert web.me(pair["access_token"]).status_code == 200
    refreshed = web.refresh(pair["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert web.me(refreshed.json()["access_token"]).status_code == 200


def test_issue_token_ttl_sets_the_lifetime(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0

    result = cli("issue-token", "app-x", "alice", "--ttl", "60")

    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize(
    ("options", "keys", "expires_in"),
    [
        ([], {"access_token", "token_type", "expires_in"}, 900),
        (["--refresh", "--ttl", "60"], {"access_token", "refresh_token", "token_type", "expires_in"}, 60),
    ],
    ids=["access", "pair"],
)
def test_issue_token_json(cli: Cli, web: Api, options: list[str], keys: set[str], expires_in: int) -> None:
    assert create_user(cli).exit_code == 0

    result = cli("issue-token", "app-x", "alice", "--json", *options)

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == keys
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == expires_in
    assert web.me(body["access_token"]).status_code == 200
    if "refresh_token" in body:
        assert web.refresh(body["refresh_token"]).status_code == 200


@pytest.mark.parametrize("command", ["issue-token", "disable-user", "enable-user", "delete-user"])
@pytest.mark.parametrize(("namespace", "username"), [("app-x", "nobody"), ("app-y", "alice")])
def test_commands_on_an_unknown_user_fail(cli: Cli, command: str, namespace: str, username: str) -> None:
    assert create_user(cli).exit_code == 0
    extra = ["--yes"] if command == "delete-user" else []

    result = cli(command, namespace, username, *extra)

    one_line_error(result, 4)
    assert result.stdout == ""


def test_issue_token_refuses_a_disabled_user(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0
    assert cli("disable-user", "app-x", "alice").exit_code == 0

    result = cli("issue-token", "app-x", "alice")

    assert "disabled" in one_line_error(result)
    assert result.stdout == ""
