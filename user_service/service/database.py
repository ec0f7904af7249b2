"""The database plumbing behind one small object: pools, the connection an event loop keeps for its reads, the
writers' turn on SQLite, and the translation of driver errors. The domain modules call it and never see a driver.

Reads of one row run outside a transaction (one statement sees one consistent snapshot by itself); writes are one
short transaction each, where the checks that must hold under concurrency are made by the database itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast, overload

from sqlalchemy import Connection, Dialect, Engine, Executable, Table, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from user_service import telemetry
from user_service.config import Settings
from user_service.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    make_engine,
    make_single_read_engine,
    postgres_connect_args,
    transaction_limits,
)
from user_service.errors import DatabaseError, DatabaseUnavailable
from user_service.service.loop_reads import LOOP_READ_CONNECTIONS, Connect, LoopReads

log = logging.getLogger("user_service.service")

_PING = text("SELECT 1")
# How the two databases name a foreign-key failure in their messages (PostgreSQL's SQLSTATE 23503 class name, and
# SQLite's text).
_REFERENCE_MARKERS = ("ForeignKeyViolation", "FOREIGN KEY constraint failed")
# SQLSTATEs of a prepared statement that already exists (42P05) or does not (26000) on the server connection.
_PREPARED_STATEMENT_STATES = ("42P05", "26000")
_POOLER_HINT = (
    "PostgreSQL is reached through a transaction pooler (PgBouncer in transaction mode, RDS Proxy, Supavisor, pgcat); "
    "set DB_POOLER=transaction"
)


# What a transaction hands the domain modules: they execute the prebuilt statements on it and read rows by name.
Transaction = Connection


class IntegrityViolation(Exception):
    """A write the database refused to keep consistent."""


class UniqueViolation(IntegrityViolation):
    """A unique constraint refused the write (a name or an address already taken, perhaps by a racing request)."""


class ReferenceViolation(IntegrityViolation):
    """A row the write refers to is gone (a user deleted while their request was in flight)."""


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        # A refused or lost connection, a server-side timeout, or no free connection in the pool in time.
        telemetry.database_error("pool_timeout" if isinstance(exc, PoolTimeout) else "connection")
        if "unsupported startup parameter" in str(getattr(exc, "orig", "")):
            log.error("database unavailable: %s", _POOLER_HINT)
        log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        raise DatabaseUnavailable() from None
    except IntegrityError as exc:
        detail = f"{type(exc.orig).__name__} {exc.orig}"
        if any(marker in detail for marker in _REFERENCE_MARKERS):
            telemetry.database_error("reference_violation")
            raise ReferenceViolation() from None
        telemetry.database_error("unique_violation")
        raise UniqueViolation() from None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) in _PREPARED_STATEMENT_STATES:
            # Another client's prepared statement on this server connection, or ours gone: a transaction pooler.
            telemetry.database_error("prepared_statement")
            log.error("database unavailable: %s: %s", type(exc.orig).__name__, _POOLER_HINT)
            raise DatabaseUnavailable() from None
        # Any other refusal by the driver is a fault of this service: logged by its class only (the message may
        # hold values), answered 500 by the doors.
        telemetry.database_error("driver")
        log.error("database error: %s", type(exc.orig).__name__)
        raise DatabaseError() from None


def insert_rows(tx: Transaction, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows of `table` (dicts with the same keys) in one go: on PostgreSQL with COPY, several times the
    rate of INSERTs even pipelined, each value made ready by its column type as an INSERT would; elsewhere one
    executemany INSERT. Driver errors come out as SQLAlchemy's, as from any statement."""
    if not rows:
        return
    if tx.dialect.name != "postgresql":
        tx.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    processors = [table.c[name].type._cached_bind_processor(tx.dialect) for name in columns]
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    dbapi = tx.dialect.loaded_dbapi
    driver_connection: Any = tx.connection.driver_connection
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = row.values()
                copy.write_row([v if p is None else p(v) for p, v in zip(processors, values, strict=True)])
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=tx.dialect) from None


def insert_new_rows(tx: Transaction, table: Table, rows: list[dict[str, Any]]) -> bool:
    """Insert the rows as `insert_rows` does, in a savepoint of the caller's transaction, when none of them breaks a
    constraint; when one does, keep none of them and return False (the caller finds out which, and why). A batch of
    new rows then costs the inserts alone, not a lookup of each row's unique values before them."""
    try:
        with tx.begin_nested():
            insert_rows(tx, table, rows)
    except IntegrityError:
        return False
    return True


# What a statement run on the driver's cursor gives: its first row, all its rows, or the number of rows it changed.
_ONE, _ALL, _CHANGED = "one", "all", "changed"


def _through_sqlalchemy(connection: Connection, statement: Executable, params: Mapping[str, Any], want: str) -> Any:
    """What `want` asks of `statement`, run through SQLAlchemy: rows by column name, or the count of rows changed."""
    result = connection.execute(statement, params)
    if want == _CHANGED:
        return result.rowcount
    rows = result.mappings()
    if want == _ALL:
        return list(rows)
    row = rows.first()
    return [row] if row is not None else []


class _DriverStatement:
    """A prebuilt SELECT, INSERT, UPDATE or DELETE run on the driver's own cursor: compiled once, its values going
    in and out through the statement's own type processors, as SQLAlchemy would. SQLAlchemy's execution context and
    result (and, on psycopg, the column descriptions the result reads) cost several times what the statement itself
    costs the process: in-process, 541 against 117 us a read of one row on PostgreSQL, 122 against 16 on SQLite. The
    token check runs one on every request, a refresh its four statements (446 to 350 us a refresh on SQLite), and an
    export reads every user this way, a page at a time."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        self._compiled = cast("SQLCompiler", cast("ClauseElement", statement).compile(dialect=dialect))
        self.sql = str(self._compiled)
        self._binds = cast("dict[str, Callable[[Any], Any]]", dict(self._compiled._bind_processors))
        self.columns = [
            (column.keyname, column.type._cached_result_processor(dialect, None))
            for column in self._compiled._result_columns
        ]
        compiled = self._compiled
        # What the cursor can run as compiled: a SELECT that names its columns (not a textual one, such as the
        # ping), an INSERT, UPDATE or DELETE that returns nothing and has no column whose value SQLAlchemy works out
        # (a default or onupdate), and no list parameter (an IN of several values, which SQLAlchemy renders anew for
        # each call).
        changes = (compiled.isinsert or compiled.isupdate or compiled.isdelete) and not compiled.returning
        worked_out = compiled.insert_prefetch or compiled.update_prefetch or getattr(compiled, "postfetch", None)
        expanding = any(bind.expanding for bind in compiled.binds.values())
        self.direct = bool(self.columns or changes) and not worked_out and not expanding
        # The values a call must give (an INSERT compiled on its own takes every column): a call that leaves one
        # out goes through SQLAlchemy, which fills it with its default or says what is missing.
        self.required = frozenset(name for name, bind in compiled.binds.items() if bind.required)

    def parameters(self, params: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
        """The driver's parameters: by name (psycopg), or in order (sqlite3)."""
        values: dict[str, Any] = dict(self._compiled.construct_params(params))
        for name, process in self._binds.items():
            if name in values:
                values[name] = process(values[name])
        if self._compiled.positiontup is not None:
            return [values[name] for name in self._compiled.positiontup]
        return values

    def result(self, cursor: Any, want: str) -> Any:
        """The rows read (or the first row), by column name; or the number of rows changed."""
        if want == _CHANGED:
            return cursor.rowcount
        if want == _ALL:
            return _Rows(cursor.fetchall(), self.mapping)
        return [self.mapping(row) for row in cursor.fetchmany(1)]

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        """A row as the driver gave it, by column name and through the columns' type processors."""
        return {
            key: value if process is None else process(value)
            for (key, process), value in zip(self.columns, row, strict=True)
        }


class _Rows(Sequence[Mapping[str, Any]]):
    """The rows of a read, by column name, each made so when it is taken: a page read on one thread (an export's
    next page) is then made ready on the thread that uses it, which would otherwise wait for it."""

    def __init__(self, rows: list[Sequence[Any]], mapping: Callable[[Sequence[Any]], dict[str, Any]]) -> None:
        self._rows, self._mapping = rows, mapping

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        if isinstance(index, slice):
            return [self._mapping(row) for row in self._rows[index]]
        return self._mapping(self._rows[index])

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return map(self._mapping, self._rows)


class Database:
    """The service's database: single-row reads, read and write transactions, and closing."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine if engine is not None else make_engine(settings)
        self._single_reads = make_single_read_engine(self.engine)
        self._write_engine = self.engine.execution_options(write=True)
        limits = transaction_limits(settings)
        self._limits = text(limits) if limits is not None else None
        # On SQLite (WAL) a single-row read is a read of a local file that waits for nothing: readers never wait
        # for writers, and the pool never makes a checkout wait. Callers on an event loop may run those reads in
        # place: that costs less than handing them to a worker thread.
        self.reads_are_local = self.engine.dialect.name == "sqlite"
        self._sqlite_writers = threading.Lock() if self.reads_are_local else None
        # Threads (event loops) that keep a connection of their own for single reads: thread id -> the connection,
        # or None until the thread's next read opens one.
        self.thread_readers: dict[int, Connection | None] = {}
        # Statements run on the driver's cursor: statement -> its compiled form.
        self._driver_statements: dict[Executable, _DriverStatement] = {}
        # On PostgreSQL, the connections each event loop keeps for its single-row reads (`read_one_on_loop`).
        self.loop_reads: dict[asyncio.AbstractEventLoop, LoopReads] = {}

    def close(self) -> None:
        """Release every connection."""
        while self.loop_reads:
            _, reads = self.loop_reads.popitem()
            reads.close()
        while self.thread_readers:
            _, connection = self.thread_readers.popitem()
            if connection is not None:
                connection.close()
        self.engine.dispose()

    def keep_reader_for_this_thread(self) -> None:
        """On SQLite, let the calling thread keep one connection for its single-row reads until `close()`, instead
        of taking one from the pool for each. Meant for an event loop's thread, which runs those reads in place one
        at a time; other threads use the pool."""
        if self.reads_are_local:
            self.thread_readers.setdefault(threading.get_ident(), None)

    def read_one(self, statement: Executable, params: Mapping[str, Any]) -> Mapping[Any, Any] | None:
        """The first row of one SELECT, by column name, run outside a transaction."""
        rows = self._read(statement, params, _ONE)
        return rows[0] if rows else None

    async def read_one_on_loop(self, statement: Executable, params: Mapping[str, Any]) -> Mapping[Any, Any] | None:
        """`read_one` for a caller on an event loop, without blocking it: in place on SQLite (a local read), on the
        loop's own connections on PostgreSQL (the round trip awaited, not waited for in a worker thread)."""
        if self.reads_are_local:
            return self.read_one(statement, params)
        read = self._driver_statement(statement)
        if not read.direct or not read.required <= params.keys():
            return await asyncio.to_thread(self.read_one, statement, params)
        values = read.parameters(params)
        dbapi = self.engine.dialect.loaded_dbapi
        with _database_errors():
            try:
                rows = await self._loop_reads_here().fetch(read.sql, values, before=self._announce(read.sql, values))
            except dbapi.Error as exc:
                raise DBAPIError.instance(read.sql, None, exc, dbapi.Error, dialect=self.engine.dialect) from None
        return read.mapping(rows[0]) if rows else None

    def _announce(self, sql: str, values: Any) -> Callable[[Any], None] | None:
        """What tells the engine's before_cursor_execute listeners of a statement run outside SQLAlchemy, if any
        listen."""
        if not self.engine._has_events:
            return None
        return lambda cursor: self.engine.dispatch.before_cursor_execute(None, cursor, sql, values, None, False)

    def _loop_reads_here(self) -> LoopReads:
        loop = asyncio.get_running_loop()
        reads = self.loop_reads.get(loop)
        if reads is None:
            # The connections of loops that have ended (a test client's) go with them.
            for ended in [other for other in self.loop_reads if other.is_closed()]:
                self.loop_reads.pop(ended).close()
            settings = self.settings
            reads = self.loop_reads[loop] = LoopReads(
                self._loop_connect(),
                size=min(LOOP_READ_CONNECTIONS, settings.db_pool_size),
                wait_seconds=settings.db_pool_timeout_seconds,
                recycle_seconds=settings.db_pool_recycle_seconds,
            )
        return reads

    def _loop_connect(self) -> Connect:
        """How a loop opens a connection: psycopg's async connection, with the pool's parameters, in autocommit."""
        from psycopg import AsyncConnection

        _, url_params = self.engine.dialect.create_connect_args(self.engine.url)
        params = {**url_params, **postgres_connect_args(self.settings), "autocommit": True}
        return lambda: AsyncConnection.connect(**params)

    def read_all(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Mapping[Any, Any]]:
        """Every row of one SELECT (a page: keep it bounded), by column name, run outside a transaction."""
        rows: Sequence[Mapping[Any, Any]] = self._read(statement, params, _ALL)
        return rows

    def first_in(self, tx: Transaction, statement: Executable, params: Mapping[str, Any]) -> Mapping[Any, Any] | None:
        """The first row of a prebuilt SELECT run within the transaction `tx`, by column name (as
        `tx.execute(...).first()._mapping`, for less)."""
        rows = self._on_driver_cursor(tx, statement, params, _ONE)
        return rows[0] if rows else None

    def changed_in(self, tx: Transaction, statement: Executable, params: Mapping[str, Any]) -> int:
        """Run a prebuilt INSERT, UPDATE or DELETE within the transaction `tx`; the number of rows it changed (as
        `tx.execute(...).rowcount`, for less)."""
        changed: int = self._on_driver_cursor(tx, statement, params, _CHANGED)
        return changed

    def _read(self, statement: Executable, params: Mapping[str, Any], want: str) -> Any:
        thread = threading.get_ident()
        if thread not in self.thread_readers:
            with _database_errors():
                try:
                    return self._single_read(statement, params, want)
                except DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                # The connection had died in the pool (a database restart): the pool has dropped it and every
                # one as old, and the read runs once more on a fresh connection.
                return self._single_read(statement, params, want)
        with _database_errors():
            kept = self.thread_readers[thread]
            if kept is None:
                kept = self.thread_readers[thread] = self._single_reads.connect()
            try:
                return self._on_driver_cursor(kept, statement, params, want)
            except BaseException:
                # Whatever went wrong, the next read starts on a fresh connection.
                self.thread_readers[thread] = None
                kept.close()
                raise

    def _single_read(self, statement: Executable, params: Mapping[str, Any], want: str) -> Any:
        with self._single_reads.connect() as connection:
            return self._on_driver_cursor(connection, statement, params, want)

    def _on_driver_cursor(
        self, connection: Connection, statement: Executable, params: Mapping[str, Any], want: str
    ) -> Any:
        """What `want` asks of `statement`, run on the driver's cursor of `connection` (in autocommit for a read
        outside a transaction, else within the connection's transaction). Listeners of the engine's
        before_cursor_execute see the statement as they would through SQLAlchemy. An error that means the connection
        is gone sends the statement through SQLAlchemy on it once more, which meets the same error and does what it
        does for one (drops the pool's connections as old, marks the error so a read runs again on a fresh
        connection); any other error comes out as SQLAlchemy's, as from any statement."""
        read = self._driver_statement(statement)
        if not read.direct or not read.required <= params.keys():
            return _through_sqlalchemy(connection, statement, params, want)
        driver: Any = connection.connection.driver_connection
        dbapi = connection.dialect.loaded_dbapi
        values = read.parameters(params)
        try:
            cursor = driver.cursor()
            try:
                if connection._has_events or connection.engine._has_events:
                    connection.dispatch.before_cursor_execute(connection, cursor, read.sql, values, None, False)
                cursor.execute(read.sql, values)
                return read.result(cursor, want)
            finally:
                cursor.close()
        except dbapi.Error as exc:
            if connection.dialect.is_disconnect(exc, driver, None):
                return _through_sqlalchemy(connection, statement, params, want)
            raise DBAPIError.instance(read.sql, None, exc, dbapi.Error, dialect=connection.dialect) from None

    def _driver_statement(self, statement: Executable) -> _DriverStatement:
        read = self._driver_statements.get(statement)
        if read is None:
            read = self._driver_statements[statement] = _DriverStatement(statement, self.engine.dialect)
        return read

    def ping(self) -> bool:
        """Whether the database answers."""
        try:
            self.read_one(_PING, {})
        except DatabaseUnavailable:
            return False
        return True

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read transaction, for reads of several rows that must agree."""
        with _database_errors(), self.engine.begin() as connection:
            self._limit(connection)
            yield connection

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with _database_errors(), self._writer_turn(), self._write_engine.begin() as connection:
            self._limit(connection)
            yield connection

    def _limit(self, connection: Connection) -> None:
        if self._limits is not None:
            connection.execute(self._limits)

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """On SQLite, one writer of this process at a time. SQLite allows one writer anyway; writers of one process
        queue on a lock here instead of polling the database's lock in its busy handler (sleeps of growing length,
        which stretch the wait far past the write). Other processes still meet at the database's lock."""
        if self._sqlite_writers is None:
            yield
            return
        if not self._sqlite_writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            telemetry.database_error("writer_timeout")
            log.warning("database unavailable: no turn to write within the busy timeout")
            raise DatabaseUnavailable()
        try:
            yield
        finally:
            self._sqlite_writers.release()
