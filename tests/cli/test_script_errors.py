"""What scripts branch on: exit codes (1 any error, 2 usage, 3 conflict, 4 not found), errors as one JSON object on
stderr with --json, create-user --if-not-exists, and help screens without type tags on flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, Cli
from tests.helpers import create_user

USER_SERVICE = str(Path(sys.executable).parent / "user-service")


def json_error(result: Any) -> dict[str, Any]:
    """Exactly one JSON object on one line of stderr, and nothing on stdout."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    body: dict[str, Any] = json.loads(lines[0])
    assert set(body) == {"code", "detail"}
    return body


def test_an_existing_user_is_a_conflict_exit_3(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0

    result = create_user(cli)

    assert result.exit_code == 3, result.output
    assert "already taken" in result.stderr


def test_a_conflict_with_json_is_one_json_object(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0

    result = create_user(cli, "--json")

    assert result.exit_code == 3
    assert json_error(result)["code"] == "username_taken"


def test_an_email_in_use_is_a_conflict_with_its_code(cli: Cli) -> None:
    assert create_user(cli, "--email", "a@example.com").exit_code == 0

    result = create_user(cli, "--email", "a@example.com", "--json", username="bob")

    assert result.exit_code == 3
    assert json_error(result)["code"] == "email_taken"


@pytest.mark.parametrize("command", ["disable-user", "enable-user", "issue-token"])
def test_an_unknown_user_is_not_found_exit_4(cli: Cli, command: str) -> None:
    result = cli(command, "app-x", "nobody", "--json")

    assert result.exit_code == 4, result.output
    assert json_error(result)["code"] == "user_not_found"


def test_delete_of_an_unknown_user_exits_4_with_text(cli: Cli) -> None:
    result = cli("delete-user", "app-x", "nobody", "--yes")

    assert result.exit_code == 4
    assert result.stderr.startswith("error:")


def test_a_refused_password_with_json_has_the_policys_code(cli: Cli) -> None:
    result = cli("create-user", "app-x", "alice", "--password-stdin", "--json", input="short\n")

    assert result.exit_code == 1
    assert json_error(result)["code"] == "password_too_short"


def test_a_malformed_extra_is_a_usage_error_exit_2(cli: Cli) -> None:
    result = create_user(cli, "--extra", "novalue", "--json")

    assert result.exit_code == 2
    assert json_error(result)["code"] == "invalid_input"


def test_if_not_exists_prints_the_existing_users_id_and_exits_0(cli: Cli) -> None:
    first = create_user(cli)
    assert first.exit_code == 0

    again = create_user(cli, "--if-not-exists")

    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == first.stdout.strip()


def test_if_not_exists_with_json_prints_the_existing_profile(cli: Cli) -> None:
    created = json.loads(create_user(cli, "--json").stdout)

    again = cli("create-user", "app-x", "Alice", "--if-not-exists", "--json")

    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["id"] == created["id"]


def test_if_not_exists_still_creates_a_missing_user(cli: Cli) -> None:
    result = create_user(cli, "--if-not-exists", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["username"] == "alice"


@pytest.mark.parametrize(
    "command", ["create-user", "disable-user", "delete-user", "set-password", "issue-token", "init", "serve", "migrate"]
)
def test_help_shows_no_type_tags_on_flags(cli: Cli, command: str) -> None:
    result = cli(command, "--help")

    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "--json" in result.stdout or command not in ("create-user", "disable-user", "issue-token")


def test_top_level_help_shows_no_type_tags(cli: Cli) -> None:
    result = cli("--help")

    assert "<bool>" not in result.stdout
    assert "--version" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-user", "--json"], "Missing argument"),
        (["create-user", "app-x", "alice", "--bogus", "--json"], "No such option"),
    ],
)
def test_usage_errors_with_json_are_json_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "JWT_SECRET_KEY")}
    result = subprocess.run(
        [USER_SERVICE, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False
    )

    assert result.returncode == 2, result.stderr
    body = json_error(result)
    assert body["code"] == "invalid_input"
    assert message in body["detail"]


def test_usage_errors_without_json_stay_click_s_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [USER_SERVICE, "create-user"], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )

    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_password_stdin_empty_is_a_usage_error(cli: Cli) -> None:
    result = cli("create-user", "app-x", "alice", "--password-stdin", "--json", input="")

    assert result.exit_code == 2
    assert json_error(result)["code"] == "invalid_input"
    assert PASSWORD not in result.stderr
