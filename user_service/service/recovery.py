"""One-time tokens: password resets and email verification, started by an app's back end, finished by the user.

The service sends no mail: the back end asks for a token and delivers it however it likes. A token is 256 random
bits; only its SHA-256 digest is stored, and it is found by that digest, so no bcrypt runs to find it and an unknown
token costs the same statements as a known one. It is spent by one conditional UPDATE (unused, unexpired, of the
right kind) with RETURNING: of two uses at once, exactly one wins. A newer token of a kind, and a password change,
make the older tokens of that kind useless.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Literal

from user_service.errors import OneTimeTokenInvalid
from user_service.events import security_event
from user_service.passwords import check_password_policy
from user_service.schemas import OneTimeTokenOut, Profile
from user_service.service import accounts
from user_service.service import admin_statements as admin_sql
from user_service.service import statements as sql
from user_service.service.context import Account, Context
from user_service.service.database import Transaction
from user_service.service.profiles import profile_of

TokenKind = Literal["password_reset", "email_verification"]
PASSWORD_RESET: TokenKind = "password_reset"  # noqa: S105 (a token kind, not a secret)
EMAIL_VERIFICATION: TokenKind = "email_verification"
# Bound what a presented token may be before it is hashed: a token this service made is 43 characters.
_TOKEN_MAX = 128


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def spend_open_tokens(tx: Transaction, user_id: uuid.UUID, kind: TokenKind, now: datetime) -> None:
    """Within the caller's write transaction: make every unused token of this kind of the user useless."""
    tx.execute(admin_sql.SPEND_OPEN_TOKENS, {"owner_key": user_id, "token_kind": kind, "now": now})


def issue(ctx: Context, user: Account, kind: TokenKind, *, actor: str) -> OneTimeTokenOut:
    """A new token of `kind` for the user (for their current email, for a verification); older ones stop working."""
    ttl = (
        ctx.settings.password_reset_ttl_seconds
        if kind == PASSWORD_RESET
        else ctx.settings.email_verification_ttl_seconds
    )
    token = secrets.token_urlsafe(32)
    now = ctx.clock()
    expires_at = now + timedelta(seconds=ttl)
    with ctx.db.write() as tx:
        spend_open_tokens(tx, user.id, kind, now)
        tx.execute(
            admin_sql.INSERT_ONE_TIME_TOKEN,
            {
                "id": uuid.uuid4(),
                "user_id": user.id,
                "kind": kind,
                "token_hash": _digest(token),
                "email": user.email if kind == EMAIL_VERIFICATION else None,
                "created_at": now,
                "expires_at": expires_at,
                "used_at": None,
            },
        )
    security_event(f"{kind}_issued", namespace=user.namespace, user_id=user.id, actor=actor)
    return OneTimeTokenOut(token=token, expires_at=expires_at)


def _claim(tx: Transaction, token: str, kind: TokenKind, now: datetime) -> tuple[Account, str | None]:
    """Within a write transaction: spend the token and lock its user's row; OneTimeTokenInvalid when it is
    unknown, spent, expired or of another kind (one answer for all)."""
    claimed = tx.execute(
        admin_sql.CLAIM_ONE_TIME_TOKEN, {"digest": _digest(token[:_TOKEN_MAX]), "token_kind": kind, "now": now}
    ).first()
    if claimed is None or len(token) > _TOKEN_MAX:
        raise OneTimeTokenInvalid()
    row = tx.execute(sql.ACCOUNT_FOR_UPDATE, {"user_id": claimed.user_id}).first()
    if row is None:
        raise OneTimeTokenInvalid()
    return Account.from_row(row._mapping), claimed.token_email


def reset_password(ctx: Context, token: str, new_password: str, *, ip: str | None = None) -> None:
    """Spend a reset token for a new password: the policy applies, every session ends, a lock is lifted. No
    session starts (the user logs in with the new password)."""
    # The rules that need no account first; then the hash, whether the token is good or not, so that an unknown
    # token takes as long as a known one.
    check_password_policy(new_password, min_length=ctx.settings.password_min_length)
    new_hash = ctx.passwords.hash(new_password)
    now = ctx.clock()
    with ctx.db.write() as tx:
        user, _ = _claim(tx, token, PASSWORD_RESET, now)
        # A password naming the account is refused; the transaction rolls back and the token stays usable.
        accounts.check_policy(ctx, new_password, user)
        ended = accounts.store_new_password(tx, user.id, new_hash, now)
    security_event("password_reset", namespace=user.namespace, user_id=user.id, sessions=ended, ip=ip, actor="token")


def verify_email(ctx: Context, token: str, *, ip: str | None = None) -> Profile:
    """Spend a verification token: the user's email is verified if it is still the address the token was for."""
    now = ctx.clock()
    with ctx.db.write() as tx:
        user, email = _claim(tx, token, EMAIL_VERIFICATION, now)
        if email is None or user.email != email:
            raise OneTimeTokenInvalid()
        tx.execute(sql.UPDATE_USER, {"user_key": user.id, "email_verified": True, "updated_at": now})
    security_event("email_verified", namespace=user.namespace, user_id=user.id, ip=ip)
    return profile_of(ctx, accounts.find_user(ctx, user.namespace, user.username))
