"""Helpers shared by the test modules: hand-made JWTs, the checks of a refused response, the service behind an app.

Fixtures live in tests/conftest.py; these are plain functions and constants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from dotenv import dotenv_values
from sqlalchemy import Engine, inspect
from typer.testing import CliRunner

from tests.conftest import PASSWORD, TEST_SECRET, Cli
from user_service import migrations
from user_service.cli import app as cli_app
from user_service.config import Settings
from user_service.db import make_engine
from user_service.service import UserService

REDIS_URL = "redis://127.0.0.1:6379/0"
DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


# -- hand-made tokens ---------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hmac_signature(signing_input: str, key: str, digest: Callable[..., Any] = hashlib.sha256) -> str:
    return b64url(hmac.new(key.encode(), signing_input.encode(), digest).digest())


def forge(claims: dict[str, Any], *, alg: str = "HS256", key: str = TEST_SECRET, **header: Any) -> str:
    """A JWT signed by hand, so any header and algorithm can be produced without a library refusing it."""
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT', **header})}.{b64json(claims)}"
    digest = DIGESTS.get(alg)
    signature = "" if digest is None else hmac_signature(signing_input, key, digest)
    return f"{signing_input}.{signature}"


def claims_of(token: str, *, issuer: str = "user-service", audience: str = "user-service") -> dict[str, Any]:
    """The verified claims of a token this service issued (time checks off: the test clock is in 2030)."""
    claims: dict[str, Any] = jwt.decode(
        token,
        TEST_SECRET,
        algorithms=["HS256"],
        audience=audience,
        issuer=issuer,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    return claims


# -- refused responses --------------------------------------------------------------------------------------------


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the stable `code` and a sentence in `detail`; returns the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    return body


def assert_refused(response: Any, status: int, code: str) -> None:
    """An error response that hands out no token."""
    assert_error(response, status, code)
    assert "access_token" not in response.text


def assert_unauthorized(response: Any, code: str = "invalid_token") -> None:
    """A 401 with `code` that names the Bearer scheme."""
    assert_error(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- the service behind an app ------------------------------------------------------------------------------------


def service_of(target: Any) -> UserService:
    """The UserService of an app made by create_app, or of the app behind a TestClient or an Api."""
    app = getattr(target, "client", target)
    app = getattr(app, "app", app)
    service: UserService = app.state.service
    return service


# -- the command line ---------------------------------------------------------------------------------------------

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
    "keys",
    "list-users",
    "show-user",
    "namespaces",
    "revoke-sessions",
    "export",
    "import",
    "create-admin-key",
    "admin-keys",
    "revoke-admin-key",
    "reset-mfa",
)
# Commands that hold subcommands (`keys list`): their subcommands take the settings options.
COMMAND_GROUPS = ("keys",)
TABLES = {
    "users",
    "auth_sessions",
    "refresh_tokens",
    "login_failures",
    "signing_keys",
    "admin_keys",
    "one_time_tokens",
    "mfa_factors",
    "mfa_recovery_codes",
    "mfa_challenges",
}
PLACEHOLDER_SECRET = str(dotenv_values(ENV_EXAMPLE)["JWT_SECRET_KEY"])


def create_user(cli: Cli, *options: str, username: str = "alice", password: str = PASSWORD) -> Any:
    return cli("create-user", "app-x", username, "--password-stdin", *options, input=password + "\n")


def one_line_error(result: Any, exit_code: int = 1) -> str:
    """The failure rule of every command: a non-zero exit code (1, or 3 for a conflict, 4 for not found), one line
    on stderr, no traceback."""
    assert result.exit_code == exit_code, result.output
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


def query_plan(engine: Engine, statement: str, parameters: Any = ()) -> str:
    """The database's plan for one statement (in the driver's parameter style), one line a step, with PostgreSQL
    told to avoid sequential scans: on a table this small it would read the table whatever the indexes, and with
    them forbidden it still does when no index can serve."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        rows = cursor.fetchall()
        raw.rollback()
    finally:
        raw.close()
    return "\n".join(str(row[-1]) for row in rows)
