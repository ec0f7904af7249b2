"""Single-row reads on PostgreSQL run by the event loop on connections of its own: the same rows as the pool's
reads, connections opened only as reads overlap and never more than allowed, a bounded wait for one, no connection
kept in an unknown state, old connections recycled, and a database restart survived without a failed read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import Integer, String, bindparam, cast, event, func, literal, select, text

from tests.conftest import PASSWORD, TEST_SECRET, postgres_database, registration
from tests.test_connection_reuse import end_server_connections
from user_service.config import Settings
from user_service.errors import DatabaseError, DatabaseUnavailable
from user_service.migrations import migrate_to
from user_service.schemas import TokenPair
from user_service.service import UserService
from user_service.service import statements as sql
from user_service.service.loop_reads import LOOP_READ_CONNECTIONS, LoopReads

T = TypeVar("T")

BACKEND = select(func.pg_backend_pid().label("pid"))
# A read that holds its connection for a while (the database's own wait, not the test's).
SLOW = select(
    func.pg_sleep(bindparam("seconds")).label("slept"), func.pg_backend_pid().label("pid"), literal(1).label("one")
)


@pytest.fixture
def make_service() -> Iterator[Callable[..., UserService]]:
    with postgres_database("user_service_loop_reads") as url:
        made: list[UserService] = []

        def make(**overrides: Any) -> UserService:
            settings = Settings(
                database_url=url,
                jwt_secret_key=TEST_SECRET,
                bcrypt_rounds=4,
                _env_file=None,  # type: ignore[call-arg]
                **overrides,
            )
            service = UserService(settings)
            made.append(service)
            return service

        migrate_to(make().engine)
        yield make
        for service in made:
            service.close()


def on_loop(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        return await make_coroutine()

    return asyncio.run(run())


def loop_reads_of(service: UserService) -> LoopReads:
    (reads,) = service.db.loop_reads.values()
    return reads


def test_a_read_on_the_loop_gives_the_row_the_pool_gives(make_service: Callable[..., UserService]) -> None:
    service = make_service()
    service.register(
        registration(namespace="app", username="alice", password=PASSWORD, email="alice@example.com", full_name="A")
    )
    pair = service.login(namespace="app", username="alice", password=PASSWORD)
    assert isinstance(pair, TokenPair)
    principal = service.authenticate(pair.access_token)
    key = {"user_id": principal.user.id, "session_id": principal.session_id}

    on_loop_row = on_loop(lambda: service.db.read_one_on_loop(sql.PRINCIPAL, key))
    missing = on_loop(lambda: service.db.read_one_on_loop(sql.PRINCIPAL, {**key, "session_id": uuid.uuid4()}))

    assert on_loop_row == service.db.read_one(sql.PRINCIPAL, key)
    assert on_loop_row is not None and on_loop_row["username"] == "alice"
    assert missing is None


def test_connections_open_as_reads_overlap_and_never_beyond_the_limit(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service()
    reads = 3 * LOOP_READ_CONNECTIONS

    async def overlapping() -> tuple[list[Any], int]:
        one_at_a_time = [await service.db.read_one_on_loop(BACKEND, {}) for _ in range(3)]
        after_serial = loop_reads_of(service).open_connections
        rows = await asyncio.gather(*(service.db.read_one_on_loop(SLOW, {"seconds": 0.05}) for _ in range(reads)))
        assert len({row["pid"] for row in one_at_a_time if row is not None}) == 1
        return list(rows), after_serial

    rows, after_serial = on_loop(overlapping)

    assert after_serial == 1
    assert [row["one"] for row in rows] == [1] * reads
    assert loop_reads_of(service).open_connections == LOOP_READ_CONNECTIONS


def test_a_read_waits_at_most_the_pool_timeout_for_a_connection_then_answers_unavailable(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service(db_pool_size=1, db_pool_timeout_seconds=0.2)

    async def crowded() -> tuple[Any, BaseException | None, Any]:
        slow = asyncio.ensure_future(service.db.read_one_on_loop(SLOW, {"seconds": 2}))
        await asyncio.sleep(0)
        refused: BaseException | None = None
        try:
            await service.db.read_one_on_loop(BACKEND, {})
        except DatabaseUnavailable as exc:
            refused = exc
        return await slow, refused, await service.db.read_one_on_loop(BACKEND, {})

    slow, refused, later = on_loop(crowded)

    assert isinstance(refused, DatabaseUnavailable)
    assert slow is not None and later is not None
    assert loop_reads_of(service).open_connections == 1


def test_a_cancelled_read_closes_its_connection_and_frees_its_place(make_service: Callable[..., UserService]) -> None:
    service = make_service(db_pool_size=1, db_pool_timeout_seconds=5)

    async def cancelled() -> tuple[Any, Any, Any]:
        first = await service.db.read_one_on_loop(BACKEND, {})
        reads = loop_reads_of(service)
        slow = asyncio.ensure_future(service.db.read_one_on_loop(SLOW, {"seconds": 5}))
        for _ in range(5):
            # A few turns of the loop: the read takes the idle connection and sends its statement.
            await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        after = await asyncio.wait_for(service.db.read_one_on_loop(BACKEND, {}), 2)
        return first, after, reads.open_connections

    first, after, open_connections = on_loop(cancelled)

    # The cancelled read's connection, left mid-statement, was not handed to the next read.
    assert first is not None and after is not None and first["pid"] != after["pid"]
    assert open_connections == 1


def test_a_connection_older_than_the_recycle_age_is_replaced(make_service: Callable[..., UserService]) -> None:
    service = make_service(db_pool_recycle_seconds=60)
    now = [1000.0]

    async def across_the_age() -> list[int]:
        reads = service.db._loop_reads_here()
        reads._clock = lambda: now[0]
        pids = []
        for step in (0, 59, 2):
            now[0] += step
            row = await service.db.read_one_on_loop(BACKEND, {})
            assert row is not None
            pids.append(row["pid"])
        return pids

    fresh, young, recycled = on_loop(across_the_age)

    assert fresh == young != recycled
    assert loop_reads_of(service).open_connections == 1


def test_reads_survive_a_restart_that_ended_every_loop_connection(make_service: Callable[..., UserService]) -> None:
    service = make_service()

    async def across_a_restart() -> tuple[set[int], Any, int]:
        before = await asyncio.gather(*(service.db.read_one_on_loop(SLOW, {"seconds": 0.05}) for _ in range(3)))
        pids = {row["pid"] for row in before if row is not None}
        assert len(pids) == 3
        ended = end_server_connections(service)
        after = await service.db.read_one_on_loop(BACKEND, {})
        return pids, after, ended

    pids, after, ended = on_loop(across_a_restart)

    assert ended >= 3
    assert after is not None and after["pid"] not in pids
    # The idle connections, as old as the dead one, went with it.
    assert loop_reads_of(service).open_connections == 1


def test_closing_the_service_closes_the_loops_connections(make_service: Callable[..., UserService]) -> None:
    service = make_service()
    on_loop(lambda: service.db.read_one_on_loop(BACKEND, {}))
    reads = loop_reads_of(service)
    (kept,) = reads._idle

    service.close()

    assert kept.connection.closed
    assert service.db.loop_reads == {}


def test_a_loops_connections_go_when_a_new_loop_reads_after_it_ended(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service()
    on_loop(lambda: service.db.read_one_on_loop(BACKEND, {}))
    (kept,) = loop_reads_of(service)._idle

    on_loop(lambda: service.db.read_one_on_loop(BACKEND, {}))

    assert kept.connection.closed
    assert len(service.db.loop_reads) == 1


def test_a_read_in_flight_when_the_service_closes_ends_and_its_connection_closes(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service()

    async def closed_meanwhile() -> tuple[Any, LoopReads]:
        slow = asyncio.ensure_future(service.db.read_one_on_loop(SLOW, {"seconds": 0.2}))
        for _ in range(5):
            await asyncio.sleep(0)
        reads = loop_reads_of(service)
        service.close()
        return await slow, reads

    row, reads = on_loop(closed_meanwhile)

    assert row is not None and row["one"] == 1
    assert reads.open_connections == 0


def test_a_statement_the_database_refuses_fails_once_and_is_not_run_again(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service()
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    number = select(cast(bindparam("text", type_=String), Integer).label("number"))
    event.listen(service.engine, "before_cursor_execute", record)
    try:
        with pytest.raises(DatabaseError) as refused:
            on_loop(lambda: service.db.read_one_on_loop(number, {"text": "not a number"}))
    finally:
        event.remove(service.engine, "before_cursor_execute", record)

    assert type(refused.value) is DatabaseError
    assert len(sent) == 1
    # The connection it failed on is not kept; the next read opens another and succeeds.
    assert loop_reads_of(service).open_connections == 0
    assert on_loop(lambda: service.db.read_one_on_loop(BACKEND, {})) is not None


def test_a_statement_the_drivers_cursor_cannot_run_as_compiled_is_read_in_a_thread(
    make_service: Callable[..., UserService],
) -> None:
    service = make_service()

    row = on_loop(lambda: service.db.read_one_on_loop(text("SELECT 41 + 1 AS answer"), {}))

    assert row is not None and row["answer"] == 42
    assert service.db.loop_reads == {}
