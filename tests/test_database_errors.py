"""A database error that escapes a request is answered with the usual JSON body (500 `internal_error`, or 503 for a
prepared-statement clash that names the setting to use), never a dropped connection: injected as the driver's own
error on the token check, a write and a read, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.conftest import Api, MakeApi, bearer
from tests.helpers import assert_error

# A statement each request runs: the token check's read of the session, a profile update, the session list.
TOKEN_CHECK = "auth_sessions"
WRITE = "UPDATE users"
READ = "ORDER BY"


@contextmanager
def failing(engine: Engine, marker: str, error: Callable[[Any], Exception]) -> Iterator[None]:
    """Every statement holding `marker` fails with the driver's error that `error` builds from the driver module."""

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if marker in statement:
            raise error(engine.dialect.loaded_dbapi)

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


def driver_error(dbapi: Any) -> Exception:
    error: Exception = dbapi.DatabaseError("injected driver error")
    return error


REQUESTS: dict[str, tuple[str, Callable[[Api, str], Any]]] = {
    # A token's first check, and the check of a token seen before (on PostgreSQL, read on the event loop).
    "token check": (TOKEN_CHECK, lambda api, token: api.me(token)),
    "token check, seen token": (TOKEN_CHECK, lambda api, token: api.me(token)),
    "write": (WRITE, lambda api, token: api.client.patch("/users/me", json={"full_name": "A"}, headers=bearer(token))),
    "read": (READ, lambda api, token: api.client.get("/users/me/sessions", headers=bearer(token))),
}


def answer_with(
    make_api: MakeApi, request_name: str, error: Callable[[Any], Exception], caplog: pytest.LogCaptureFixture
) -> tuple[Any, Callable[[], Any]]:
    """The answer to the request while the driver raises `error` on its statement, and a way to send it again."""
    api = make_api(raise_server_exceptions=False)
    token = api.tokens()["access_token"]
    marker, send = REQUESTS[request_name]
    if request_name.endswith("seen token"):
        assert send(api, token).status_code == 200
    engine = api.client.app.state.service.engine  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR), failing(engine, marker, error):
        response = send(api, token)
    return response, lambda: send(api, token)


@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_a_driver_error_is_a_json_500_and_the_next_request_succeeds(
    make_api: MakeApi, request_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    response, again = answer_with(make_api, request_name, driver_error, caplog)

    assert_error(response, 500, "internal_error")
    assert response.headers["content-type"] == "application/json"
    assert "injected driver error" not in caplog.text
    assert again().status_code == 200


def prepared_statement_clash(dbapi: Any) -> Exception:
    # What psycopg raises when a pooler gave this connection a server connection without its statement.
    from psycopg import errors

    return errors.lookup("26000")('prepared statement "_pg3_2" does not exist')


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_a_prepared_statement_clash_is_a_503_and_the_log_names_the_setting(
    make_api: MakeApi, request_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    response, _ = answer_with(make_api, request_name, prepared_statement_clash, caplog)

    assert_error(response, 503, "database_unavailable")
    assert "set DB_POOLER=transaction" in caplog.text
