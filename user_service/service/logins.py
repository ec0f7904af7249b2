"""Logging in: the password check, the throttles that guard it, and password changes.

Every password check is reserved before bcrypt runs: one write transaction, holding the user's row lock, refuses a
locked client or account and counts the attempt as a failure up front. So however many guesses arrive at once, on
however many workers and instances, at most `LOGIN_MAX_FAILURES` of them are checked for one client before that
client is locked out of the account, and at most `LOGIN_ACCOUNT_MAX_FAILURES` from all clients before the account
locks. A right password then clears the counts, and starts a session, only if the account still has the hash that
was checked and is still active (one conditional statement): a password change, a reset or a disable that lands
while a login is in flight wins.

An account with a confirmed second factor gets no session for a right password: it gets a login challenge (an
mfa_token), and its reserved attempt stays counted until a right code (see mfa.py) clears the counts, so knowing
the password never buys more code guesses than the lockout allows. In a namespace of MFA_REQUIRED_NAMESPACES, an
account without one gets a short session whose only token is limited to enrolling a factor.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from user_service import security
from user_service.addresses import client_key
from user_service.errors import (
    EmailNotVerified,
    InvalidCredentials,
    InvalidToken,
    MfaEnrolmentRequired,
    TooManyAttempts,
    UserDisabled,
    UserServiceError,
)
from user_service.events import security_event
from user_service.schemas import MfaChallenge, TokenPair
from user_service.service import accounts, sessions
from user_service.service import admin_statements as admin_sql
from user_service.service import mfa_statements as mfa_sql
from user_service.service import statements as sql
from user_service.service.context import Account, Context, Principal
from user_service.service.database import Transaction

_NOBODY = uuid.UUID(int=0)
# How long an mfa_token, and a token limited to enrolment, live.
MFA_CHALLENGE_SECONDS = 300
ENROLMENT_TOKEN_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved password check: the account as read under its lock, and the counts if the check fails."""

    account: Account
    client: str
    form: str | None
    failures: int
    account_failures: int
    lock_seconds: int
    account_lock_seconds: int


def login(
    ctx: Context,
    *,
    namespace: str,
    username: str,
    password: str,
    user_agent: str | None = None,
    ip: str | None = None,
) -> TokenPair | MfaChallenge:
    """Check the password and start a session, or, for an account with a second factor, open a challenge; the same
    InvalidCredentials for every kind of miss."""
    key = accounts.normalized_name(namespace, username)
    user = accounts.find(ctx, *key) if key else None
    if user is None:
        _refuse_unknown(ctx, password)
        security_event("login_failed", namespace=key[0] if key else None, username=key[1] if key else None, ip=ip)
        raise InvalidCredentials()
    now = ctx.clock()
    attempt = check_password(ctx, user, password, now, ip=ip, gone=InvalidCredentials())
    if not attempt.account.is_active:
        raise UserDisabled()
    if ctx.settings.login_require_verified_email and not attempt.account.email_verified:
        security_event("login_refused_unverified", namespace=user.namespace, user_id=user.id, ip=ip)
        raise EmailNotVerified()
    # A hash of another cost, or of the password as typed before passwords were normalized, is replaced.
    stale = attempt.form == "typed" or ctx.passwords.needs_rehash(attempt.account.password_hash)
    new_hash = ctx.passwords.hash(password) if stale else None
    if attempt.account.mfa_enabled:
        challenge = _open_challenge(ctx, attempt, now=now, new_hash=new_hash)
        security_event("mfa_challenge", namespace=user.namespace, username=user.username, user_id=user.id, ip=ip)
        return challenge
    enrolment = ctx.settings.mfa_required(user.namespace)
    pair, session_id = start_session(
        ctx,
        attempt,
        now=now,
        user_agent=user_agent,
        ip=ip,
        new_hash=new_hash,
        gone=InvalidCredentials(),
        login=True,
        scope=security.ENROLMENT_SCOPE if enrolment else None,
    )
    security_event(
        "login", namespace=user.namespace, username=user.username, user_id=user.id, session_id=session_id, ip=ip
    )
    if enrolment:
        security_event("mfa_enrolment_required", namespace=user.namespace, user_id=user.id, session_id=session_id)
        raise MfaEnrolmentRequired(pair.access_token, pair.expires_in)
    return pair


def password_digest(password_hash: str) -> str:
    """What a challenge keeps of the password hash it was opened for: a changed password makes it useless."""
    return hashlib.sha256(password_hash.encode("ascii", "surrogatepass")).hexdigest()


def _open_challenge(ctx: Context, attempt: Attempt, *, now: datetime, new_hash: str | None) -> MfaChallenge:
    """The first step of a login with a second factor: a single-use mfa_token for the account as it was verified.
    The attempt stays counted (the counts are cleared only by a right code); a stale hash is replaced all the same.
    The second step checks that the account still has the hash the challenge was opened for."""
    user = attempt.account
    token = security.new_refresh_token()
    verified_hash = new_hash or user.password_hash
    with ctx.db.write() as tx:
        if new_hash is not None:
            values = {
                "user_key": user.id,
                "verified_hash": user.password_hash,
                "password_hash": new_hash,
                "updated_at": now,
            }
            if tx.execute(sql.UPDATE_VERIFIED_USER, values).first() is None:
                raise InvalidCredentials()
        tx.execute(
            mfa_sql.INSERT_CHALLENGE,
            {
                "id": uuid.uuid4(),
                "user_id": user.id,
                "token_hash": security.refresh_token_digest(token),
                "password_digest": password_digest(verified_hash),
                "created_at": now,
                "expires_at": now + timedelta(seconds=MFA_CHALLENGE_SECONDS),
                "used_at": None,
            },
        )
    return MfaChallenge(mfa_token=token, expires_in=MFA_CHALLENGE_SECONDS)


def _refuse_unknown(ctx: Context, password: str) -> None:
    """Spend what a known account's refusal costs (a reservation write and a bcrypt check), so that neither time
    nor anything else tells an unknown account from a wrong password."""
    with ctx.db.write() as tx:
        tx.execute(sql.SET_ACCOUNT_FAILURES, {"user_key": _NOBODY, "failed_login_count": 0})
    ctx.passwords.equalise_timing(password)


def _lock_seconds(ctx: Context, failures: int, threshold: int) -> int:
    """How long `failures` consecutive failures lock for: none below the threshold, then doubling up to the cap
    (Keycloak's shape)."""
    if failures < threshold:
        return 0
    settings = ctx.settings
    doublings = min(failures - threshold, 32)
    return int(min(settings.login_lockout_seconds * 2**doublings, settings.login_lockout_max_seconds))


def _reserve(ctx: Context, user_id: uuid.UUID, client: str, now: datetime, *, gone: UserServiceError) -> Attempt:
    """Count one password check as a failure before it runs, unless the client or the account is locked."""
    settings = ctx.settings
    with ctx.db.write() as tx:
        row = tx.execute(sql.ACCOUNT_FOR_UPDATE, {"user_id": user_id}).first()
        if row is None:
            raise gone
        account = Account.from_row(row._mapping)
        found = tx.execute(sql.CLIENT_FAILURES, {"user_id": user_id, "client": client}).first()
        previous, client_until = (found.failures, found.locked_until) if found is not None else (0, None)
        locked = [until for until in (account.locked_until, client_until) if until is not None and until > now]
        if locked:
            raise TooManyAttempts(math.ceil((max(locked) - now).total_seconds()))
        failures, account_failures = previous + 1, account.failed_login_count + 1
        lock = _lock_seconds(ctx, failures, settings.login_max_failures)
        account_lock = _lock_seconds(ctx, account_failures, settings.login_account_max_failures)
        tx.execute(
            sql.SET_ACCOUNT_FAILURES,
            {
                "user_key": user_id,
                "failed_login_count": account_failures,
                "locked_until": now + timedelta(seconds=account_lock) if account_lock else None,
            },
        )
        values = {
            "failures": failures,
            "locked_until": now + timedelta(seconds=lock) if lock else None,
            "updated_at": now,
        }
        if found is None:
            tx.execute(sql.INSERT_CLIENT_FAILURES, {"user_id": user_id, "client": client, **values})
        else:
            tx.execute(sql.SET_CLIENT_FAILURES, {"user_key": user_id, "client_key": client, **values})
    return Attempt(account, client, None, failures, account_failures, lock, account_lock)


def _who(user: Account, ip: str | None) -> dict[str, object]:
    return {"namespace": user.namespace, "username": user.username, "user_id": user.id, "ip": ip}


def reserve(
    ctx: Context, user: Account, now: datetime, *, ip: str | None, gone: UserServiceError, step: str = "login"
) -> Attempt:
    """Count one check of a credential (a password, or a second-factor code at `step` "mfa") as a failure before
    it runs; TooManyAttempts, logged, when the client or the account is locked."""
    try:
        return _reserve(ctx, user.id, client_key(ip), now, gone=gone)
    except TooManyAttempts:
        security_event(f"{step}_refused_locked", **_who(user, ip))
        raise


def refused(attempt: Attempt, *, ip: str | None, event: str = "login_failed") -> None:
    """Log a wrong credential of a reserved attempt, which stays counted, and the lockouts it caused."""
    who = _who(attempt.account, ip)
    security_event(event, failures=attempt.failures, account_failures=attempt.account_failures, **who)
    if attempt.lock_seconds:
        security_event("lockout", seconds=attempt.lock_seconds, scope="client", **who)
    if attempt.account_lock_seconds:
        security_event("lockout", seconds=attempt.account_lock_seconds, scope="account", **who)


def check_password(
    ctx: Context, user: Account, password: str, now: datetime, *, ip: str | None, gone: UserServiceError
) -> Attempt:
    """Reserve the check, then run it; a wrong password stays counted. Returns the reserved attempt."""
    attempt = reserve(ctx, user, now, ip=ip, gone=gone)
    form = ctx.passwords.matching_form(password, attempt.account.password_hash)
    if form is not None:
        return replace(attempt, form=form)
    refused(attempt, ip=ip)
    raise InvalidCredentials()


def clear_failures(tx: Transaction, attempt: Attempt) -> None:
    """Within the caller's write transaction: a right credential clears the account's and the client's counts."""
    tx.execute(
        sql.SET_ACCOUNT_FAILURES, {"user_key": attempt.account.id, "failed_login_count": 0, "locked_until": None}
    )
    tx.execute(sql.CLEAR_CLIENT_FAILURES, {"user_key": attempt.account.id, "client_key": attempt.client})


def start_session(
    ctx: Context,
    attempt: Attempt,
    *,
    now: datetime,
    user_agent: str | None,
    ip: str | None,
    new_hash: str | None,
    gone: UserServiceError,
    end_other_sessions: bool = False,
    login: bool = False,
    aal: str = security.AAL1,
    scope: str | None = None,
    claims: Callable[[Transaction], None] | None = None,
) -> tuple[TokenPair, uuid.UUID]:
    """One transaction: run `claims` (the guards of a second step, which raise to refuse), clear the counts and store
    a new hash, only if the account is as it was verified; then open a session with its first token. A session
    limited to enrolment (`scope`) lives only as long as its one access token."""
    user = attempt.account
    values: dict[str, Any] = {"failed_login_count": 0, "locked_until": None}
    if login:
        values["last_login_at"] = now
    if new_hash is not None:
        values["password_hash"] = new_hash
        values["updated_at"] = now
    with ctx.db.write() as tx:
        if claims is not None:
            claims(tx)
        still = tx.execute(
            sql.UPDATE_VERIFIED_USER, {"user_key": user.id, "verified_hash": user.password_hash, **values}
        )
        if still.first() is None:
            raise gone
        tx.execute(sql.CLEAR_CLIENT_FAILURES, {"user_key": user.id, "client_key": attempt.client})
        if end_other_sessions:
            sessions.end_sessions(tx, user.id, now)
            # A changed password makes outstanding reset tokens useless.
            tx.execute(admin_sql.SPEND_OPEN_TOKENS, {"owner_key": user.id, "token_kind": "password_reset", "now": now})
        lifetime = ENROLMENT_TOKEN_SECONDS if scope is not None else None
        return sessions.open_session(
            ctx,
            tx,
            user,
            now=now,
            user_agent=user_agent,
            ip=ip,
            aal=aal,
            scope=scope,
            access_ttl=lifetime,
            lifetime=lifetime,
        )


def change_password(
    ctx: Context,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    user_agent: str | None = None,
    ip: str | None = None,
) -> TokenPair:
    """Replace the password after checking the current one; every session ends and a new one starts."""
    user = principal.user
    now = ctx.clock()
    attempt = check_password(ctx, user, current_password, now, ip=ip, gone=InvalidToken())
    accounts.check_policy(ctx, new_password, user)
    pair, session_id = start_session(
        ctx,
        attempt,
        now=now,
        user_agent=user_agent,
        ip=ip,
        new_hash=ctx.passwords.hash(new_password),
        gone=InvalidToken(),
        end_other_sessions=True,
        aal=principal.aal,
    )
    security_event("password_changed", namespace=user.namespace, user_id=user.id, session_id=session_id, ip=ip)
    return pair
