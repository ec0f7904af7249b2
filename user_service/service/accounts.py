"""Accounts: registration, lookup, and what operators do to an account (enable, disable, reset, delete)."""

from __future__ import annotations

import uuid
from datetime import datetime

from user_service.config import MAX_ACCESS_TOKEN_TTL_SECONDS
from user_service.errors import (
    EmailTaken,
    InvalidInput,
    RegistrationClosed,
    UserDisabled,
    UsernameTaken,
    UserNotFound,
)
from user_service.events import security_event
from user_service.passwords import check_password_policy
from user_service.schemas import Profile, RegisterRequest, TokenPair
from user_service.service import admin_statements as admin_sql
from user_service.service import sessions
from user_service.service import statements as sql
from user_service.service.context import Account, Context
from user_service.service.database import Transaction, UniqueViolation
from user_service.service.profiles import discard_avatar, profile_of
from user_service.validation import normalize_namespace, normalize_username


def normalized_name(namespace: object, username: object) -> tuple[str, str] | None:
    """The stored form of a namespace and username, or None when they cannot name any account."""
    if not isinstance(namespace, str) or not isinstance(username, str):
        return None
    try:
        return normalize_namespace(namespace), normalize_username(username)
    except ValueError:
        return None


def find(ctx: Context, namespace: str, username: str) -> Account | None:
    """The account stored under a normalized namespace and username."""
    row = ctx.db.read_one(sql.ACCOUNT_BY_NAME, {"namespace": namespace, "username": username})
    return Account.from_row(row) if row is not None else None


def find_user(ctx: Context, namespace: str, username: str) -> Account:
    """The account an operator names, as typed; UserNotFound when there is none."""
    key = normalized_name(namespace, username)
    user = find(ctx, *key) if key else None
    if user is None:
        raise UserNotFound(f"No user {username!r} in namespace {namespace!r}.")
    return user


def check_policy(ctx: Context, password: str, account: RegisterRequest | Account) -> None:
    """The password policy for this account's password (its names may not appear in it)."""
    check_password_policy(
        password,
        min_length=ctx.settings.password_min_length,
        username=account.username,
        email=account.email,
        namespace=account.namespace,
    )


def register(ctx: Context, data: RegisterRequest, *, ip: str | None = None, by_operator: bool = False) -> Profile:
    """Create an account; UsernameTaken or EmailTaken when the namespace already has one. Self-service registration
    only where the settings leave it open; operators create accounts in any namespace."""
    if not by_operator and not ctx.settings.registration_open(data.namespace):
        raise RegistrationClosed()
    check_policy(ctx, data.password, data)
    # A cheap look first, so a taken name costs no bcrypt; the unique constraints decide races below.
    _raise_if_taken(ctx, data.namespace, data.username, data.email)
    password_hash = ctx.passwords.hash(data.password)
    now = ctx.clock()
    user = Account(
        id=uuid.uuid4(),
        namespace=data.namespace,
        username=data.username,
        password_hash=password_hash,
        email=data.email,
        full_name=data.full_name,
        avatar_url=data.avatar_url,
        avatar_key=None,
        extra=data.extra or {},
        is_active=True,
        failed_login_count=0,
        locked_until=None,
        created_at=now,
        updated_at=now,
    )
    try:
        with ctx.db.write() as tx:
            tx.execute(sql.INSERT_USER, user.columns())
    except UniqueViolation:
        _raise_if_taken(ctx, data.namespace, data.username, data.email)
        raise UsernameTaken() from None
    security_event("register", namespace=user.namespace, username=user.username, user_id=user.id, ip=ip)
    return profile_of(ctx, user)


def _raise_if_taken(ctx: Context, namespace: str, username: str, email: str | None) -> None:
    if find(ctx, namespace, username) is not None:
        raise UsernameTaken()
    if email is not None and ctx.db.read_one(sql.EMAIL_OWNER, {"namespace": namespace, "email": email}):
        raise EmailTaken()


def issue_tokens(ctx: Context, *, namespace: str, username: str, ttl_seconds: int | None = None) -> TokenPair:
    """Tokens for an existing active user without a password (operators, through the CLI); a new session."""
    if ttl_seconds is not None and not 1 <= ttl_seconds <= MAX_ACCESS_TOKEN_TTL_SECONDS:
        raise InvalidInput(f"ttl must be 1 to {MAX_ACCESS_TOKEN_TTL_SECONDS} seconds")
    user = find_user(ctx, namespace, username)
    if not user.is_active:
        raise UserDisabled()
    with ctx.db.write() as tx:
        pair, session_id = sessions.open_session(
            ctx, tx, user, now=ctx.clock(), user_agent="user-service CLI", ip=None, access_ttl=ttl_seconds
        )
    security_event(
        "token_issued", namespace=user.namespace, username=user.username, user_id=user.id, session_id=session_id
    )
    return pair


def store_new_password(tx: Transaction, user_id: uuid.UUID, new_hash: str, now: datetime) -> int:
    """Within the caller's write transaction: the new hash, every lock lifted, every session ended and every
    outstanding reset token made useless (a reset by an operator or by token). Returns how many sessions ended."""
    tx.execute(
        sql.UPDATE_USER,
        {
            "user_key": user_id,
            "password_hash": new_hash,
            "failed_login_count": 0,
            "locked_until": None,
            "updated_at": now,
        },
    )
    tx.execute(sql.CLEAR_ALL_CLIENT_FAILURES, {"user_key": user_id})
    ended = sessions.end_sessions(tx, user_id, now)
    tx.execute(admin_sql.SPEND_OPEN_TOKENS, {"owner_key": user_id, "token_kind": "password_reset", "now": now})
    return ended


def reset_password(ctx: Context, *, namespace: str, username: str, new_password: str) -> None:
    """Set a new password without the old one (operators); ends every session and clears a lock."""
    user = find_user(ctx, namespace, username)
    check_policy(ctx, new_password, user)
    new_hash = ctx.passwords.hash(new_password)
    now = ctx.clock()
    with ctx.db.write() as tx:
        store_new_password(tx, user.id, new_hash, now)
    security_event("password_reset", namespace=user.namespace, user_id=user.id)


def set_active(ctx: Context, *, namespace: str, username: str, active: bool) -> Profile:
    """Enable or disable an account. Disabling ends every session (ASVS 5.0 7.4.2): the account's tokens stop
    working at once and stay dead when it is enabled again."""
    user = find_user(ctx, namespace, username)
    now = ctx.clock()
    with ctx.db.write() as tx:
        tx.execute(sql.UPDATE_USER, {"user_key": user.id, "is_active": active, "updated_at": now})
        if not active:
            sessions.end_sessions(tx, user.id, now)
    security_event("user_enabled" if active else "user_disabled", namespace=user.namespace, user_id=user.id)
    return profile_of(ctx, find_user(ctx, namespace, username))


def delete_user(ctx: Context, *, namespace: str, username: str) -> None:
    """Delete an account, its sessions and its avatar file."""
    user = find_user(ctx, namespace, username)
    with ctx.db.write() as tx:
        row = tx.execute(sql.DELETE_USER_RETURNING_AVATAR, {"user_key": user.id}).first()
    avatar_key = row._mapping["avatar_key"] if row is not None else None
    if avatar_key:
        discard_avatar(ctx, avatar_key)
