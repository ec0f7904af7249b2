"""Logging in: the password check, the lockout that guards it, and password changes."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from user_service.errors import InvalidCredentials, TooManyAttempts, UserDisabled
from user_service.events import security_event
from user_service.schemas import TokenPair
from user_service.service import accounts, sessions
from user_service.service import statements as sql
from user_service.service.context import Account, Context, Principal


def login(
    ctx: Context,
    *,
    namespace: str,
    username: str,
    password: str,
    user_agent: str | None = None,
    ip: str | None = None,
) -> TokenPair:
    """Check the password and start a session; the same InvalidCredentials for every kind of miss."""
    key = accounts.normalized_name(namespace, username)
    user = accounts.find(ctx, *key) if key else None
    if user is None:
        ctx.passwords.equalise_timing(password)
        security_event("login_failed", namespace=key[0] if key else None, username=key[1] if key else None, ip=ip)
        raise InvalidCredentials()
    now = ctx.clock()
    _check_password_or_count(ctx, user, password, now, ip=ip)
    if not user.is_active:
        raise UserDisabled()
    new_hash = ctx.passwords.hash(password) if ctx.passwords.needs_rehash(user.password_hash) else None
    pair, session_id = _start_session(ctx, user, now=now, user_agent=user_agent, ip=ip, new_hash=new_hash)
    security_event(
        "login", namespace=user.namespace, username=user.username, user_id=user.id, session_id=session_id, ip=ip
    )
    return pair


def _check_password_or_count(ctx: Context, user: Account, password: str, now: datetime, *, ip: str | None) -> None:
    """Refuse a locked account outright; count a wrong password toward the lock."""
    if user.locked_until is not None and user.locked_until > now:
        security_event("login_refused_locked", namespace=user.namespace, username=user.username, user_id=user.id, ip=ip)
        raise TooManyAttempts(math.ceil((user.locked_until - now).total_seconds()))
    if not ctx.passwords.check(password, user.password_hash):
        _record_failure(ctx, user, now, ip=ip)
        raise InvalidCredentials()


def _record_failure(ctx: Context, user: Account, now: datetime, *, ip: str | None) -> None:
    """Count a failed password atomically; lock the account once the count reaches the limit."""
    settings = ctx.settings
    wait = 0
    with ctx.db.write() as tx:
        count = int(tx.execute(sql.COUNT_FAILURE, {"user_key": user.id}).scalar_one())
        if count >= settings.login_max_failures:
            # Keycloak's shape: each further failure after a lock doubles the wait, up to the cap.
            doublings = min(count - settings.login_max_failures, 32)
            wait = min(settings.login_lockout_seconds * 2**doublings, settings.login_lockout_max_seconds)
            tx.execute(sql.SET_LOCK, {"user_key": user.id, "until": now + timedelta(seconds=wait)})
    who = {"namespace": user.namespace, "username": user.username, "user_id": user.id, "ip": ip}
    security_event("login_failed", failures=count, **who)
    if wait:
        security_event("lockout", seconds=wait, **who)


def _start_session(
    ctx: Context,
    user: Account,
    *,
    now: datetime,
    user_agent: str | None,
    ip: str | None,
    new_hash: str | None,
    end_other_sessions: bool = False,
) -> tuple[TokenPair, uuid.UUID]:
    """One transaction: reset the failure count, store a new hash if any, open a session with its first token."""
    values: dict[str, Any] = {"failed_login_count": 0, "locked_until": None}
    if new_hash is not None:
        values["password_hash"] = new_hash
        values["updated_at"] = now
    with ctx.db.write() as tx:
        tx.execute(sql.UPDATE_USER, {"user_key": user.id, **values})
        if end_other_sessions:
            sessions.end_sessions(tx, user.id, now)
        return sessions.open_session(ctx, tx, user, now=now, user_agent=user_agent, ip=ip)


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
    _check_password_or_count(ctx, user, current_password, now, ip=ip)
    accounts.check_policy(ctx, new_password, username=user.username, email=user.email)
    pair, session_id = _start_session(
        ctx,
        user,
        now=now,
        user_agent=user_agent,
        ip=ip,
        new_hash=ctx.passwords.hash(new_password),
        end_other_sessions=True,
    )
    security_event("password_changed", namespace=user.namespace, user_id=user.id, session_id=session_id, ip=ip)
    return pair
