"""Fixtures: every test that touches the database runs once on SQLite and once on PostgreSQL.

The schema comes from the migrations, applied once per run to a template (SQLite: a file copied per test;
PostgreSQL: a database created for the run, its tables emptied before each test). Time moves by the `clock`
fixture, never by sleeping; bcrypt runs at its minimum cost.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from tests.pgbouncer import running_pgbouncer
from user_service import migrations
from user_service.api.app import create_app
from user_service.cli import app as cli_app
from user_service.config import Settings
from user_service.db import make_engine
from user_service.errors import UserNotFound
from user_service.schemas import RegisterRequest
from user_service.service import UserService
from user_service.validation import parse_input

TEST_SECRET = "tests-only-signing-key-0123456789-abcdefghij"
PASSWORD = "correct horse battery"
POSTGRES_ADMIN_URL = os.environ.get(
    "USER_SERVICE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("USER_SERVICE_TEST_REQUIRE_POSTGRES") == "1"
TABLES = (
    "refresh_tokens",
    "auth_sessions",
    "one_time_tokens",
    "admin_keys",
    "mfa_challenges",
    "mfa_recovery_codes",
    "mfa_factors",
    "users",
    "signing_keys",
)
PROFILE_KEYS = {
    "id",
    "namespace",
    "username",
    "email",
    "email_verified",
    "full_name",
    "avatar_url",
    "extra",
    "created_at",
    "updated_at",
    "mfa_enabled",
}
START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


class TemplateDatabase:
    """A migrated database that hands out an empty copy per test."""

    def __init__(self, kind: str, url: str, template_file: Path | None = None, direct_url: str | None = None) -> None:
        self.kind = kind
        self.url = url
        self.template_file = template_file
        # Behind PgBouncer: the PostgreSQL URL past it, where the tests empty and check the tables.
        self.direct_url = direct_url or url

    @property
    def service_env(self) -> dict[str, str]:
        """The settings a service needs for this database (behind PgBouncer: DB_POOLER=transaction)."""
        return {"DB_POOLER": "transaction"} if self.kind == "pgbouncer" else {}

    def fresh(self, tmp_path: Path) -> str:
        if self.template_file is not None:
            target = tmp_path / "user-service.db"
            shutil.copyfile(self.template_file, target)
            return f"sqlite:///{target}"
        engine = create_engine(self.direct_url)
        try:
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        finally:
            engine.dispose()
        return self.url


def _sqlite_template(directory: Path) -> TemplateDatabase:
    path = directory / "template.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}", _env_file=None))  # type: ignore[call-arg]
    migrations.migrate_to(engine, "head")
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return TemplateDatabase("sqlite", f"sqlite:///{path}", path)


def postgres_available() -> str | None:
    """None when PostgreSQL answers at the admin URL, else why not."""
    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL is not reachable at {make_url(POSTGRES_ADMIN_URL).render_as_string()}: {type(exc).__name__}"
    finally:
        engine.dispose()
    return None


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """The URL of an empty PostgreSQL database made for the caller and dropped afterwards; the test is skipped (or
    fails, with USER_SERVICE_TEST_REQUIRE_POSTGRES=1) when PostgreSQL does not answer."""
    problem = postgres_available()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(problem + " (USER_SERVICE_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(problem)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateDatabase]:
    if request.param == "sqlite":
        yield _sqlite_template(tmp_path_factory.mktemp("sqlite-template"))
        return
    with postgres_database("user_service_test") as url:
        engine = make_engine(Settings(database_url=url, _env_file=None))  # type: ignore[call-arg]
        migrations.migrate_to(engine, "head")
        engine.dispose()
        if request.param != "pgbouncer":
            yield TemplateDatabase("postgresql", url)
            return
        # Only where a test asks for it (parametrize "database" with "pgbouncer", indirect): the same PostgreSQL
        # reached through PgBouncer in transaction mode.
        direct = make_url(url)
        with running_pgbouncer(direct.port or 5432) as port:
            pooled = direct.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
            yield TemplateDatabase("pgbouncer", pooled, direct_url=url)


@pytest.fixture
def db_url(database: TemplateDatabase, tmp_path: Path) -> str:
    """An empty, migrated database for this test."""
    return database.fresh(tmp_path)


@pytest.fixture
def schema_restored(db_url: str) -> Iterator[None]:
    """For tests that move the schema: the PostgreSQL database is shared by the run, so hand it back at head."""
    yield
    engine = make_engine(Settings(database_url=db_url, _env_file=None))  # type: ignore[call-arg]
    try:
        migrations.migrate_to(engine, "head")
    finally:
        engine.dispose()


@dataclass
class FakeClock:
    """The service's clock; tests move it instead of sleeping."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "jwt_secret_key": TEST_SECRET,
            "bcrypt_rounds": 4,
            "upload_dir": tmp_path / "uploads",
            # Every TestClient request comes from one address; the per-address limit has tests of its own.
            "rate_limit_enabled": False,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def service(app: FastAPI) -> UserService:
    svc: UserService = app.state.service
    return svc


@dataclass
class Api:
    """Short calls for the requests most tests make."""

    client: TestClient
    defaults: dict[str, str] = field(
        default_factory=lambda: {"namespace": "app-x", "username": "alice", "password": PASSWORD}
    )

    def register(self, **fields: Any) -> httpx.Response:
        body = {**self.defaults, **fields}
        return self.client.post("/auth/register", json=body)

    def login(self, **fields: Any) -> httpx.Response:
        body = {**self.defaults, **fields}
        body = {key: body[key] for key in ("namespace", "username", "password")}
        return self.client.post("/auth/login", json=body)

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.client.post("/auth/refresh", json={"refresh_token": refresh_token})

    def created(self, **fields: Any) -> dict[str, Any]:
        """Register, which must succeed; the new profile."""
        response = self.register(**fields)
        assert response.status_code == 201, response.text
        profile: dict[str, Any] = response.json()
        return profile

    def logged_in(self, **fields: Any) -> dict[str, Any]:
        """Log in, which must succeed; the token pair."""
        response = self.login(**fields)
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        return pair

    def tokens(self, **fields: Any) -> dict[str, Any]:
        """Register (unless the account exists) and log in; the token pair."""
        body = {**self.defaults, **fields}
        service: UserService = self.client.app.state.service  # type: ignore[attr-defined]
        try:
            service.get_user(namespace=body["namespace"], username=body["username"])
        except UserNotFound:
            self.created(**fields)
        return self.logged_in(**fields)

    def me(self, access_token: str) -> httpx.Response:
        return self.client.get("/users/me", headers=bearer(access_token))


MakeApi = Callable[..., Api]
MakeClient = Callable[..., TestClient]
WRONG = "not the password"


@pytest.fixture
def make_client(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[MakeClient]:
    """A TestClient on an app of its own, built with setting overrides, on this test's database and clock; its
    requests come from `peer`."""
    with ExitStack() as stack:

        def build(
            *, storage: Any = None, raise_server_exceptions: bool = True, peer: str = "testclient", **overrides: Any
        ) -> TestClient:
            app = create_app(make_settings(**overrides), clock=clock, storage=storage)
            client = TestClient(app, raise_server_exceptions=raise_server_exceptions, client=(peer, 50000))
            return stack.enter_context(client)

        yield build


@pytest.fixture
def make_api(make_client: MakeClient) -> MakeApi:
    """An Api on its own app, built with setting overrides (and make_client's options)."""

    def build(**options: Any) -> Api:
        return Api(make_client(**options))

    return build


def user_row(service: UserService, username: str = "alice") -> dict[str, Any]:
    with service.engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT password_hash, failed_login_count, locked_until FROM users "
                "WHERE namespace = 'app-x' AND username = :u"
            ),
            {"u": username},
        ).one()
    return dict(row._mapping)


def assert_invalid_credentials(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_credentials"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


def image_bytes(fmt: str, size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass
class Cli:
    """Runs the `user-service` command in-process against this test's database, from an empty folder."""

    runner: CliRunner
    env: dict[str, str]

    def __call__(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(cli_app, list(args), input=input, env=self.env, catch_exceptions=False)


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    env = {
        "DATABASE_URL": db_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "BCRYPT_ROUNDS": "4",
        "UPLOAD_DIR": str(tmp_path / "uploads"),
        "RATE_LIMIT_ENABLED": "false",
    }
    return Cli(CliRunner(), env)


def registration(**fields: Any) -> RegisterRequest:
    """A registration as every door builds it: the fields validated by the shared rules."""
    return parse_input(RegisterRequest, fields)
