"""Single-row reads on PostgreSQL run by the event loop itself, on a few connections of its own (psycopg's async
connections), instead of a hop to a worker thread and back for each read.

The token check is one such read on every authenticated request. Measured in-process on one core, 16 reads at once:
130 us of the process's CPU a read through a worker thread and SQLAlchemy's pool, 69 through psycopg_pool's
AsyncConnectionPool, 40 on this small list of connections (a checkout is a list pop; the pool's waiters, locks and
maintenance tasks are what a loop that never shares its connections does not need).

The rules are those of the thread pool's reads (`db.py`): a connection is opened when every open one is busy, up to
`size`; a read waits at most `wait_seconds` for one (then PoolTimeout: a 503); a connection older than
`recycle_seconds` is closed instead of used. No ping: a connection found dead by its read is dropped with every
idle one (they are as old: a database restart ends them all) and the read runs once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import TimeoutError as PoolTimeout

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# How many connections one event loop keeps for its reads, at most (and at most DB_POOL_SIZE). One loop is one core:
# its reads in flight at once are those begun while others were on the wire, a few at 4,000 requests a second.
LOOP_READ_CONNECTIONS = 4

Connect = Callable[[], Awaitable["AsyncConnection[Any]"]]


class _Kept:
    __slots__ = ("connection", "opened")

    def __init__(self, connection: AsyncConnection[Any], opened: float) -> None:
        self.connection, self.opened = connection, opened


class LoopReads:
    """The connections one event loop keeps for single-row reads; used from that loop only."""

    def __init__(
        self,
        connect: Connect,
        *,
        size: int,
        wait_seconds: float,
        recycle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect, self._size, self._wait, self._recycle, self._clock = (
            connect,
            size,
            wait_seconds,
            recycle_seconds,
            clock,
        )
        # Idle connections, the most recently returned last (taken first: under load the same few serve).
        self._idle: list[_Kept] = []
        # Connections in use or being opened.
        self._busy = 0
        self._waiters: deque[asyncio.Future[_Kept | None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._idle) + self._busy

    async def fetch(
        self, sql: str, values: Any, *, before: Callable[[Any], None] | None = None
    ) -> Sequence[Sequence[Any]]:
        """The rows of one SELECT (keep it small: a row or a page). `before(cursor)` runs just before the statement
        is sent. A driver error comes out as the driver raised it."""
        kept = await self._take()
        try:
            rows = await _run(kept.connection, sql, values, before)
        except BaseException as exc:
            dead = _is_disconnect(exc, kept.connection)
            self._drop(kept)
            if not dead:
                raise
            # The connection had died (a database restart, a dropped idle connection): so have the idle ones, which
            # are as old. Once more on a fresh connection.
            self._drop_idle()
            kept = await self._take()
            try:
                rows = await _run(kept.connection, sql, values, before)
            except BaseException:
                self._drop(kept)
                raise
        self._release_place(kept)
        return rows

    async def _take(self) -> _Kept:
        now = self._clock()
        while self._idle:
            kept = self._idle.pop()
            if self._recycle < 0 or now - kept.opened < self._recycle:
                self._busy += 1
                return kept
            _finish(kept.connection)
        if self._busy < self._size:
            self._busy += 1
            return await self._open()
        waiter: asyncio.Future[_Kept | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._wait):
                handed = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a place just as the wait ended (timed out or cancelled): pass it on.
                self._release_place(waiter.result())
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(f"no connection for a read within {self._wait:g} s") from None
            raise
        # A connection handed over (its place stays busy), or None: a place to open one in.
        return handed if handed is not None else await self._open()

    async def _open(self) -> _Kept:
        """A new connection in a place already counted busy; the place is given up if the connection fails."""
        try:
            return _Kept(await self._connect(), self._clock())
        except BaseException:
            self._release_place(None)
            raise

    def _drop(self, kept: _Kept) -> None:
        """A connection in an unknown state (an error, a cancelled read) is closed, never reused."""
        _finish(kept.connection)
        self._release_place(None)

    def _release_place(self, kept: _Kept | None) -> None:
        """Hand a busy place (with its connection, or None for a place to open one) to the first live waiter, else
        give it up, keeping the connection idle (closing it once `close()` has been called)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(kept)
                return
        self._busy -= 1
        if kept is not None:
            if self._closed:
                _finish(kept.connection)
            else:
                self._idle.append(kept)

    def _drop_idle(self) -> None:
        while self._idle:
            _finish(self._idle.pop().connection)

    def close(self) -> None:
        """Close the idle connections now and the busy ones as they come back; callable from any thread once the
        loop no longer runs reads."""
        self._closed = True
        self._drop_idle()


async def _run(
    connection: AsyncConnection[Any], sql: str, values: Any, before: Callable[[Any], None] | None
) -> Sequence[Sequence[Any]]:
    cursor = connection.cursor()
    try:
        if before is not None:
            before(cursor)
        await cursor.execute(sql, values)
        return await cursor.fetchall()
    finally:
        await cursor.close()


def _is_disconnect(exc: BaseException, connection: AsyncConnection[Any]) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error) and (connection.closed or connection.broken)


def _finish(connection: AsyncConnection[Any]) -> None:
    """Close without awaiting: what AsyncConnection.close() does, less the wait (there is nothing to wait for)."""
    if not connection.closed:
        connection.pgconn.finish()
