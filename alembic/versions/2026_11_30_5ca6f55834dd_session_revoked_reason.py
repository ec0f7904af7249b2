"""session revoked reason

Revision ID: 5ca6f55834dd
Revises: afc364a26736
Create Date: 2026-11-30 09:00:00.000000

Sessions remember why they ended when the client is told: a session revoked because one of its refresh tokens was
presented twice answers `session_revoked` to its remaining tokens, so an app can tell its user why they must log in
again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5ca6f55834dd"
down_revision: str | Sequence[str] | None = "afc364a26736"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:
        batch.add_column(sa.Column("revoked_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch:
        batch.drop_column("revoked_reason")
