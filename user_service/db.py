"""The declarative base, a UTC datetime column type, and the engine factories."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator

from user_service.config import Settings
from user_service.errors import ConfigurationError

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 10_000
WAL_SWITCH_RETRY_SECONDS = 0.05
ENGINE_LOGGING_NAME = "user_service"
# A pooled PostgreSQL connection idle at least this long is pinged before it is used again.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "user_service_idle_since"
SINGLE_STATEMENT = "user_service_single_statement"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for `postgresql://` URLs, whatever SQLAlchemy's default driver is."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or a `file:` URI."""
    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def _prepare_sqlite_file(path: Path, *, create: bool) -> None:
    if path.exists():
        return
    if not create:
        raise ConfigurationError(f"there is no SQLite database at {path}; run `user-service migrate` to create it")
    # Created empty (a valid empty database) and readable by its owner only before SQLite opens it: the file holds
    # password hashes, emails and token digests, and SQLite gives its -wal and -shm files the same mode. When that
    # fails (another process made it first, or the folder is missing or not writable), opening the database fails
    # the same way, as an unreachable database: 503 over HTTP, one line from the CLI.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(settings: Settings, *, create: bool = True) -> Engine:
    """An engine configured for the database the settings name (WAL and a busy timeout on SQLite).

    A SQLite file that does not exist yet is created readable by its owner only; with `create=False` (a caller that
    only looks) it is a ConfigurationError instead, and nothing is created."""
    _drop_result_row_logging(logging.getLogger(f"sqlalchemy.engine.Engine.{ENGINE_LOGGING_NAME}"))
    url = normalize_url(settings.database_url)
    if is_sqlite(url):
        path = sqlite_file(url)
        if path is not None:
            _prepare_sqlite_file(path, create=create)
        # A pool of open connections: opening one costs a file open and the PRAGMAs below, several times the cost
        # of a read. Each connection is used by one thread at a time (checked out and back in), never shared.
        # There is no server whose connections could run out, so a checkout never waits: the pool keeps up to
        # DB_POOL_SIZE + DB_MAX_OVERFLOW connections open and opens more while more threads read at once.
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=settings.db_pool_size + settings.db_max_overflow,
            max_overflow=-1,
            hide_parameters=True,
            logging_name=ENGINE_LOGGING_NAME,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine)
        return engine
    pooled = uses_transaction_pooler(settings)
    connect_args = postgres_connect_args(settings)
    engine = create_engine(
        url,
        # Most recently returned first: under load the same few connections serve every request, the others stay
        # idle until they are pinged or recycled.
        pool_use_lifo=True,
        # Statement parameters hold password hashes and token digests: keep them out of logs and error messages.
        hide_parameters=True,
        logging_name=ENGINE_LOGGING_NAME,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
        connect_args=connect_args,
    )
    _ping_after_idle(engine)
    if not pooled:
        _check_startup_options(engine, settings)
    return engine


def postgres_connect_args(settings: Settings) -> dict[str, Any]:
    """The driver's connection parameters beyond the URL's, for every PostgreSQL connection the service opens (the
    pool's and the event loop's own)."""
    pooled = uses_transaction_pooler(settings)
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_seconds,
        # A database host that vanishes without closing the connection is noticed within seconds, not minutes.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 15_000,
    }
    if not pooled:
        connect_args["options"] = session_options(settings)
    if pooled or not settings.db_prepared_statements:
        # psycopg prepares a statement on the server after a few runs and names it per connection (_pg3_0, ...). A
        # transaction pooler hands that server connection to other clients, whose statements of the same name are
        # other SQL: a client would run someone else's statement with its own parameters.
        connect_args["prepare_threshold"] = None
    return connect_args


def _ping_after_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it has been idle for a while: a database restart or a dropped
    idle connection is then found before a request uses it (the pool replaces it, and every connection as old), while
    a connection going straight from one request to the next costs no extra round trip (SQLAlchemy's pool_pre_ping
    pings on every checkout). A connection that dies between two close uses fails its statement instead: single-row
    reads run once more on a fresh connection (`Database.read_one`), other requests answer 503 once."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(type(exc).__name__) from None


def migration_settings(settings: Settings) -> Settings:
    """The settings `migrate` connects with: MIGRATION_DATABASE_URL, when set, in place of DATABASE_URL (a direct
    connection to PostgreSQL where DATABASE_URL names a pooler)."""
    if settings.migration_database_url is None:
        return settings
    return settings.model_copy(update={"database_url": settings.migration_database_url})


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def session_options(settings: Settings) -> str:
    """PostgreSQL startup options bounding how long one session may wait on a lock, run one statement, or sit idle
    inside a transaction: a row locked elsewhere then costs the requests for that row a bounded wait (and a 503),
    never every connection of the pool."""
    return " ".join(f"-c {name}={milliseconds}" for name, milliseconds in _session_limits(settings).items())


def _session_limits(settings: Settings) -> dict[str, int]:
    return {
        "lock_timeout": _milliseconds(settings.db_lock_timeout_seconds),
        "statement_timeout": _milliseconds(settings.db_statement_timeout_seconds),
        "idle_in_transaction_session_timeout": _milliseconds(settings.db_idle_in_transaction_timeout_seconds),
    }


def uses_transaction_pooler(settings: Settings) -> bool:
    """Whether DATABASE_URL reaches PostgreSQL through a transaction pooler (DB_POOLER=transaction)."""
    return settings.db_pooler == "transaction" and not is_sqlite(settings.database_url)


def transaction_limits(settings: Settings) -> str | None:
    """Behind a transaction pooler, the statement that sets the session limits for the current transaction only
    (startup options do not reach the server, and a session-wide SET would stay on a server connection that other
    clients use next); None where the startup options set them."""
    if not uses_transaction_pooler(settings):
        return None
    calls = ", ".join(f"set_config('{name}', '{ms}', true)" for name, ms in _session_limits(settings).items())
    return f"SELECT {calls}"


def _check_startup_options(engine: Engine, settings: Settings) -> None:
    # A pooler told to ignore the `options` startup parameter (PgBouncer's ignore_startup_parameters) drops the
    # session limits without a word, and a transaction pooler also mixes psycopg's prepared statements between
    # clients. Each new connection checks that its limits arrived: one query when the connection opens.
    expected = str(_session_limits(settings)["lock_timeout"])

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")
            row = cursor.fetchone()
        dbapi_connection.rollback()
        if row is None or str(row[0]) != expected:
            message = (
                "the database connection did not keep its startup options (lock_timeout): a pooler between the "
                "service and PostgreSQL drops them; behind PgBouncer in transaction mode or another transaction "
                "pooler set DB_POOLER=transaction"
            )
            logging.getLogger("user_service.service").error(message)
            raise ConfigurationError(message)


class _NoResultRows(logging.Filter):
    """Drops SQLAlchemy's DEBUG records, which carry result rows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _drop_result_row_logging(logger: logging.Logger) -> None:
    # Rows hold password hashes and token digests: even with SQL logging turned on (INFO shows statements, DEBUG
    # adds rows), this engine never logs a result row. The level itself is left alone: SQLAlchemy keeps its loggers
    # at WARNING unless an operator asks for more, and each enabled record costs time on every query.
    if not any(isinstance(existing, _NoResultRows) for existing in logger.filters):
        logger.addFilter(_NoResultRows())


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode unless it is already. Switching a new file to WAL takes an exclusive lock, and
    SQLite answers "database is locked" at once, without waiting in the busy handler, when another process is
    switching it or writing to it at that moment (two `migrate` started together on a new file): the switch is
    tried again until the busy timeout has passed, and is not needed once the other process has made it."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling is switched off so that writes can BEGIN IMMEDIATE: a writer then
    # waits for the lock up front (busy timeout) instead of failing when it upgrades a read lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get(SINGLE_STATEMENT):
            return
        mode = "IMMEDIATE" if options.get("write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_single_read_engine(engine: Engine) -> Engine:
    """The engine for reads made of one SELECT, run outside a transaction: one statement sees one consistent
    snapshot by itself, and a BEGIN and COMMIT around it would cost more than the read (on PostgreSQL, two more
    round trips). Shares the pool of `engine`."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SINGLE_STATEMENT: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")
