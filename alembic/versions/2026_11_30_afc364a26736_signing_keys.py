"""signing keys

Revision ID: afc364a26736
Revises: 3b1f0c9d2e71
Create Date: 2026-11-30 09:00:00.000000

Asymmetric keys for access tokens, shared by every instance: the public half published as a JWKS, the private half
stored encrypted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "afc364a26736"
down_revision: str | Sequence[str] | None = "3b1f0c9d2e71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.String(length=16), nullable=True),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("slot", name=op.f("uq_signing_keys_slot")),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
