"""No request reads a whole table: every statement an account's requests run (registration, login, the token check,
refresh, profile changes, sessions, logout) is answered through an index, on SQLite and PostgreSQL. Checked with the
databases' own EXPLAIN on the statements as the requests sent them, so a user base of millions costs each request
what a user base of ten does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from tests.conftest import PASSWORD, Api, MakeApi, bearer
from tests.helpers import query_plan

# Statements that read or change rows chosen by a condition: the ones whose plan could be a scan.
CHECKED = ("SELECT", "UPDATE", "DELETE", "WITH")
# Statements of the plumbing, not of a request's rule: a ping, the session limits of a transaction.
PLUMBING = ("SELECT 1", "SELECT set_config", "SELECT pg_backend_pid")
# Tables that do not grow with the user base: the signing keys (a few, read whole when the key ring reloads).
SMALL_TABLES = ("FROM signing_keys",)


@contextmanager
def recorded(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the engine sends while the block runs, with its parameters, as the driver received them."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if not executemany:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def a_day_of_requests(api: Api) -> None:
    """What an account does: register, log in, read and change its profile, refresh, list sessions, change its
    password, log out; a wrong password and an unknown user too."""
    api.created(email="alice@example.com")
    pair = api.logged_in()
    token = pair["access_token"]
    assert api.me(token).status_code == 200
    assert api.client.patch("/users/me", json={"full_name": "Alice"}, headers=bearer(token)).status_code == 200
    pair = api.refresh(pair["refresh_token"]).json()
    token = pair["access_token"]
    assert api.client.get("/users/me/sessions", headers=bearer(token)).status_code == 200
    assert api.login(password="not the password").status_code == 401
    assert api.login(username="nobody").status_code == 401
    changed = api.client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another horse battery"},
        headers=bearer(token),
    )
    assert changed.status_code == 200, changed.text
    assert api.client.post("/auth/logout", json={"refresh_token": changed.json()["refresh_token"]}).status_code == 204


def scans(engine: Engine, plan: str) -> list[str]:
    if engine.dialect.name == "postgresql":
        return [line.strip() for line in plan.splitlines() if "Seq Scan" in line]
    # SQLite: SEARCH is a lookup through an index; SCAN reads a table (or a whole index) through.
    return [line for line in plan.splitlines() if line.startswith("SCAN ") and "CONSTANT ROW" not in line]


def test_every_statement_of_an_accounts_requests_is_served_by_an_index(make_api: MakeApi) -> None:
    api = make_api()
    engine = api.client.app.state.service.engine  # type: ignore[attr-defined]
    with recorded(engine) as statements:
        a_day_of_requests(api)

    checked = [
        (statement, parameters)
        for statement, parameters in statements
        if statement.lstrip().upper().startswith(CHECKED)
        and not statement.lstrip().startswith(PLUMBING)
        and not any(table in statement for table in SMALL_TABLES)
    ]
    found = {statement: scans(engine, query_plan(engine, statement, parameters)) for statement, parameters in checked}

    assert len(checked) >= 10
    # The check itself sees a scan where there is one: no index serves a search by full name.
    assert scans(engine, query_plan(engine, "SELECT id FROM users WHERE full_name = 'Alice'", ()))
    assert {statement.split("WHERE")[-1]: lines for statement, lines in found.items() if lines} == {}
