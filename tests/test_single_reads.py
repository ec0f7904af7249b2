"""Single-row reads (the token check on every request, among others) run on the driver's own cursor, not through
SQLAlchemy's result objects: they must give what SQLAlchemy gives, on both databases."""

from __future__ import annotations

from tests.conftest import PASSWORD, registration
from user_service.service import UserService
from user_service.service import statements as sql


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
