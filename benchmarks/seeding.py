"""Users seeded straight into a database with one SQL statement (PostgreSQL's generate_series, SQLite's recursive
CTE), so a million of them take seconds instead of a million registrations: user-service's `users` table and
fastapi-users' `user` table. Every seeded user shares one real bcrypt hash (cost 10), computed once."""

from __future__ import annotations

import functools
import secrets
import time

import bcrypt
from sqlalchemy import Connection, Engine, create_engine, text

# In namespace "bench", the benchmarks' own, users user0000000, user0000001, ... (emails the same, @example.com):
# no benchmark account (me, storm, up00, ...) has such a name.
SEED_SQL = {
    "postgresql": (
        "INSERT INTO users (id, namespace, username, password_hash, email, full_name, extra, is_active,"
        " failed_login_count, created_at, updated_at)"
        " SELECT gen_random_uuid(), 'bench', 'user' || lpad(i::text, 7, '0'), :hash,"
        " 'user' || lpad(i::text, 7, '0') || '@example.com', 'User Number ' || i, '{}', true, 0,"
        " timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second',"
        " timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second'"
        " FROM generate_series(0, :count - 1) AS i"
    ),
    "sqlite": (
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)"
        " INSERT INTO users (id, namespace, username, password_hash, email, full_name, extra, is_active,"
        " failed_login_count, created_at, updated_at)"
        " SELECT lower(hex(randomblob(16))), 'bench', 'user' || printf('%07d', i), :hash,"
        " 'user' || printf('%07d', i) || '@example.com', 'User Number ' || i, '{}', 1, 0,"
        " strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' seconds'),"
        " strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' seconds')"
        " FROM n"
    ),
}
# fastapi-users' table (fastapi-users-db-sqlalchemy): ids are PostgreSQL UUIDs, or on SQLite the 36-character text
# of a UUID, as its GUID type stores them.
PEER_SEED_SQL = {
    "postgresql": (
        'INSERT INTO "user" (id, email, hashed_password, is_active, is_superuser, is_verified)'
        " SELECT gen_random_uuid(), 'user' || lpad(i::text, 7, '0') || '@example.com', :hash, true, false, false"
        " FROM generate_series(0, :count - 1) AS i"
    ),
    "sqlite": (
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)"
        ' INSERT INTO "user" (id, email, hashed_password, is_active, is_superuser, is_verified)'
        " SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)"
        " || '-' || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-'"
        " || hex(randomblob(6))), 'user' || printf('%07d', i) || '@example.com', :hash, 1, 0, 0"
        " FROM n"
    ),
}


@functools.cache
def password_hash() -> str:
    """One real bcrypt hash at cost 10, shared by every seeded user (no one logs in as them)."""
    return bcrypt.hashpw(b"benchmark seeded user", bcrypt.gensalt(10)).decode()


def _seed(engine: Engine, kind: str, statement: str, table: str, count: int) -> float:
    """Run the seeding `statement`, check that `table` grew by `count` rows (Python's sqlite3 reports no row count
    for an INSERT that starts with WITH) and refresh PostgreSQL's statistics; the seconds taken."""

    def rows(connection: Connection) -> int:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608 (constants)

    began = time.perf_counter()
    try:
        with engine.begin() as connection:
            before = rows(connection)
            connection.execute(text(statement), {"count": count, "hash": password_hash()})
            inserted = rows(connection) - before
            if inserted != count:
                raise RuntimeError(f"seeding inserted {inserted} users instead of {count}")
            if kind == "postgresql":
                connection.execute(text(f"ANALYZE {table}"))
    finally:
        engine.dispose()
    return time.perf_counter() - began


def seed_by_sql(kind: str, url: str, count: int) -> float:
    """Add `count` users to user-service's database at `url` ("sqlite" or "postgresql" `kind`); the seconds taken."""
    from user_service.config import Settings
    from user_service.db import make_engine

    settings = Settings(
        database_url=url,
        jwt_secret_key=secrets.token_urlsafe(48),
        db_statement_timeout_seconds=3600,
        _env_file=None,  # type: ignore[call-arg]
    )
    return _seed(make_engine(settings), kind, SEED_SQL[kind], "users", count)


def seed_peer_by_sql(kind: str, url: str, count: int) -> float:
    """Add `count` users to fastapi-users' table, at a synchronous SQLAlchemy `url`; the seconds taken."""
    return _seed(create_engine(url), kind, PEER_SEED_SQL[kind], '"user"', count)
