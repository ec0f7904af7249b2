"""Alembic environment: runs on a connection handed over by `user-service migrate`, or opens one from the
service's settings when run as `alembic ...` from the repository root."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from user_service import models  # noqa: F401  (registers the tables on Base.metadata)
from user_service.config import load_settings
from user_service.db import Base, make_engine

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run against a database")
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    settings = load_settings(database_url=url) if url else load_settings()
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


main()
