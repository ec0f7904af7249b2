"""Access tokens: issuing a pair for a session, and checking a presented token against the user and its session."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from user_service import security
from user_service.errors import ErrorCode, InvalidToken, MfaEnrolmentRequired, SessionRevoked, UserDisabled
from user_service.schemas import TokenPair
from user_service.service import keys
from user_service.service import statements as sql
from user_service.service.context import Account, Context, Principal, TokenSubject
from user_service.signing import PrivateKey, PublicKey


def prepare(ctx: Context) -> None:
    """Have the signing keys in memory (read, or created on a database without any) before a write transaction
    that issues a token begins: the keys' own writes never run inside another transaction."""
    if ctx.settings.uses_key_store:
        keys.snapshot(ctx)


def pair(
    ctx: Context,
    subject: TokenSubject | Account,
    session_id: uuid.UUID,
    refresh_token: str,
    now: datetime,
    access_ttl: int | None = None,
    *,
    aal: str = security.AAL1,
    scope: str | None = None,
) -> TokenPair:
    """A session's new access token, at the session's assurance level, with the refresh token just stored for it."""
    settings = ctx.settings
    ttl = access_ttl or settings.access_token_ttl_seconds
    key: str | PrivateKey
    algorithm: str
    kid: str | None
    if settings.uses_key_store:
        signer = keys.signer(ctx)
        key, algorithm, kid = signer.private_key, signer.algorithm, signer.kid
    else:
        key, algorithm, kid = settings.signing_key(), settings.jwt_algorithm, None
    access_token = security.encode_access_token(
        key=key,
        algorithm=algorithm,
        kid=kid,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        user_id=subject.id,
        namespace=subject.namespace,
        username=subject.username,
        session_id=session_id,
        now=now,
        ttl_seconds=ttl,
        aal=aal,
        scope=scope,
    )
    return TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=ttl,
        expires_at=now + timedelta(seconds=ttl),
    )


def authenticate(ctx: Context, access_token: str, *, enrolment: bool = False) -> Principal:
    """The active user an access token names, read on every call, and its session, which must be open. A token
    limited to second-factor enrolment is refused (MfaEnrolmentRequired) unless `enrolment` allows it."""
    now = ctx.clock()
    claims = _allowed(verified_claims(ctx, access_token, now), enrolment=enrolment)
    return _principal(claims, ctx.db.read_one(sql.PRINCIPAL, _principal_key(claims)), now)


async def authenticate_remembered(ctx: Context, access_token: str) -> Principal | None:
    """`authenticate` (no enrolment) for a token this process has verified before, its read awaited on the event
    loop; None for any other token, which needs the full check (`authenticate`, in a worker thread: it may verify a
    signature or read the keys)."""
    now = ctx.clock()
    remembered = _remembered_claims(ctx, access_token, now)
    if remembered is None:
        return None
    claims = _allowed(remembered, enrolment=False)
    return _principal(claims, await ctx.db.read_one_on_loop(sql.PRINCIPAL, _principal_key(claims)), now)


def _allowed(claims: security.AccessClaims, *, enrolment: bool) -> security.AccessClaims:
    if claims.scope is not None and not (enrolment and claims.scope == security.ENROLMENT_SCOPE):
        raise MfaEnrolmentRequired()
    return claims


def _principal_key(claims: security.AccessClaims) -> dict[str, uuid.UUID]:
    return {"user_id": claims.user_id, "session_id": claims.session_id}


def _principal(claims: security.AccessClaims, row: Mapping[str, Any] | None, now: datetime) -> Principal:
    """The principal of the row that PRINCIPAL read for the token's claims, if the user and session let it in."""
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
    return Principal(user=user, session_id=claims.session_id, aal=claims.aal, scope=claims.scope)


# Longer tokens are verified every time instead of remembered (the service's own are about 500 characters).
_CACHED_TOKEN_MAX_CHARS = 2048


def verified_claims(ctx: Context, access_token: str, now: datetime) -> security.AccessClaims:
    """The claims of a valid access token. A token verified before by this process is taken from memory while it
    is unexpired and not issued in the future (the only checks whose outcome changes with time); any other goes
    through the full check: the kid's key, in that key's algorithm, and every claim."""
    remembered = _remembered_claims(ctx, access_token, now)
    if remembered is not None:
        return remembered
    settings = ctx.settings
    key: str | PublicKey = settings.signing_key()
    algorithm: str = settings.jwt_algorithm
    if settings.uses_key_store:
        # The token's kid only picks the key; the key's own algorithm is the one accepted (never the header's).
        kid = security.token_key_id(access_token)
        found = keys.verifying_key(ctx, kid) if kid is not None else None
        if found is None:
            raise InvalidToken()
        key, algorithm = found
    claims = security.decode_access_token(
        access_token,
        key=key,
        algorithm=algorithm,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        now=now,
    )
    if len(access_token) <= _CACHED_TOKEN_MAX_CHARS:
        ctx.keys.verified.put(access_token, claims)
    return claims


def _remembered_claims(ctx: Context, access_token: str, now: datetime) -> security.AccessClaims | None:
    """The claims of a token this process verified before, while it is unexpired and not issued in the future (the
    only checks whose outcome changes with time)."""
    moment = now.timestamp()
    cached = ctx.keys.verified.get(access_token, moment)
    if cached is not None and cached.issued_at <= moment + security.CLOCK_LEEWAY_SECONDS:
        claims: security.AccessClaims = cached
        return claims
    return None
