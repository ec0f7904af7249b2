"""The second factor: TOTP enrolment and confirmation, recovery codes, the second step of a login, removal.

Codes are RFC 6238 (SHA-1, 6 digits, 30-second steps, one step of drift either way), computed at the service's
clock. A code is accepted once: its step must come after the newest step accepted for the factor, claimed by one
conditional UPDATE. Recovery codes are single use, claimed the same way. Every code checked is reserved like a
password check first (logins.py): wrong codes count toward the same lockout as wrong passwords, and a right one
clears the counts. Secrets are sealed with a key derived from JWT_SECRET_KEY, bound to the user's id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pyotp
import segno

from user_service import security, signing
from user_service.errors import (
    InvalidToken,
    MfaAlreadyEnabled,
    MfaCodeInvalid,
    MfaCodeReused,
    MfaNotEnrolled,
    MfaTokenInvalid,
    UserDisabled,
    UserServiceError,
)
from user_service.events import security_event
from user_service.schemas import Profile, RecoveryCodes, TokenPair, TotpEnrolment
from user_service.service import accounts, logins, sessions
from user_service.service import mfa_statements as mfa_sql
from user_service.service import statements as sql
from user_service.service.context import Account, Context, Principal
from user_service.service.database import Transaction
from user_service.service.profiles import profile_of

STEP_SECONDS = 30
DIGITS = 6
# Steps of drift accepted either side of the current one.
VALID_WINDOW = 1
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # 5 bits a character: 50 bits a code
_RECOVERY_LENGTH = 10


@dataclass(frozen=True, slots=True)
class _Factor:
    id: uuid.UUID
    secret: str
    confirmed: bool
    last_used_step: int | None


@dataclass(frozen=True, slots=True)
class _Match:
    """A code that checked out: a TOTP code's step, or a recovery code's row."""

    step: int | None = None
    recovery_code: uuid.UUID | None = None


def _bound_to(user_id: uuid.UUID) -> str:
    return f"mfa:{user_id}"


def _seal(ctx: Context, user_id: uuid.UUID, secret: str) -> str:
    return signing.seal(secret.encode("ascii"), secret=ctx.settings.signing_key(), bound_to=_bound_to(user_id))


def _factor(ctx: Context, user_id: uuid.UUID) -> _Factor | None:
    """The user's factor with its secret opened; None when there is none."""
    row = ctx.db.read_one(mfa_sql.FACTOR, {"user_id": user_id})
    if row is None:
        return None
    opened = signing.unseal(row["secret"], secret=ctx.settings.signing_key(), bound_to=_bound_to(user_id))
    return _Factor(row["id"], opened.decode("ascii"), row["confirmed_at"] is not None, row["last_used_step"])


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS, digest=hashlib.sha1)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The newest step within the window whose code is `code`, compared in constant time; None when none is."""
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = _totp(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    matched = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def _normal_recovery_code(code: str) -> str | None:
    normal = code.strip().lower().replace("-", "").replace(" ", "")
    if len(normal) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in normal):
        return None
    return normal


def _recovery_digest(ctx: Context, user_id: uuid.UUID, normal: str) -> str:
    return signing.keyed_digest(normal, secret=ctx.settings.signing_key(), bound_to=str(user_id))


def _new_recovery_codes() -> list[str]:
    codes = (
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH)) for _ in range(RECOVERY_CODE_COUNT)
    )
    return [f"{code[:5]}-{code[5:]}" for code in codes]


def _check_code(ctx: Context, user_id: uuid.UUID, factor: _Factor, code: str, now: datetime) -> _Match:
    """Which TOTP step or recovery code `code` is; MfaCodeInvalid or MfaCodeReused otherwise. Nothing is claimed."""
    step = _matching_step(factor.secret, code.strip(), now)
    if step is not None:
        if factor.last_used_step is not None and step <= factor.last_used_step:
            raise MfaCodeReused()
        return _Match(step=step)
    normal = _normal_recovery_code(code) if factor.confirmed else None
    if normal is not None:
        row = ctx.db.read_one(
            mfa_sql.RECOVERY_CODE, {"user_id": user_id, "digest": _recovery_digest(ctx, user_id, normal)}
        )
        if row is not None and row["used_at"] is not None:
            raise MfaCodeReused()
        if row is not None:
            return _Match(recovery_code=row["id"])
    raise MfaCodeInvalid()


def _claim(tx: Transaction, user_id: uuid.UUID, factor: _Factor, match: _Match, now: datetime) -> None:
    """Within the caller's write transaction: spend the step or the recovery code; MfaCodeReused when a request
    racing this one spent it first (or a newer step) meanwhile."""
    if match.step is not None:
        params: Mapping[str, Any] = {"owner_key": user_id, "factor_key": factor.id, "step": match.step}
        claimed = tx.execute(mfa_sql.CLAIM_STEP, params).rowcount
    else:
        claimed = tx.execute(mfa_sql.SPEND_RECOVERY_CODE, {"code_key": match.recovery_code, "now": now}).rowcount
    if claimed != 1:
        raise MfaCodeReused()


def _proved(
    ctx: Context, user: Account, factor: _Factor, code: str, now: datetime, *, ip: str | None, gone: UserServiceError
) -> tuple[logins.Attempt, _Match]:
    """Reserve the check of a code like a password check, then make it; a wrong or reused code stays counted."""
    attempt = logins.reserve(ctx, user, now, ip=ip, gone=gone, step="mfa")
    try:
        return attempt, _check_code(ctx, user.id, factor, code, now)
    except MfaCodeReused:
        logins.refused(attempt, ip=ip, event="mfa_code_reused")
        raise
    except MfaCodeInvalid:
        logins.refused(attempt, ip=ip, event="mfa_failed")
        raise


def _recovery_used(ctx: Context, user: Account, match: _Match | None, ip: str | None) -> None:
    """Log the use of a recovery code, with how many the user has left."""
    if match is None or match.recovery_code is None:
        return
    with ctx.db.read() as tx:
        left = len(tx.execute(mfa_sql.RECOVERY_CODES_LEFT, {"user_id": user.id}).all())
    security_event("mfa_recovery_code_used", namespace=user.namespace, user_id=user.id, left=left, ip=ip)


# -- enrolment ------------------------------------------------------------------------------------------------------


def enrol(ctx: Context, principal: Principal, *, ip: str | None = None) -> TotpEnrolment:
    """A new pending TOTP secret, replacing a pending one; MfaAlreadyEnabled when a confirmed factor exists."""
    user = principal.user
    secret = pyotp.random_base32()
    now = ctx.clock()
    with ctx.db.write() as tx:
        if tx.execute(sql.ACCOUNT_FOR_UPDATE, {"user_id": user.id}).first() is None:
            raise InvalidToken()
        existing = tx.execute(mfa_sql.FACTOR, {"user_id": user.id}).first()
        if existing is not None and existing._mapping["confirmed_at"] is not None:
            raise MfaAlreadyEnabled()
        tx.execute(mfa_sql.DELETE_PENDING_FACTOR, {"owner_key": user.id})
        tx.execute(
            mfa_sql.INSERT_FACTOR,
            {
                "user_id": user.id,
                "id": uuid.uuid4(),
                "secret": _seal(ctx, user.id, secret),
                "created_at": now,
                "confirmed_at": None,
                "last_used_step": None,
            },
        )
    security_event("mfa_enrolled", namespace=user.namespace, user_id=user.id, session_id=principal.session_id, ip=ip)
    uri = _totp(secret).provisioning_uri(name=f"{user.namespace}/{user.username}", issuer_name=ctx.settings.mfa_issuer)
    return TotpEnrolment(secret=secret, uri=uri, qr_png=_qr_png(uri))


def _qr_png(uri: str) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="png", scale=4, border=4)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confirm(ctx: Context, principal: Principal, code: str, *, ip: str | None = None) -> RecoveryCodes:
    """Confirm the pending factor with a code from it: the factor is on, ten recovery codes are made (returned once,
    stored as digests), and every other session of the user ends. Of two confirmations, one wins; the other is
    MfaAlreadyEnabled."""
    user = principal.user
    now = ctx.clock()
    factor = _factor(ctx, user.id)
    if factor is None:
        raise MfaNotEnrolled()
    if factor.confirmed:
        raise MfaAlreadyEnabled()
    attempt, match = _proved(ctx, user, factor, code, now, ip=ip, gone=InvalidToken())
    codes = _new_recovery_codes()
    with ctx.db.write() as tx:
        if (
            tx.execute(mfa_sql.CONFIRM_FACTOR, {"owner_key": user.id, "factor_key": factor.id, "now": now}).rowcount
            != 1
        ):
            current = tx.execute(mfa_sql.FACTOR, {"user_id": user.id}).first()
            raise MfaAlreadyEnabled() if current is not None and current._mapping["confirmed_at"] else MfaNotEnrolled()
        _claim(tx, user.id, factor, match, now)
        tx.execute(mfa_sql.DELETE_RECOVERY_CODES, {"owner_key": user.id})
        for recovery_code in codes:
            digest = _recovery_digest(ctx, user.id, recovery_code.replace("-", ""))
            tx.execute(
                mfa_sql.INSERT_RECOVERY_CODE,
                {"id": uuid.uuid4(), "user_id": user.id, "code_hash": digest, "created_at": now, "used_at": None},
            )
        ended = sessions.end_other_sessions(tx, user.id, principal.session_id, now)
        logins.clear_failures(tx, attempt)
    security_event(
        "mfa_confirmed", namespace=user.namespace, user_id=user.id, session_id=principal.session_id, sessions=ended
    )
    return RecoveryCodes(recovery_codes=codes)


def remove(
    ctx: Context, principal: Principal, *, code: str | None = None, password: str | None = None, ip: str | None = None
) -> Profile:
    """Remove the user's factor (pending or confirmed) and its recovery codes, proven by a code or the password;
    MfaNotEnrolled when there is none."""
    user = principal.user
    now = ctx.clock()
    factor = _factor(ctx, user.id)
    if factor is None:
        raise MfaNotEnrolled()
    match: _Match | None = None
    if code is not None:
        attempt, match = _proved(ctx, user, factor, code, now, ip=ip, gone=InvalidToken())
    else:
        attempt = logins.check_password(ctx, user, password or "", now, ip=ip, gone=InvalidToken())
    with ctx.db.write() as tx:
        if match is not None:
            _claim(tx, user.id, factor, match, now)
        _delete_factor(tx, user.id)
        logins.clear_failures(tx, attempt)
    _recovery_used(ctx, user, match, ip)
    security_event("mfa_removed", namespace=user.namespace, user_id=user.id, session_id=principal.session_id, ip=ip)
    return profile_of(ctx, replace(attempt.account, mfa_enabled=False))


def _delete_factor(tx: Transaction, user_id: uuid.UUID) -> int:
    """Within the caller's write transaction: the factor, its recovery codes and open challenges go; 1 when there
    was a factor."""
    removed = int(tx.execute(mfa_sql.DELETE_FACTOR, {"owner_key": user_id}).rowcount)
    tx.execute(mfa_sql.DELETE_RECOVERY_CODES, {"owner_key": user_id})
    tx.execute(mfa_sql.DELETE_CHALLENGES, {"owner_key": user_id})
    return removed


def reset(ctx: Context, *, namespace: str, username: str, actor: str = "operator") -> tuple[bool, int]:
    """Operators: remove the user's factor and recovery codes and end every session of the user. Returns whether
    there was a factor, and how many sessions ended."""
    user = accounts.find_user(ctx, namespace, username)
    with ctx.db.write() as tx:
        removed = _delete_factor(tx, user.id)
        ended = sessions.end_sessions(tx, user.id, ctx.clock())
    security_event(
        "mfa_reset", namespace=user.namespace, user_id=user.id, removed=bool(removed), sessions=ended, actor=actor
    )
    return bool(removed), ended


# -- the second step of a login -------------------------------------------------------------------------------------


def complete_login(
    ctx: Context, mfa_token: str, code: str, *, user_agent: str | None = None, ip: str | None = None
) -> TokenPair:
    """Spend an mfa_token with a TOTP or recovery code for a token pair at aal2. The token is spent in the same
    transaction as the code and the session, so of two requests with one token, one gets a pair."""
    now = ctx.clock()
    row = ctx.db.read_one(mfa_sql.CHALLENGE, {"digest": security.refresh_token_digest(mfa_token)})
    if row is None or row["used_at"] is not None or row["expires_at"] <= now:
        security_event("mfa_failed", reason="mfa_token", ip=ip)
        raise MfaTokenInvalid()
    found = ctx.db.read_one(sql.ACCOUNT_BY_ID, {"user_id": row["user_id"]})
    factor = _factor(ctx, row["user_id"])
    if found is None or factor is None or not factor.confirmed:
        raise MfaTokenInvalid()
    user = Account.from_row(found)
    attempt, match = _proved(ctx, user, factor, code, now, ip=ip, gone=MfaTokenInvalid())
    # The account as it is now (read under the reservation's lock) must be the one the challenge was opened for.
    if logins.password_digest(attempt.account.password_hash) != row["password_digest"]:
        raise MfaTokenInvalid()
    if not attempt.account.is_active:
        raise UserDisabled()

    def spend(tx: Transaction) -> None:
        if tx.execute(mfa_sql.SPEND_CHALLENGE, {"challenge_key": row["id"], "now": now}).rowcount != 1:
            raise MfaTokenInvalid()
        _claim(tx, user.id, factor, match, now)

    pair, session_id = logins.start_session(
        ctx,
        attempt,
        now=now,
        user_agent=user_agent,
        ip=ip,
        new_hash=None,
        gone=MfaTokenInvalid(),
        login=True,
        aal=security.AAL2,
        claims=spend,
    )
    who = {"namespace": user.namespace, "user_id": user.id, "session_id": session_id, "ip": ip}
    security_event("mfa_passed", method="totp" if match.step is not None else "recovery_code", **who)
    security_event("login", username=user.username, aal=security.AAL2, **who)
    _recovery_used(ctx, user, match, ip)
    return pair
