"""Access tokens: issuing a pair for a session, and checking a presented token against the user and its session."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from user_service import security
from user_service.errors import ErrorCode, InvalidToken, SessionRevoked, UserDisabled
from user_service.schemas import TokenPair
from user_service.service import statements as sql
from user_service.service.context import Account, Context, Principal, TokenSubject


def pair(
    ctx: Context,
    subject: TokenSubject | Account,
    session_id: uuid.UUID,
    refresh_token: str,
    now: datetime,
    access_ttl: int | None = None,
) -> TokenPair:
    """A session's new access token, with the refresh token that was just stored for it."""
    settings = ctx.settings
    ttl = access_ttl or settings.access_token_ttl_seconds
    access_token = security.encode_access_token(
        key=settings.signing_key(),
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        user_id=subject.id,
        namespace=subject.namespace,
        username=subject.username,
        session_id=session_id,
        now=now,
        ttl_seconds=ttl,
    )
    return TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=ttl,
        expires_at=now + timedelta(seconds=ttl),
    )


def authenticate(ctx: Context, access_token: str) -> Principal:
    """The active user an access token names, read on every call, and its session, which must be open."""
    settings = ctx.settings
    now = ctx.clock()
    claims = security.decode_access_token(
        access_token,
        key=settings.signing_key(),
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        now=now,
    )
    row = ctx.db.read_one(sql.PRINCIPAL, {"user_id": claims.user_id, "session_id": claims.session_id})
    if row is None:
        raise InvalidToken()
    user = Account.from_row(row)
    if user.namespace != claims.namespace:
        raise InvalidToken()
    # A disabled account says so (403), although disabling it also ended its sessions.
    if not user.is_active:
        raise UserDisabled()
    if row["session_revoked_at"] is not None and row["session_revoked_reason"] == ErrorCode.REFRESH_TOKEN_REUSED:
        raise SessionRevoked()
    if row["session_revoked_at"] is not None or row["session_expires_at"] <= now:
        raise InvalidToken()
    return Principal(user=user, session_id=claims.session_id)
