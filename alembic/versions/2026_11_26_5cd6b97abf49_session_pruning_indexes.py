"""session pruning indexes

Revision ID: 5cd6b97abf49
Revises: 8673098d24af
Create Date: 2026-11-26 01:33:29.888166

Indexes that let `user-service prune-sessions` find expired and ended sessions and tokens without a scan.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5cd6b97abf49"
down_revision: str | Sequence[str] | None = "8673098d24af"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_auth_sessions_expires_at", "auth_sessions", ["expires_at"], unique=False)
    op.create_index("ix_auth_sessions_revoked_at", "auth_sessions", ["revoked_at"], unique=False)
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
    op.drop_index("ix_auth_sessions_revoked_at", table_name="auth_sessions")
    op.drop_index("ix_auth_sessions_expires_at", table_name="auth_sessions")
