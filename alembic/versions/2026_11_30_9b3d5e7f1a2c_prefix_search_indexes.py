"""prefix search indexes

Revision ID: 9b3d5e7f1a2c
Revises: 4d2e8f1a9c07
Create Date: 2026-11-30 14:00:00.000000

A prefix search over a namespace's users wants the prefix's matches in order of creation. The unique indexes give
the matches as a range but not their creation time: each match cost a read of its row, and a prefix a hundred
thousand users share cost seconds. These indexes carry the creation time, id and active flag after the username or
email, so the first page of matches is sorted out of the index alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "9b3d5e7f1a2c"
down_revision: str | Sequence[str] | None = "4d2e8f1a9c07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_users_search_username": ["namespace", "username", "created_at", "id", "is_active"],
    "ix_users_search_email": ["namespace", "email", "created_at", "id", "is_active"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "users", columns, unique=False)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="users")
