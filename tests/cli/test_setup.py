"""`user-service` set-up as an operator scripts it: the command itself, `init`, `migrate`, and where every command
reads its settings from (options, env file, environment), including an unusable secret."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import typer.main
from dotenv import dotenv_values

from tests.conftest import PASSWORD, TEST_SECRET, Api, Cli
from tests.helpers import (
    COMMAND_GROUPS,
    COMMANDS,
    ENV_EXAMPLE,
    PLACEHOLDER_SECRET,
    TABLES,
    bare,
    create_user,
    one_line_error,
    revision_of,
    tables_of,
)
from user_service import __version__, migrations
from user_service.cli import app as cli_app
from user_service.config import secret_problem

# -- the command itself -------------------------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = bare("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"user-service {__version__}"


def test_every_documented_command_is_registered() -> None:
    assert set(typer.main.get_command(cli_app).commands) == set(COMMANDS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [None, *COMMANDS])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_zero(command: str | None, flag: str) -> None:
    args = [flag] if command is None else [command, flag]
    result = bare(*args)
    assert result.exit_code == 0, result.output
    assert f"Usage: user-service {command or ''}".strip() in result.stdout
    if command is not None and command not in COMMAND_GROUPS:
        # Every command reads the same settings, and each can be pointed elsewhere.
        assert "--env-file" in result.stdout
        assert "--database-url" in result.stdout


# -- init ---------------------------------------------------------------------------------------------------------


def test_init_sets_up_an_empty_folder(cli: Cli, db_url: str, schema_restored: None) -> None:
    assert cli("migrate", "--revision", "base", "--yes").exit_code == 0
    del cli.env["UPLOAD_DIR"]

    result = cli("init")

    assert result.exit_code == 0, result.output
    env_file = Path(".env")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    written, example = dotenv_values(env_file), dotenv_values(ENV_EXAMPLE)
    secret = str(written["JWT_SECRET_KEY"])
    assert secret != PLACEHOLDER_SECRET
    assert secret_problem(secret) is None
    assert {**written, "JWT_SECRET_KEY": None} == {**example, "JWT_SECRET_KEY": None}
    assert Path("uploads").is_dir()
    assert revision_of(db_url) == migrations.head_revision()
    assert tables_of(db_url) == TABLES
    assert "user-service serve" in result.stdout


def test_second_init_refuses_and_keeps_the_file(cli: Cli) -> None:
    assert cli("init").exit_code == 0
    before = Path(".env").read_bytes()

    message = one_line_error(cli("init"))

    assert "--force" in message
    assert Path(".env").read_bytes() == before


def test_init_force_writes_a_new_secret(cli: Cli) -> None:
    assert cli("init").exit_code == 0
    first = dotenv_values(".env")["JWT_SECRET_KEY"]

    result = cli("init", "--force")

    assert result.exit_code == 0, result.output
    second = dotenv_values(".env")["JWT_SECRET_KEY"]
    assert second != first
    assert secret_problem(str(second)) is None
    assert stat.S_IMODE(Path(".env").stat().st_mode) == 0o600


@pytest.mark.parametrize("environment", ["no DATABASE_URL", "another DATABASE_URL"])
def test_init_database_url_is_written_and_migrated(
    cli: Cli, db_url: str, tmp_path: Path, schema_restored: None, environment: str
) -> None:
    assert cli("migrate", "--revision", "base", "--yes").exit_code == 0
    other = tmp_path / "other.db"
    if environment == "no DATABASE_URL":
        del cli.env["DATABASE_URL"]
    else:
        cli.env["DATABASE_URL"] = f"sqlite:///{other}"

    result = cli("init", "--database-url", db_url)

    assert result.exit_code == 0, result.output
    assert dotenv_values(".env")["DATABASE_URL"] == db_url
    # --database-url overrides the environment here as in every other command.
    assert revision_of(db_url) == migrations.head_revision()
    assert not other.exists()


def test_init_env_file_names_the_file_to_write(cli: Cli) -> None:
    result = cli("init", "--env-file", "conf/service.env")

    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(Path("conf/service.env").stat().st_mode) == 0o600
    assert not Path(".env").exists()


# -- migrate ------------------------------------------------------------------------------------------------------


def current_and_head(result: Any) -> tuple[str, str]:
    assert result.exit_code == (0 if "up to date" in result.stdout else 1), result.output
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return fields["current"].strip(), fields["head"].strip()


def test_migrate_down_and_up_again(cli: Cli, db_url: str, schema_restored: None) -> None:
    head = migrations.head_revision()
    assert cli("migrate").exit_code == 0
    assert current_and_head(cli("migrate", "--current")) == (head, head)

    downgraded = cli("migrate", "--revision", "base", "--yes")
    assert downgraded.exit_code == 0, downgraded.output
    assert tables_of(db_url) == set()
    behind = cli("migrate", "--current")
    assert current_and_head(behind) == ("base", head)
    assert "user-service migrate" in behind.stdout

    upgraded = cli("migrate")
    assert upgraded.exit_code == 0, upgraded.output
    assert tables_of(db_url) == TABLES
    assert revision_of(db_url) == head


def test_migrate_up_to_a_named_revision(cli: Cli, db_url: str, schema_restored: None) -> None:
    head = migrations.head_revision()
    assert cli("migrate", "--revision", "base", "--yes").exit_code == 0

    result = cli("migrate", "--revision", head)

    assert result.exit_code == 0, result.output
    assert revision_of(db_url) == head


def test_migrate_to_an_unknown_revision_fails(cli: Cli, db_url: str) -> None:
    message = one_line_error(cli("migrate", "--revision", "0123456789ab"))
    assert "0123456789ab" in message
    assert revision_of(db_url) == migrations.head_revision()


def test_migrate_at_head_keeps_the_data(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0
    assert cli("migrate").exit_code == 0
    assert cli("issue-token", "app-x", "alice").exit_code == 0


# -- where the settings come from ---------------------------------------------------------------------------------


@pytest.fixture(params=["--env-file", "--database-url"])
def override(request: pytest.FixtureRequest, cli: Cli, db_url: str, tmp_path: Path) -> list[str]:
    """An option that points a command at the test database while the runner's environment points elsewhere."""
    if request.param == "--env-file":
        settings_file = tmp_path / "service.env"
        settings_file.write_text("".join(f"{name}={value}\n" for name, value in cli.env.items()), encoding="utf-8")
        cli.env.clear()
        return ["--env-file", str(settings_file)]
    cli.env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    return ["--database-url", db_url]


def test_every_command_honours_the_settings_options(
    cli: Cli, web: Api, db_url: str, override: list[str], uvicorn_calls: list[dict[str, Any]]
) -> None:
    # Without the option the command would use another, un-migrated database.
    assert "user-service migrate" in one_line_error(create_user(cli))

    assert create_user(cli, *override).exit_code == 0
    issued = cli("issue-token", "app-x", "alice", *override)
    assert issued.exit_code == 0, issued.output
    assert web.me(issued.stdout.strip()).status_code == 200
    assert cli("disable-user", "app-x", "alice", *override).exit_code == 0
    assert web.login().status_code == 403
    assert cli("enable-user", "app-x", "alice", *override).exit_code == 0
    assert web.login().status_code == 200
    head = migrations.head_revision()
    assert current_and_head(cli("migrate", "--current", *override)) == (head, head)
    assert cli("migrate", *override).exit_code == 0
    assert cli("delete-user", "app-x", "alice", "--yes", *override).exit_code == 0
    assert web.login().status_code == 401

    served = cli("serve", *override)

    assert served.exit_code == 0, served.output
    assert len(uvicorn_calls) == 1
    assert uvicorn_calls[0]["exported"] == {"DATABASE_URL": db_url, "JWT_SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4"}


UNMIGRATED_COMMANDS = [
    pytest.param(["create-user", "app-x", "alice", "--password-stdin"], id="create-user"),
    pytest.param(["issue-token", "app-x", "alice"], id="issue-token"),
    pytest.param(["disable-user", "app-x", "alice"], id="disable-user"),
    pytest.param(["enable-user", "app-x", "alice"], id="enable-user"),
    pytest.param(["delete-user", "app-x", "alice", "--yes"], id="delete-user"),
    pytest.param(["create-admin-key", "--name", "backend"], id="create-admin-key"),
    pytest.param(["admin-keys"], id="admin-keys"),
    pytest.param(["revoke-admin-key", "backend"], id="revoke-admin-key"),
    pytest.param(["serve"], id="serve"),
]


@pytest.mark.parametrize("args", UNMIGRATED_COMMANDS)
@pytest.mark.parametrize("target", ["fresh SQLite file", "test database at base"])
def test_commands_on_an_unmigrated_database_say_to_migrate(
    cli: Cli,
    tmp_path: Path,
    schema_restored: None,
    uvicorn_calls: list[dict[str, Any]],
    args: list[str],
    target: str,
) -> None:
    if target == "fresh SQLite file":
        args = [*args, "--database-url", f"sqlite:///{tmp_path / 'fresh.db'}"]
    else:
        assert cli("migrate", "--revision", "base", "--yes").exit_code == 0

    result = cli(*args, input=PASSWORD + "\n")

    assert "user-service migrate" in one_line_error(result)
    assert uvicorn_calls == []


BAD_SECRETS = [
    pytest.param(None, id="missing"),
    pytest.param(PLACEHOLDER_SECRET, id="placeholder"),
    pytest.param("Kx9-short-Q2z", id="short"),
    pytest.param("ab" * 24, id="low variety"),
]


@pytest.mark.parametrize("command", [["issue-token", "app-x", "alice"], ["serve"]], ids=["issue-token", "serve"])
@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_unusable_secret_is_refused_with_a_reason(
    cli: Cli, uvicorn_calls: list[dict[str, Any]], command: list[str], secret: str | None
) -> None:
    assert create_user(cli).exit_code == 0
    if secret is None:
        del cli.env["JWT_SECRET_KEY"]
    else:
        cli.env["JWT_SECRET_KEY"] = secret

    result = cli(*command)

    message = one_line_error(result)
    assert "JWT_SECRET_KEY" in message
    if secret is not None:
        assert secret[:10] not in result.output
    assert result.stdout == ""
    assert uvicorn_calls == []
