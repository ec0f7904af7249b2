"""`user-service list-users`, `show-user`, `namespaces` and `revoke-sessions`: what an operator sees at a terminal
and what a script reads (JSON Lines on stdout, the next page's cursor on stderr)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PASSWORD, Api, Cli
from tests.helpers import create_user, one_line_error


def users_of(result: Any) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def next_cursor(result: Any) -> str | None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("next: ")]
    return lines[0].removeprefix("next: ") if lines else None


@pytest.fixture
def three_users(cli: Cli) -> None:
    for name, email in (("alice", "Alice@example.com"), ("bob", "bob@example.com"), ("alfred", "zz@example.com")):
        assert create_user(cli, "--email", email, username=name).exit_code == 0
    assert create_user(cli, "--email", "al@example.com", username="bob").exit_code == 3  # same name: a conflict
    assert cli("create-user", "other", "carol", "--password-stdin", input=PASSWORD + "\n").exit_code == 0


def test_list_users_json_pages_through_every_user_once(cli: Cli, three_users: None) -> None:
    first = cli("list-users", "app-x", "--limit", "2", "--json")
    cursor = next_cursor(first)
    assert cursor is not None
    second = cli("list-users", "app-x", "--limit", "2", "--json", "--after", cursor)

    names = [user["username"] for user in users_of(first) + users_of(second)]
    assert names == ["alice", "bob", "alfred"]
    assert next_cursor(second) is None
    assert set(users_of(first)[0]) == {
        "id", "namespace", "username", "email", "full_name", "is_active", "created_at", "last_login_at"
    }  # fmt: skip


def test_list_users_search_matches_username_or_email_prefix_in_any_case(cli: Cli, three_users: None) -> None:
    result = cli("list-users", "app-x", "--search", "AL", "--json")

    assert [user["username"] for user in users_of(result)] == ["alice", "alfred"]


def test_list_users_filters_disabled_and_active(cli: Cli, three_users: None) -> None:
    assert cli("disable-user", "app-x", "bob").exit_code == 0

    disabled = cli("list-users", "app-x", "--disabled", "--json")
    active = cli("list-users", "app-x", "--active", "--json")

    assert [user["username"] for user in users_of(disabled)] == ["bob"]
    assert [user["username"] for user in users_of(active)] == ["alice", "alfred"]
    assert "cannot be used together" in one_line_error(cli("list-users", "app-x", "--active", "--disabled"))


def test_list_users_table_shows_names_as_typed_never_as_markup(cli: Cli) -> None:
    assert create_user(cli, "--full-name", "[bold]Al[/bold] Liddell").exit_code == 0

    result = cli("list-users", "app-x")

    assert result.exit_code == 0, result.output
    assert "username" in result.stdout
    assert "alice" in result.stdout
    assert "[bold]Al" in result.stdout


def test_list_users_refuses_a_cursor_it_did_not_make(cli: Cli) -> None:
    assert "cursor" in one_line_error(cli("list-users", "app-x", "--after", "nonsense"))


def test_show_user_gives_the_state_an_operator_needs(cli: Cli, web: Api) -> None:
    assert create_user(cli, "--email", "alice@example.com").exit_code == 0
    web.logged_in()
    web.logged_in()
    assert web.login(password="not the password").status_code == 401

    detail = json.loads(cli("show-user", "app-x", "ALICE", "--json").stdout)
    text = cli("show-user", "app-x", "alice").stdout

    assert detail["username"] == "alice"
    assert detail["is_active"] is True
    assert detail["live_sessions"] == 2
    assert detail["failed_login_count"] == 1
    assert detail["last_login_at"] is not None
    assert "password_hash" not in detail
    assert "live sessions  2" in text


def test_show_user_of_nobody_is_a_one_line_error(cli: Cli) -> None:
    assert "No user 'ghost'" in one_line_error(cli("show-user", "app-x", "ghost"), exit_code=4)


def test_namespaces_counts_users(cli: Cli, three_users: None) -> None:
    result = cli("namespaces", "--json")

    assert users_of(result) == [{"namespace": "app-x", "users": 3}, {"namespace": "other", "users": 1}]
    assert "app-x" in cli("namespaces").stdout


def test_revoke_sessions_makes_the_users_tokens_stop_working_at_once(cli: Cli, web: Api) -> None:
    assert create_user(cli).exit_code == 0
    pair = web.logged_in()
    assert web.me(pair["access_token"]).status_code == 200

    result = cli("revoke-sessions", "app-x", "alice")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ended 1 sessions of app-x/alice"
    assert web.me(pair["access_token"]).status_code == 401
    assert web.refresh(pair["refresh_token"]).status_code == 401
