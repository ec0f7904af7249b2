"""`user-service` commands on accounts: `create-user`, `disable-user`, `enable-user`, `delete-user`; what they do is
checked through the HTTP API, the way a user would notice it."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import PASSWORD, PROFILE_KEYS, Api, Cli
from tests.helpers import (
    create_user,
    http_message,
    one_line_error,
)
from user_service.cli import users

# -- create-user --------------------------------------------------------------------------------------------------


def test_create_user_prints_the_id_and_the_user_can_log_in(cli: Cli, web: Api) -> None:
    result = create_user(cli)

    assert result.exit_code == 0, result.output
    user_id = uuid.UUID(result.stdout.strip())
    pair = web.login().json()
    assert web.me(pair["access_token"]).json()["id"] == str(user_id)


@pytest.fixture
def at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard input is a terminal, as when an operator types the command (Typer's runner feeds a pipe)."""
    monkeypatch.setattr(users, "stdin_is_a_terminal", lambda: True)


def test_create_user_without_a_terminal_or_password_stdin_refuses_to_ask(cli: Cli, web: Api) -> None:
    result = cli("create-user", "app-x", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert "--password-stdin" in one_line_error(result, 2)
    assert result.stdout == ""
    assert web.login().status_code == 401


@pytest.mark.usefixtures("at_a_terminal")
def test_create_user_asks_for_the_password_twice(cli: Cli, web: Api) -> None:
    result = cli("create-user", "app-x", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    uuid.UUID(result.stdout.strip().splitlines()[-1])
    assert PASSWORD not in result.output
    assert web.login().status_code == 200


@pytest.mark.usefixtures("at_a_terminal")
def test_create_user_asks_again_after_a_mismatch(cli: Cli, web: Api) -> None:
    answers = f"first-try-password\nsecond-try-password\n{PASSWORD}\n{PASSWORD}\n"

    result = cli("create-user", "app-x", "alice", input=answers)

    assert result.exit_code == 0, result.output
    assert "do not match" in result.stdout
    assert web.login().status_code == 200


@pytest.mark.usefixtures("at_a_terminal")
def test_create_user_mismatch_without_another_try_creates_nobody(cli: Cli, web: Api) -> None:
    result = cli("create-user", "app-x", "alice", input="first-try-password\nsecond-try-password\n")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "first-try-password" not in result.output
    assert web.login(password="first-try-password").status_code == 401
    one_line_error(cli("issue-token", "app-x", "alice"), 4)


def test_create_user_with_every_option_prints_the_profile_as_json(cli: Cli, web: Api) -> None:
    result = create_user(
        cli,
        "--email",
        "alice@example.com",
        "--full-name",
        "Alice Liddell",
        "--extra",
        "team=blue",
        "--extra",
        "query=a=b",
        "--json",
    )

    assert result.exit_code == 0, result.output
    profile = json.loads(result.stdout)
    assert set(profile) == PROFILE_KEYS
    assert profile["email"] == "alice@example.com"
    assert profile["full_name"] == "Alice Liddell"
    assert profile["extra"] == {"team": "blue", "query": "a=b"}
    seen = web.me(web.login().json()["access_token"]).json()
    assert {key: seen[key] for key in ("id", "email", "full_name", "extra")} == {
        key: profile[key] for key in ("id", "email", "full_name", "extra")
    }


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (["APP-X", "Alice"], "username"),
        (["app-x", "bob", "--email", "ALICE@example.com"], "email"),
    ],
    ids=["same username in another case", "same email"],
)
def test_create_user_refuses_a_duplicate(cli: Cli, second: list[str], expected: str) -> None:
    assert create_user(cli, "--email", "alice@example.com").exit_code == 0

    result = cli("create-user", *second, "--password-stdin", input=PASSWORD + "\n")

    message = one_line_error(result, 3)
    assert expected in message.lower()
    assert "taken" in message or "already" in message
    assert result.stdout == ""


INVALID_INPUTS = [
    pytest.param(["bad_ns", "alice"], PASSWORD, {"namespace": "bad_ns"}, "namespace must be", id="namespace"),
    pytest.param(["app-x", "alice"], "short", {"password": "short"}, "at least 8 characters", id="short password"),
    pytest.param(["app-x", "alice"], "é" * 36 + "a", {"password": "é" * 36 + "a"}, "72 bytes", id="73-byte password"),
    pytest.param(
        ["app-x", "alice", "--email", "not-an-email"],
        PASSWORD,
        {"email": "not-an-email"},
        "email is not valid",
        id="email",
    ),
    pytest.param(["app-x", "alice", "--extra", "novalue"], PASSWORD, None, "key=value", id="extra without value"),
]


@pytest.mark.parametrize(("args", "password", "http_body", "phrase"), INVALID_INPUTS)
def test_create_user_refuses_invalid_input_like_the_http_api(
    cli: Cli, web: Api, args: list[str], password: str, http_body: dict[str, str] | None, phrase: str
) -> None:
    result = cli("create-user", *args, "--password-stdin", input=password + "\n")

    message = one_line_error(result, 2 if phrase == "key=value" else 1)
    assert phrase in message
    assert result.stdout == ""
    if http_body is not None:
        response = web.register(**http_body)
        assert response.status_code == 422
        assert phrase in http_message(response)
    assert web.login(password=password).status_code == 401


# -- disable, enable, delete --------------------------------------------------------------------------------------


def test_disable_user_stops_tokens_and_logins_and_enable_user_restores_logins(cli: Cli, web: Api) -> None:
    assert create_user(cli).exit_code == 0
    token = cli("issue-token", "app-x", "alice").stdout.strip()
    session = web.login().json()

    disabled = cli("disable-user", "app-x", "alice")

    assert disabled.exit_code == 0, disabled.output
    me = web.me(token)
    assert (me.status_code, me.json()["code"]) == (403, "user_disabled")
    login = web.login()
    assert (login.status_code, login.json()["code"]) == (403, "user_disabled")
    assert web.refresh(session["refresh_token"]).status_code == 403

    enabled = cli("enable-user", "app-x", "alice")

    assert enabled.exit_code == 0, enabled.output
    assert web.login().status_code == 200
    # Disabling ended the sessions: the old tokens stay dead.
    assert web.me(token).status_code == 401
    assert web.refresh(session["refresh_token"]).status_code == 401


def test_delete_user_removes_the_account(cli: Cli, web: Api) -> None:
    assert create_user(cli).exit_code == 0
    token = cli("issue-token", "app-x", "alice").stdout.strip()

    result = cli("delete-user", "app-x", "alice", "--yes")

    assert result.exit_code == 0, result.output
    me = web.me(token)
    assert (me.status_code, me.json()["code"]) == (401, "invalid_token")
    assert web.login().json()["code"] == "invalid_credentials"
    one_line_error(cli("issue-token", "app-x", "alice"), 4)
    assert create_user(cli).exit_code == 0


def test_delete_user_without_yes_asks_first(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0

    declined = cli("delete-user", "app-x", "alice", input="n\n")

    assert declined.exit_code == 1
    assert cli("issue-token", "app-x", "alice").exit_code == 0
    confirmed = cli("delete-user", "app-x", "alice", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    one_line_error(cli("issue-token", "app-x", "alice"), 4)
