"""Single-row reads (the token check on every request, among others) and the statements of a refresh run on the
driver's own cursor, not through SQLAlchemy's execution and result objects: they must do what SQLAlchemy does, on
both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tests.conftest import PASSWORD, registration
from user_service import security
from user_service.service import UserService
from user_service.service import statements as sql
from user_service.service import transfer_sql as tsql
from user_service.service.statements import REFRESH_TOKENS


def test_a_single_read_gives_the_row_sqlalchemy_gives(service: UserService) -> None:
    """The same values, of the same types (UTC datetimes, UUIDs, booleans, the parsed JSON of extra), as the
    statement run through SQLAlchemy; a read that finds nothing gives None."""
    service.register(registration(namespace="app", username="alice", password=PASSWORD, extra={"plan": "pro"}))
    pair = service.login(namespace="app", username="alice", password=PASSWORD)
    principal = service.authenticate(pair.access_token)
    params = {"user_id": principal.user.id, "session_id": principal.session_id}

    row = service.db.read_one(sql.PRINCIPAL, params)
    with service.engine.connect() as connection:
        expected = connection.execute(sql.PRINCIPAL, params).one()._mapping

    assert row is not None
    assert dict(row) == dict(expected)
    assert {key: type(value) for key, value in row.items()} == {key: type(value) for key, value in expected.items()}
    assert row["created_at"].utcoffset() == expected["created_at"].utcoffset()
    assert row["extra"] == {"plan": "pro"}
    assert service.db.read_one(sql.PRINCIPAL, {**params, "session_id": principal.user.id}) is None


def test_statements_of_a_transaction_on_the_drivers_cursor_do_what_sqlalchemy_does(service: UserService) -> None:
    """Within a write transaction (the refresh's): a SELECT gives SQLAlchemy's row, an UPDATE and an INSERT count
    the rows they changed, and an INSERT that leaves a column out goes through SQLAlchemy, which fills in its
    default, as any statement would."""
    service.register(registration(namespace="app", username="alice", password=PASSWORD))
    pair = service.login(namespace="app", username="alice", password=PASSWORD)
    digest = security.refresh_token_digest(pair.refresh_token)
    now = datetime.now(UTC)

    with service.db.write() as tx:
        token = service.db.first_in(tx, sql.REFRESH_TOKEN_BY_DIGEST, {"digest": digest})
        expected = tx.execute(sql.REFRESH_TOKEN_BY_DIGEST, {"digest": digest}).one()._mapping
        assert token is not None
        assert dict(token) == dict(expected)
        assert service.db.first_in(tx, sql.REFRESH_TOKEN_BY_DIGEST, {"digest": "0" * 64}) is None

        claim = {"token_key": token["token_id"], "now": now}
        assert service.db.changed_in(tx, sql.CLAIM_REFRESH_TOKEN, claim) == 1
        assert service.db.changed_in(tx, sql.CLAIM_REFRESH_TOKEN, claim) == 0  # claimed already
        row = {
            "session_id": token["session_id"],
            "token_hash": "1" * 64,
            "created_at": now,
            "used_at": None,
            "expires_at": now + timedelta(days=1),
        }
        assert service.db.changed_in(tx, sql.INSERT_REFRESH_TOKEN, {"id": uuid.uuid4(), **row}) == 1
        # Through SQLAlchemy, which counts as it does for any such INSERT (-1 on SQLite, where it adds RETURNING).
        service.db.changed_in(tx, sql.INSERT_REFRESH_TOKEN, {**row, "token_hash": "2" * 64})
        stored = tx.execute(select(REFRESH_TOKENS).where(REFRESH_TOKENS.c.token_hash.in_(["1" * 64, "2" * 64])))
        kept = {found.token_hash: found for found in stored}

    assert set(kept) == {"1" * 64, "2" * 64}
    assert all(isinstance(found.id, uuid.UUID) for found in kept.values())
    assert kept["2" * 64].expires_at == now + timedelta(days=1)
    used = service.db.read_one(sql.REFRESH_TOKEN_USED_AT, {"token_key": token["token_id"]})
    assert used is not None and used["used_at"] == now


def test_a_read_of_several_rows_gives_sqlalchemys_rows_as_they_are_taken(service: UserService) -> None:
    """A page read on the driver's cursor: the rows SQLAlchemy gives, in order, whether iterated, indexed from
    either end or sliced."""
    for name in ("alice", "bob", "carol"):
        service.register(registration(namespace="app", username=name, password=PASSWORD))
    page = tsql.EXPORT_PAGES[(True, False)]
    params = {"namespace": "app", "limit": 10}

    rows = service.db.read_all(page, params)
    with service.engine.connect() as connection:
        expected = [dict(row) for row in connection.execute(page, params).mappings()]

    assert len(rows) == 3
    assert [dict(row) for row in rows] == expected
    assert dict(rows[-1]) == expected[-1]
    assert [dict(row) for row in rows[1:]] == expected[1:]
    assert list(service.db.read_all(page, {**params, "namespace": "nobody"})) == []
