"""PostgreSQL connections are reused without a ping on every checkout: a connection going straight from one request
to the next costs no extra round trip, one idle for a while is pinged first, and a connection that died in the pool
(a database restart, an idle connection dropped by the network) is replaced without the read failing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, literal, select, text

from tests.conftest import PASSWORD, POSTGRES_ADMIN_URL, TEST_SECRET, postgres_database, registration
from user_service import db
from user_service.config import Settings
from user_service.errors import DatabaseUnavailable
from user_service.migrations import migrate_to
from user_service.service import UserService

# A prebuilt SELECT, as the service's single-row reads are (a textual one takes another path).
SELECT_ONE = select(literal(1).label("one"))
READS = 5


@pytest.fixture
def service() -> Iterator[UserService]:
    with postgres_database("user_service_reuse") as url:
        settings = Settings(
            database_url=url,
            jwt_secret_key=TEST_SECRET,
            bcrypt_rounds=4,
            _env_file=None,  # type: ignore[call-arg]
        )
        with UserService(settings) as svc:
            migrate_to(svc.engine)
            yield svc


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch, service: UserService) -> list[Any]:
    """Each ping the pool sends before handing out a connection."""
    sent: list[Any] = []
    dialect = service.engine.dialect
    real = dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        sent.append(dbapi_connection)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counting)
    return sent


def end_server_connections(service: UserService) -> int:
    """End every server connection to the service's database, as a database restart does; how many."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": service.engine.url.database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(ended)


def read(service: UserService) -> Any:
    row = service.db.read_one(SELECT_ONE, {})
    return None if row is None else row["one"]


def test_a_connection_going_from_one_read_to_the_next_is_not_pinged(service: UserService, pings: list[Any]) -> None:
    answers = [read(service) for _ in range(READS)]

    assert answers == [1] * READS
    assert pings == []


def test_a_connection_idle_past_the_threshold_is_pinged_before_use(
    service: UserService, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    read(service)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)

    assert read(service) == 1
    assert len(pings) == 1


def test_an_idle_connection_that_died_is_replaced_before_the_read(
    service: UserService, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    read(service)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert end_server_connections(service) >= 1

    assert read(service) == 1
    assert len(pings) == 1


def test_a_single_read_on_a_connection_that_died_since_its_last_use_runs_again(
    service: UserService, pings: list[Any]
) -> None:
    read(service)
    assert end_server_connections(service) >= 1

    assert read(service) == 1
    assert pings == []


def test_single_reads_survive_a_restart_that_ended_every_pooled_connection(service: UserService) -> None:
    """Several pooled connections die at once (a database restart): each read after it still answers."""
    connections = [service.engine.connect() for _ in range(3)]
    for connection in connections:
        connection.execute(SELECT_ONE)
    for connection in connections:
        connection.close()
    assert end_server_connections(service) >= 3

    assert [read(service) for _ in range(READS)] == [1] * READS


def test_a_transaction_on_a_connection_that_died_answers_unavailable_once(service: UserService) -> None:
    """Only single-row reads can run again by themselves: a transaction's first statement meets the dead connection,
    the request is answered 503, the pool drops every connection as old, and the next one works."""
    service.register(registration(namespace="app", username="alice", password=PASSWORD))
    assert end_server_connections(service) >= 1

    with pytest.raises(DatabaseUnavailable):
        service.list_users("app")
    assert [user.username for user in service.list_users("app").items] == ["alice"]
