"""The systems under test: how each one is started, which accounts it gets, and what each scenario sends it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from seeding import seed_by_sql, seed_peer_by_sql
from servers import Server, ServerPool, free_port, http, post_json
from setup_env import HERE, project_bin

from user_service.config import Settings

PEERS = HERE / "peers"
NAMESPACE = "bench"
# The benchmark accounts' password, on throw-away databases: not common, no username or namespace inside.
PASSWORD = "Kq7v-Xw3p-Lm9z-Rt4n"  # noqa: S105
BCRYPT_ROUNDS = 10
ACCESS_TOKEN_TTL_SECONDS = 900
UPLOAD_USERS = 16
LOGIN_WORKERS = 4
MULTIPART_BOUNDARY = "benchmark-boundary-7f3a9c"


def _pool_setting(name: str) -> int:
    """A pool setting as user-service's servers get it: from the benchmark's environment, or the service's default."""
    value = os.environ.get(name.upper())
    return int(value) if value else int(Settings.model_fields[name].default)


# How many connections the service's pool can hold at most, DB_POOL_SIZE + DB_MAX_OVERFLOW.
SERVICE_POOL_SIZE = _pool_setting("db_pool_size") + _pool_setting("db_max_overflow")


def pgbouncer_launcher() -> Callable[..., contextlib.AbstractContextManager[int]]:
    """The e2e tests' PgBouncer launcher (tests/pgbouncer.py), so the benchmark runs the configuration they prove."""
    sys.path.insert(0, str(HERE.parent))
    from tests.pgbouncer import running_pgbouncer

    launcher: Callable[..., contextlib.AbstractContextManager[int]] = running_pgbouncer
    return launcher


class PrepareError(RuntimeError):
    """A system did not accept the accounts or logins the benchmark sets up."""


@dataclass(frozen=True)
class SystemSpec:
    key: str
    label: str
    kind: str  # "user-service", "fastapi-users" or "ceiling"
    database: str | None = None  # "sqlite" or "postgresql"
    workers: int = 1
    metrics: bool = False  # serve --metrics-port
    storage: str = "local"  # user-service's AVATAR_STORAGE: "local" or "s3"
    pooler: bool = False  # PostgreSQL through PgBouncer in transaction mode (DB_POOLER=transaction)
    prepared_statements: bool = True  # DB_PREPARED_STATEMENTS (the pooler setting turns them off as well)
    # A copy of system `variant_of` on a database of its own, seeded with `users` users instead of run.py's --users.
    variant_of: str | None = None
    users: int | None = None


SYSTEMS: dict[str, SystemSpec] = {
    spec.key: spec
    for spec in (
        SystemSpec("us-sqlite", "user-service (SQLite)", "user-service", "sqlite"),
        SystemSpec("us-pg", "user-service (PostgreSQL)", "user-service", "postgresql"),
        SystemSpec("us-pgbouncer", "user-service (PG via PgBouncer)", "user-service", "postgresql", pooler=True),
        SystemSpec(
            "us-pg-noprep", "user-service (PG, unprepared)", "user-service", "postgresql", prepared_statements=False
        ),
        SystemSpec("fau", "fastapi-users (SQLite)", "fastapi-users", "sqlite"),
        SystemSpec("fau-pg", "fastapi-users (PostgreSQL)", "fastapi-users", "postgresql"),
        SystemSpec("ceiling", "ceiling (bare FastAPI / bcrypt)", "ceiling"),
        SystemSpec("us-sqlite-2w", "user-service (SQLite, 2 workers)", "user-service", "sqlite", workers=2),
        SystemSpec("us-sqlite-metrics", "user-service (SQLite, metrics on)", "user-service", "sqlite", metrics=True),
        SystemSpec("us-s3", "user-service (SQLite, S3 storage)", "user-service", "sqlite", storage="s3"),
    )
}


def on_users(key: str, users: int) -> str:
    """The key of system `key` run on a database of its own seeded with `users` users (registered on first use), so
    that one run measures the same system on two user bases, alternated round by round like any two systems."""
    variant = f"{key}@{users}"
    if variant not in SYSTEMS:
        spec = SYSTEMS[key]
        label = f"{spec.label.removesuffix(')')}, {users:,} users)"
        SYSTEMS[variant] = replace(spec, key=variant, label=label, variant_of=key, users=users)
    return variant


@dataclass(frozen=True)
class Post:
    """A POST as wrk sends it: path, content type and body (or a body template with %s for a unique name)."""

    path: str
    content_type: str
    body: str


def base_env() -> dict[str, str]:
    """A clean environment: none of the caller's settings (DATABASE_URL, a .env's values) leak into a server, except
    the pool's size, which a run may set to compare sizes."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "DB_POOL_SIZE", "DB_MAX_OVERFLOW")
    return {name: os.environ[name] for name in keep if name in os.environ}


def postgres_reachable(url: str) -> bool:
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=1.0):
            pass
    except OSError:
        return False
    try:
        import psycopg  # noqa: F401 (only whether the driver is installed)
    except ImportError:
        return False
    return True


def _with_database(url: str, name: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parsed._replace(path="/" + name))


def with_driver(url: str, driver: str) -> str:
    """A PostgreSQL `url` with SQLAlchemy's `driver` named in its scheme (postgresql+asyncpg://...)."""
    parsed = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parsed._replace(scheme=f"postgresql+{driver}"))


class PostgresDatabase:
    """A database of the benchmark's own on a PostgreSQL server; dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin_url = admin_url
        self.name = f"us_bench_{secrets.token_hex(4)}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
            row = connection.execute("SHOW server_version").fetchone()
        self.server_version = str(row[0]) if row else "unknown"
        self.url = _with_database(admin_url, self.name)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class Target:
    """A started system and what the scenarios send it."""

    spec: SystemSpec
    server: Server
    env: dict[str, str] = field(repr=False)
    me_path: str = "/users/me"
    health_path: str = "/health"
    login: Post | None = None
    register: Post | None = None
    refresh_path: str | None = None
    upload_path: str | None = None

    @property
    def url(self) -> str:
        return self.server.base_url

    @property
    def label(self) -> str:
        return self.spec.label

    def log_in(self, account: str) -> tuple[str, str | None]:
        """An access token (and, where the system has them, a refresh token) for `account`."""
        if self.spec.kind == "user-service":
            status, body = post_json(
                self.url + "/auth/login", {"namespace": NAMESPACE, "username": account, "password": PASSWORD}
            )
            if status != 200:
                raise PrepareError(f"{self.label}: login of {account} answered {status}: {body}")
            return str(body["access_token"]), str(body["refresh_token"])
        if self.spec.kind == "fastapi-users":
            form = urllib.parse.urlencode({"username": f"{account}@example.com", "password": PASSWORD}).encode()
            status, raw = http(
                "POST", self.url + "/auth/jwt/login", body=form, content_type="application/x-www-form-urlencoded"
            )
            if status != 200:
                raise PrepareError(f"{self.label}: login of {account} answered {status}: {raw[:300]!r}")
            return str(json.loads(raw)["access_token"]), None
        return "", None

    def log_in_many(self, account: str, count: int) -> list[tuple[str, str | None]]:
        with ThreadPoolExecutor(LOGIN_WORKERS) as pool:
            return list(pool.map(lambda _: self.log_in(account), range(count)))

    def create_account(self, account: str) -> None:
        """Register `account` (an existing one is fine: the database outlives a restarted server)."""
        if self.spec.kind == "user-service":
            payload: dict[str, object] = {
                "namespace": NAMESPACE,
                "username": account,
                "password": PASSWORD,
                "email": f"{account}@example.com",
                "full_name": f"Benchmark {account.title()}",
                "extra": {"plan": "pro", "team": "benchmarks"},
            }
        elif self.spec.kind == "fastapi-users":
            payload = {"email": f"{account}@example.com", "password": PASSWORD}
        else:
            return
        status, body = post_json(self.url + "/auth/register", payload)
        if status not in (201, 409) and not (status == 400 and "ALREADY_EXISTS" in json.dumps(body)):
            raise PrepareError(f"{self.label}: registering {account} answered {status}: {body}")


def upload_accounts() -> list[str]:
    return [f"up{index:02d}" for index in range(UPLOAD_USERS)]


class Launcher:
    """Starts systems with the benchmark's settings in a temporary folder; migrates each database once."""

    def __init__(
        self,
        pool: ServerPool,
        workdir: Path,
        *,
        peer_python: Path | None,
        postgres: PostgresDatabase | None,
        log_level: str,
        access_log: bool = True,
        users: int = 0,
    ) -> None:
        self.pool = pool
        self.workdir = workdir
        self.peer_python = peer_python
        self.postgres = postgres
        self.log_level = log_level
        self.access_log = access_log
        # Users seeded by SQL into each system's database before its accounts are made: seconds taken per system.
        self.users = users
        self.seeded: dict[str, float] = {}
        self._seeded_urls: set[str] = set()
        self.secret = secrets.token_urlsafe(48)
        self.migrated: set[str] = set()
        self.starts = 0
        self.s3_endpoint: str | None = None
        # Every PostgreSQL system but us-pg gets a fresh database of its own, dropped by close().
        self.databases: dict[str, PostgresDatabase] = {}
        self.pgbouncer_port: int | None = None
        self._stack = contextlib.ExitStack()

    def _postgres_for(self, spec: SystemSpec) -> PostgresDatabase:
        if self.postgres is None:
            raise PrepareError("PostgreSQL is not available")
        if spec.key == "us-pg":
            return self.postgres
        if spec.key not in self.databases:
            self.databases[spec.key] = PostgresDatabase(self.postgres.admin_url)
        return self.databases[spec.key]

    def _through_pgbouncer(self, url: str) -> str:
        """`url` with PgBouncer's address: the e2e tests' PgBouncer in transaction mode, started once, its server
        pool as large as the service's pool can grow (DB_POOL_SIZE + DB_MAX_OVERFLOW), so only the pooler differs."""
        parsed = urllib.parse.urlsplit(url)
        if self.pgbouncer_port is None:
            running_pgbouncer = pgbouncer_launcher()
            self.pgbouncer_port = self._stack.enter_context(
                running_pgbouncer(parsed.port or 5432, default_pool_size=str(SERVICE_POOL_SIZE))
            )
        return urllib.parse.urlunsplit(parsed._replace(netloc=f"{parsed.username}@127.0.0.1:{self.pgbouncer_port}"))

    def database_url(self, spec: SystemSpec) -> str:
        if spec.database == "postgresql":
            url = self._postgres_for(spec).url
            return self._through_pgbouncer(url) if spec.pooler else url
        return f"sqlite:///{self.workdir / (spec.key + '.db')}"

    def _seed(self, spec: SystemSpec, url: str) -> None:
        """Seed the system's users (its own count, else `self.users`) into the database at `url` once (a restarted
        server finds them there)."""
        users = spec.users if spec.users is not None else self.users
        if not users or spec.database is None or url in self._seeded_urls:
            return
        print(f"seeding {users:,} users into {spec.label}'s database", flush=True)
        seed = seed_by_sql if spec.kind == "user-service" else seed_peer_by_sql
        try:
            seconds = seed(spec.database, url, users)
        except Exception as error:
            raise PrepareError(f"seeding {spec.label}'s database failed: {error}") from error
        self._seeded_urls.add(url)
        self.seeded[spec.key] = round(seconds, 1)
        print(f"  {users:,} users seeded in {seconds:.1f} s", flush=True)

    def close(self) -> None:
        """Stop PgBouncer and drop the databases made for single systems."""
        self._stack.close()
        for database in self.databases.values():
            try:
                database.drop()
            except Exception as error:
                print(f"could not drop PostgreSQL database {database.name}: {error}", file=sys.stderr)

    def _database_env(self, spec: SystemSpec) -> dict[str, str]:
        env = {"DATABASE_URL": self.database_url(spec)}
        if spec.pooler:
            env |= {"DB_POOLER": "transaction", "MIGRATION_DATABASE_URL": self._postgres_for(spec).url}
        if not spec.prepared_statements:
            env["DB_PREPARED_STATEMENTS"] = "false"
        return env

    def _user_service_env(self, spec: SystemSpec, upload_dir: Path) -> dict[str, str]:
        return {
            **base_env(),
            **self._database_env(spec),
            "JWT_SECRET_KEY": self.secret,
            "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
            "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TOKEN_TTL_SECONDS),
            # The benchmark drives every request from one address: the per-address limit would refuse most.
            "RATE_LIMIT_ENABLED": "false",
            "UPLOAD_DIR": str(upload_dir),
            "LOG_LEVEL": self.log_level.upper(),
            **(self._s3_env() if spec.storage == "s3" else {}),
        }

    def _s3_env(self) -> dict[str, str]:
        """Settings and credentials for an S3-compatible server on loopback (moto's server mode, started once)."""
        credentials = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        # moto accepts any credentials; boto3 reads them from the environment, in the servers and here.
        os.environ.update(credentials)
        if self.s3_endpoint is None:
            import boto3

            port = free_port()
            command = [str(project_bin("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
            server = self.pool.start(
                "moto",
                command,
                port=port,
                ready_path="/moto-api/",
                env={**base_env(), **credentials},
                cwd=self.workdir,
                log_path=self.workdir / "moto.log",
                cpus=None,
            )
            client = boto3.session.Session().client("s3", endpoint_url=server.base_url)
            client.create_bucket(Bucket="avatars")
            self.s3_endpoint = server.base_url
        return {
            **credentials,
            "AVATAR_STORAGE": "s3",
            "S3_BUCKET": "avatars",
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "S3_REGION": "us-east-1",
        }

    def _migrate(self, spec: SystemSpec, env: dict[str, str]) -> None:
        url = env.get("MIGRATION_DATABASE_URL", env["DATABASE_URL"])
        if url in self.migrated:
            return
        result = subprocess.run(
            [str(project_bin("user-service")), "migrate"],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise PrepareError(f"migrate failed for {spec.label}:\n{result.stdout}{result.stderr}")
        self.migrated.add(url)

    def start(
        self,
        spec: SystemSpec,
        cpus: Sequence[int] | None,
        *,
        start_cpus: Sequence[int] | None = None,
        suffix: str = "",
    ) -> Target:
        """Start `spec` on a free port (on `start_cpus`, then pinned to `cpus`) and return what the scenarios need to
        drive it."""
        self.starts += 1
        port = free_port()
        name = spec.key + suffix
        log_path = self.workdir / f"{name}-{self.starts}.log"

        def launch(command: list[str], env: dict[str, str], ready_path: str) -> Server:
            return self.pool.start(
                name,
                command,
                port=port,
                ready_path=ready_path,
                env=env,
                cwd=self.workdir,
                log_path=log_path,
                cpus=cpus,
                start_cpus=start_cpus,
            )

        if spec.kind == "user-service":
            env = self._user_service_env(spec, self.workdir / f"uploads-{name}")
            self._migrate(spec, env)
            self._seed(spec, env.get("MIGRATION_DATABASE_URL", env["DATABASE_URL"]))
            command = [str(project_bin("user-service")), "serve", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--workers", str(spec.workers)]
            if not self.access_log:
                command.append("--no-access-log")
            if spec.metrics:
                command += ["--metrics-port", str(free_port())]
            server = launch(command, env, "/health")
            body = json.dumps({"namespace": NAMESPACE, "username": "storm", "password": PASSWORD})
            template = json.dumps({"namespace": NAMESPACE, "username": "%s", "password": PASSWORD})
            return Target(
                spec,
                server,
                env,
                login=Post("/auth/login", "application/json", body),
                register=Post("/auth/register", "application/json", template),
                refresh_path="/auth/refresh",
                upload_path="/users/me/avatar",
            )
        uvicorn = ["-m", "uvicorn", "--app-dir", str(PEERS), "--host", "127.0.0.1", "--port", str(port)]
        uvicorn += ["--log-level", self.log_level.lower()]
        if not self.access_log:
            uvicorn.append("--no-access-log")
        if spec.kind == "fastapi-users":
            if self.peer_python is None:
                raise PrepareError("the fastapi-users environment is not set up")
            # Its documented set-ups: aiosqlite for SQLite, asyncpg for PostgreSQL; tables made at start-up.
            url = self.database_url(spec)
            env = {
                **base_env(),
                "FAU_DATABASE_URL": with_driver(url, "asyncpg")
                if spec.database == "postgresql"
                else url.replace("sqlite://", "sqlite+aiosqlite://", 1),
                "FAU_JWT_SECRET": self.secret,
                "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
                "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TOKEN_TTL_SECONDS),
            }
            command = [str(self.peer_python), *uvicorn, "fastapi_users_app:app"]
            server = launch(command, env, "/health")
            self._seed(spec, with_driver(url, "psycopg") if spec.database == "postgresql" else url)
            form = urllib.parse.urlencode({"username": "storm@example.com", "password": PASSWORD})
            template = json.dumps({"email": "%s@example.com", "password": PASSWORD})
            return Target(
                spec,
                server,
                env,
                login=Post("/auth/jwt/login", "application/x-www-form-urlencoded", form),
                register=Post("/auth/register", "application/json", template),
            )
        env = {**base_env(), "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS), "CEILING_PASSWORD": PASSWORD}
        command = [str(project_bin("python")), *uvicorn, "ceiling_app:app"]
        server = launch(command, env, "/ping")
        body = json.dumps({"namespace": NAMESPACE, "username": "storm", "password": PASSWORD})
        return Target(
            spec,
            server,
            env,
            me_path="/ping",
            health_path="/ping",
            login=Post("/bcrypt", "application/json", body),
            upload_path="/upload",
        )


def make_png(size_limit: int, *, width: int = 1024, seed: int = 7) -> bytes:
    """A PNG of random noise (so it cannot shrink) as large as fits in `size_limit` bytes."""
    from PIL import Image

    rng = random.Random(seed)
    row = width * 3 + 1
    height = max(1, (size_limit - 4096) // row)
    for _ in range(64):
        image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=0)
        if buffer.tell() <= size_limit:
            return buffer.getvalue()
        height -= 4
    raise ValueError(f"no PNG of width {width} fits in {size_limit} bytes")


def multipart(data: bytes, *, filename: str = "avatar.png", media_type: str = "image/png") -> tuple[bytes, str]:
    """A multipart/form-data body with one `file` field, and its content type."""
    head = (
        f"--{MULTIPART_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"
