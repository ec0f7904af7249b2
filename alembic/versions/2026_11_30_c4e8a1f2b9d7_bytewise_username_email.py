"""bytewise username and email on PostgreSQL

Revision ID: c4e8a1f2b9d7
Revises: 7ebba849e0a1
Create Date: 2026-11-30 11:30:00.000000

A prefix search over a namespace's users (list-users --search, the admin API's search) is a range over the
(namespace, username) and (namespace, email) unique indexes. A range is the set of strings that start with the
prefix only when the column compares byte by byte: SQLite's default BINARY does; on PostgreSQL the columns take the
"C" collation, whatever the database's default is. Equality, and so uniqueness, is unchanged (the default
collations are deterministic); the unique indexes are rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4e8a1f2b9d7"
down_revision: str | Sequence[str] | None = "7ebba849e0a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {"username": 64, "email": 320}


def _collate(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, length in COLUMNS.items():
        op.alter_column("users", column, type_=sa.String(length, collation=collation), existing_type=sa.String(length))


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
