"""login failures per client

Revision ID: 3b1f0c9d2e71
Revises: 5cd6b97abf49
Create Date: 2026-11-30 08:00:00.000000

Failed logins counted per account and client address, so that one client's failures lock that client out of the
account without locking the account's owner out from everywhere. Users gain the time of their last login, and an
index that lists a namespace's users in order of creation (keyset pagination).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b1f0c9d2e71"
down_revision: str | Sequence[str] | None = "5cd6b97abf49"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_login_failures_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "client", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_updated_at", "login_failures", ["updated_at"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_users_namespace_created_at_id", "users", ["namespace", "created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_users_namespace_created_at_id", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_login_at")
    op.drop_index("ix_login_failures_updated_at", table_name="login_failures")
    op.drop_table("login_failures")
