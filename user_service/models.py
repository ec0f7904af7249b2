"""ORM tables (SQLAlchemy 2). The migrations in alembic/ are the source of the schema; these must agree."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from user_service.db import Base, UTCDateTime


def bytewise(length: int) -> String:
    """A string compared byte by byte: prefix searches are index ranges whatever the database's collation (SQLite's
    default BINARY already is; on PostgreSQL the "C" collation, which keeps equality as it was)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("namespace", "username"),
        UniqueConstraint("namespace", "email"),
        # A namespace's users in order of creation: the keyset pagination of listings.
        Index("ix_users_namespace_created_at_id", "namespace", "created_at", "id"),
        # A prefix search: the matches of a username or email prefix, in order of creation, from the index alone.
        Index("ix_users_search_username", "namespace", "username", "created_at", "id", "is_active"),
        Index("ix_users_search_email", "namespace", "email", "created_at", "id", "is_active"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    namespace: Mapped[str] = mapped_column(String(63))
    username: Mapped[str] = mapped_column(bytewise(64))
    password_hash: Mapped[str] = mapped_column(String(60))
    email: Mapped[str | None] = mapped_column(bytewise(320))
    full_name: Mapped[str | None] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    # Set when the avatar was uploaded here: the storage key of the file; avatar_url is then derived from it.
    avatar_key: Mapped[str | None] = mapped_column(String(64))
    extra: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AuthSession(Base):
    """One login: owns the chain of rotated refresh tokens."""

    __tablename__ = "auth_sessions"
    __table_args__ = (
        Index("ix_auth_sessions_user_id", "user_id"),
        # Pruning finds expired and long-ended sessions by these, without scanning the table.
        Index("ix_auth_sessions_expires_at", "expires_at"),
        Index("ix_auth_sessions_revoked_at", "revoked_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Absolute end of the session: rotation never extends it.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the session ended, when a client is told (`refresh_token_reused`); NULL for a logout or any other end.
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))
    # The assurance level the session was opened with: 'aal2' after a second factor, kept by every refresh.
    aal: Mapped[str] = mapped_column(String(8), default="aal1", server_default="aal1")


class RefreshToken(Base):
    """One refresh token of a session; only its SHA-256 digest is stored."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        UniqueConstraint("token_hash"),
        Index("ix_refresh_tokens_session_id", "session_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    """Consecutive failed logins of one account from one client (an address, or an IPv6 /64): the throttle that
    locks that client out of that account, apart from the account-wide lock kept on the user row."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_updated_at", "updated_at"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SigningKey(Base):
    """One asymmetric key pair for access tokens: the public half as a JWK, the private half encrypted with a key
    derived from JWT_SECRET_KEY. `slot` is 'current' or 'next' for the one key in that state and NULL once retired,
    so the database itself holds at most one signing key and one next key, whatever instances race."""

    __tablename__ = "signing_keys"
    __table_args__ = (UniqueConstraint("slot"),)

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    slot: Mapped[str | None] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)
    private_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminKey(Base):
    """A key an app's back end calls the admin API with; only its SHA-256 digest is stored. A key without a
    namespace reaches every namespace."""

    __tablename__ = "admin_keys"
    __table_args__ = (UniqueConstraint("name"), UniqueConstraint("key_hash"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str | None] = mapped_column(String(63))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OneTimeToken(Base):
    """A password-reset or email-verification token: single use, short-lived; only its SHA-256 digest is stored."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (UniqueConstraint("token_hash"), Index("ix_one_time_tokens_user_id", "user_id"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # 'password_reset' or 'email_verification'
    kind: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64))
    # The address a verification token was issued for: a changed address makes the token useless.
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaFactor(Base):
    """A user's TOTP factor: pending until confirmed with a code, at most one per user. The secret is sealed with a
    key derived from JWT_SECRET_KEY and bound to the user's id; `last_used_step` is the newest 30-second step whose
    code was accepted, so a code is never accepted twice."""

    __tablename__ = "mfa_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # A new id for each enrolment: a confirmation names the secret it checked the code against.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)


class MfaRecoveryCode(Base):
    """One single-use recovery code of a user; only its keyed digest is stored."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaChallenge(Base):
    """The second step of a login whose password was right: an opaque mfa_token (only its SHA-256 is stored),
    single use, short-lived, bound to the user and to the password hash that was checked."""

    __tablename__ = "mfa_challenges"
    __table_args__ = (
        UniqueConstraint("token_hash"),
        Index("ix_mfa_challenges_user_id", "user_id"),
        Index("ix_mfa_challenges_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))
    # SHA-256 of the password hash that was checked: a password changed since makes the challenge useless.
    password_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
