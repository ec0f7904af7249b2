"""The `user-service` command as an operator scripts it: set-up, migrations, users and tokens.

Commands run in-process through Typer's runner (the `cli` fixture); whatever they create is checked through the
HTTP API or the database, the way a user would notice it.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import jwt
import pytest
import typer.main
from dotenv import dotenv_values
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from typer.testing import CliRunner

from tests.conftest import PASSWORD, PROFILE_KEYS, TEST_SECRET, Api, Cli
from user_service import __version__, migrations
from user_service.api.app import create_app
from user_service.cli import _server
from user_service.cli import app as cli_app
from user_service.config import Settings, secret_problem
from user_service.db import make_engine

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
COMMANDS = (
    "init",
    "migrate",
    "serve",
    "create-user",
    "issue-token",
    "disable-user",
    "enable-user",
    "delete-user",
    "set-password",
    "prune-sessions",
)
TABLES = {"users", "auth_sessions", "refresh_tokens"}
PLACEHOLDER_SECRET = str(dotenv_values(ENV_EXAMPLE)["JWT_SECRET_KEY"])


# -- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture
def web(make_settings: Callable[..., Settings]) -> Iterator[Api]:
    """The HTTP API on the CLI's database. The CLI stamps tokens with the wall clock, so this app reads it too."""
    with TestClient(create_app(make_settings())) as client:
        yield Api(client)


@pytest.fixture
def schema_restored(db_url: str) -> Iterator[None]:
    """For tests that move the schema: the PostgreSQL database is shared by the run, so hand it back at head."""
    yield
    engine = make_engine(Settings(database_url=db_url, _env_file=None))  # type: ignore[call-arg]
    try:
        migrations.migrate_to(engine, "head")
    finally:
        engine.dispose()


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Stands in for the uvicorn runner; records what `serve` would start, and the settings it exported."""
    calls: list[dict[str, Any]] = []

    def run(settings: Settings, **options: Any) -> None:
        exported = {name: os.environ.get(name) for name in ("DATABASE_URL", "JWT_SECRET_KEY", "BCRYPT_ROUNDS")}
        calls.append({"settings": settings, "exported": exported, **options})

    monkeypatch.setattr(_server, "run_server", run)
    # `serve` hands its settings to uvicorn's workers through os.environ; no later test may inherit them.
    with patch.dict(os.environ):
        yield calls


def create_user(cli: Cli, *options: str, username: str = "alice", password: str = PASSWORD) -> Any:
    return cli("create-user", "app-x", username, "--password-stdin", *options, input=password + "\n")


def one_line_error(result: Any) -> str:
    """The failure rule of every command: exit 1, one line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message: str = result.stderr.strip()
    assert message, result.output
    assert "\n" not in message, result.stderr
    return message


def revision_of(url: str) -> str | None:
    engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()


def tables_of(url: str) -> set[str]:
    engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
    try:
        return set(inspect(engine).get_table_names()) & TABLES
    finally:
        engine.dispose()


def bare(*args: str) -> Any:
    """The command without any database or settings: what `--help` and `--version` need."""
    return CliRunner().invoke(cli_app, list(args), catch_exceptions=False)


def http_message(response: Any) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(str(item["msg"]) for item in detail)


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
    if command is not None:
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


# -- create-user --------------------------------------------------------------------------------------------------


def test_create_user_prints_the_id_and_the_user_can_log_in(cli: Cli, web: Api) -> None:
    result = create_user(cli)

    assert result.exit_code == 0, result.output
    user_id = uuid.UUID(result.stdout.strip())
    pair = web.login().json()
    assert web.me(pair["access_token"]).json()["id"] == str(user_id)


def test_create_user_asks_for_the_password_twice(cli: Cli, web: Api) -> None:
    result = cli("create-user", "app-x", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    uuid.UUID(result.stdout.strip().splitlines()[-1])
    assert PASSWORD not in result.output
    assert web.login().status_code == 200


def test_create_user_asks_again_after_a_mismatch(cli: Cli, web: Api) -> None:
    answers = f"first-try-password\nsecond-try-password\n{PASSWORD}\n{PASSWORD}\n"

    result = cli("create-user", "app-x", "alice", input=answers)

    assert result.exit_code == 0, result.output
    assert "do not match" in result.stdout
    assert web.login().status_code == 200


def test_create_user_mismatch_without_another_try_creates_nobody(cli: Cli, web: Api) -> None:
    result = cli("create-user", "app-x", "alice", input="first-try-password\nsecond-try-password\n")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "first-try-password" not in result.output
    assert web.login(password="first-try-password").status_code == 401
    one_line_error(cli("issue-token", "app-x", "alice"))


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

    message = one_line_error(result)
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

    message = one_line_error(result)
    assert phrase in message
    assert result.stdout == ""
    if http_body is not None:
        response = web.register(**http_body)
        assert response.status_code == 422
        assert phrase in http_message(response)
    assert web.login(password=password).status_code == 401


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

    one_line_error(result)
    assert result.stdout == ""


def test_issue_token_refuses_a_disabled_user(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0
    assert cli("disable-user", "app-x", "alice").exit_code == 0

    result = cli("issue-token", "app-x", "alice")

    assert "disabled" in one_line_error(result)
    assert result.stdout == ""


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
    one_line_error(cli("issue-token", "app-x", "alice"))
    assert create_user(cli).exit_code == 0


def test_delete_user_without_yes_asks_first(cli: Cli) -> None:
    assert create_user(cli).exit_code == 0

    declined = cli("delete-user", "app-x", "alice", input="n\n")

    assert declined.exit_code == 1
    assert cli("issue-token", "app-x", "alice").exit_code == 0
    confirmed = cli("delete-user", "app-x", "alice", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    one_line_error(cli("issue-token", "app-x", "alice"))


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
