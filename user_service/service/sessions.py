"""Sessions and their refresh tokens: opening one, rotating its refresh token, ending one or all, pruning."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from user_service import security, telemetry
from user_service.errors import (
    ErrorCode,
    InvalidToken,
    RefreshTokenReused,
    SessionNotFound,
    SessionRevoked,
    TokenExpired,
    UserDisabled,
)
from user_service.events import security_event
from user_service.schemas import SessionInfo, TokenPair
from user_service.service import mfa_statements as mfa_sql
from user_service.service import statements as sql
from user_service.service import tokens
from user_service.service.context import Account, Context, Principal, TokenSubject
from user_service.service.database import Transaction


def open_session(
    ctx: Context,
    tx: Transaction,
    user: Account,
    *,
    now: datetime,
    user_agent: str | None,
    ip: str | None,
    access_ttl: int | None = None,
    aal: str = security.AAL1,
    lifetime: int | None = None,
    scope: str | None = None,
) -> tuple[TokenPair, uuid.UUID]:
    """Within the caller's write transaction: a new session with its first refresh token, and its token pair. The
    session keeps its assurance level `aal` for every token refreshed from it."""
    session_id = uuid.uuid4()
    session_expires = now + timedelta(seconds=lifetime or ctx.settings.session_max_lifetime_seconds)
    refresh_token = security.new_refresh_token()
    tx.execute(
        sql.INSERT_SESSION,
        {
            "id": session_id,
            "user_id": user.id,
            "created_at": now,
            "last_used_at": now,
            "expires_at": session_expires,
            "user_agent": (user_agent or None) and user_agent[:512],
            "ip": (ip or None) and ip[:64],
            "aal": aal,
        },
    )
    tx.execute(sql.INSERT_REFRESH_TOKEN, _refresh_token_row(ctx, session_id, session_expires, refresh_token, now))
    telemetry.sessions_started()
    pair = tokens.pair(ctx, user, session_id, refresh_token, now, access_ttl, aal=aal, scope=scope)
    return pair, session_id


def end_sessions(tx: Transaction, user_id: uuid.UUID, now: datetime) -> int:
    """Within the caller's write transaction: end every open session of the user; how many were open."""
    ended = int(tx.execute(sql.END_SESSIONS, {"owner_key": user_id, "now": now}).rowcount)
    telemetry.sessions_ended(ended)
    return ended


def end_other_sessions(tx: Transaction, user_id: uuid.UUID, kept: uuid.UUID, now: datetime) -> int:
    """Within the caller's write transaction: end every open session of the user but `kept`; how many ended."""
    ended = int(tx.execute(sql.END_OTHER_SESSIONS, {"owner_key": user_id, "kept_session": kept, "now": now}).rowcount)
    telemetry.sessions_ended(ended)
    return ended


def _end_session(tx: Transaction, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime) -> int:
    ended = int(tx.execute(sql.END_SESSION, {"owner_key": user_id, "session_id": session_id, "now": now}).rowcount)
    telemetry.sessions_ended(ended)
    return ended


def _refresh_token_row(
    ctx: Context, session_id: uuid.UUID, session_expires: datetime, token: str, now: datetime
) -> dict[str, Any]:
    """A session's next refresh token, as stored; it never outlives the session."""
    return {
        "id": uuid.uuid4(),
        "session_id": session_id,
        "token_hash": security.refresh_token_digest(token),
        "created_at": now,
        "used_at": None,
        "expires_at": min(now + timedelta(seconds=ctx.settings.refresh_token_ttl_seconds), session_expires),
    }


def _check_live(token: Any, now: datetime) -> None:
    """Refuse a refresh token whose user, session or own lifetime is over, saying which."""
    if not token["is_active"]:
        raise UserDisabled()
    if token["session_revoked_at"] is not None:
        if token["session_revoked_reason"] == ErrorCode.REFRESH_TOKEN_REUSED:
            raise SessionRevoked()
        raise InvalidToken()
    if token["session_expires_at"] <= now or token["token_expires_at"] <= now:
        raise TokenExpired()


def _within_reuse_interval(ctx: Context, used_at: datetime, now: datetime) -> bool:
    interval = ctx.settings.refresh_reuse_interval_seconds
    return interval > 0 and now - used_at <= timedelta(seconds=interval)


def refresh(ctx: Context, refresh_token: str, *, ip: str | None = None) -> TokenPair:
    """Spend a refresh token for a new pair. A spent token presented again revokes its whole session, unless it
    comes back within REFRESH_REUSE_INTERVAL_SECONDS of its rotation (a second tab, a retry): then it gets a new
    pair in the same session."""
    try:
        pair, namespace = _rotate(ctx, refresh_token, ip=ip)
    except TokenExpired:
        telemetry.auth_event("refresh", "expired")
        raise
    except (InvalidToken, SessionRevoked, UserDisabled):
        telemetry.auth_event("refresh", "failure")
        raise
    telemetry.auth_event("refresh", "success", namespace)
    return pair


def _rotate(ctx: Context, refresh_token: str, *, ip: str | None) -> tuple[TokenPair, str]:
    """The new pair for a refresh token, and the namespace of its user; the refusals are raised."""
    digest = security.refresh_token_digest(refresh_token)
    now = ctx.clock()
    new_token = security.new_refresh_token()
    outcome = "rotated"
    with ctx.db.write() as tx:
        token = ctx.db.first_in(tx, sql.REFRESH_TOKEN_BY_DIGEST, {"digest": digest})
        if token is None:
            raise InvalidToken()
        subject = TokenSubject(id=token["user_id"], namespace=token["namespace"], username=token["username"])
        session_id: uuid.UUID = token["session_id"]
        if token["token_used_at"] is None:
            _check_live(token, now)
        if ctx.db.changed_in(tx, sql.CLAIM_REFRESH_TOKEN, {"token_key": token["token_id"], "now": now}) == 1:
            ctx.db.changed_in(tx, sql.TOUCH_SESSION, {"session_key": session_id, "now": now})
        else:
            # Spent meanwhile or before (reuse), or deleted with its user while this refresh was in flight (no alarm).
            spent = ctx.db.first_in(tx, sql.REFRESH_TOKEN_USED_AT, {"token_key": token["token_id"]})
            if spent is None:
                raise InvalidToken()
            if not _within_reuse_interval(ctx, spent["used_at"], now):
                ctx.db.changed_in(
                    tx,
                    sql.END_SESSION_FOR_REUSE,
                    {
                        "owner_key": subject.id,
                        "session_id": session_id,
                        "now": now,
                        "reason": ErrorCode.REFRESH_TOKEN_REUSED.value,
                    },
                )
                outcome = "revoked"
            else:
                _check_live(token, now)
                # The session may have ended since it was read: only a session still open gets a new token.
                if ctx.db.changed_in(tx, sql.TOUCH_OPEN_SESSION, {"session_key": session_id, "now": now}) != 1:
                    raise InvalidToken()
                outcome = "reissued"
        if outcome != "revoked":
            ctx.db.changed_in(
                tx,
                sql.INSERT_REFRESH_TOKEN,
                _refresh_token_row(ctx, session_id, token["session_expires_at"], new_token, now),
            )
    if outcome == "revoked":
        security_event("refresh_reuse", namespace=subject.namespace, user_id=subject.id, session_id=session_id, ip=ip)
        raise RefreshTokenReused()
    if outcome == "reissued":
        security_event(
            "refresh_reuse_allowed", namespace=subject.namespace, user_id=subject.id, session_id=session_id, ip=ip
        )
    return tokens.pair(ctx, subject, session_id, new_token, now, aal=token["session_aal"]), subject.namespace


def logout(ctx: Context, refresh_token: str, *, ip: str | None = None) -> None:
    """End the session a refresh token belongs to; unknown tokens are ignored (nothing to end)."""
    digest = security.refresh_token_digest(refresh_token)
    with ctx.db.write() as tx:
        row = tx.execute(sql.REFRESH_TOKEN_BY_DIGEST, {"digest": digest}).first()
        token = row._mapping if row is not None else None
        ended = _end_session(tx, token["user_id"], token["session_id"], ctx.clock()) if token else 0
    if token is not None and ended:
        security_event(
            "logout", namespace=token["namespace"], user_id=token["user_id"], session_id=token["session_id"], ip=ip
        )


def logout_all(ctx: Context, principal: Principal, *, ip: str | None = None) -> int:
    """End every session of the user; their access tokens fail at once. Returns how many ended."""
    with ctx.db.write() as tx:
        ended = end_sessions(tx, principal.user.id, ctx.clock())
    security_event(
        "logout_all",
        namespace=principal.user.namespace,
        user_id=principal.user.id,
        session_id=principal.session_id,
        sessions=ended,
        ip=ip,
    )
    return ended


def list_sessions(ctx: Context, principal: Principal) -> list[SessionInfo]:
    """The user's open sessions, newest first; `current` marks the caller's."""
    with ctx.db.read() as tx:
        rows = tx.execute(sql.LIVE_SESSIONS, {"owner_key": principal.user.id, "now": ctx.clock()}).mappings().all()
    return [SessionInfo(**row, current=row["id"] == principal.session_id) for row in rows]


def end_session(ctx: Context, principal: Principal, session_id: uuid.UUID, *, ip: str | None = None) -> None:
    """End one of the user's own open sessions; anyone else's is SessionNotFound, like a missing one."""
    with ctx.db.write() as tx:
        ended = _end_session(tx, principal.user.id, session_id, ctx.clock())
    if not ended:
        raise SessionNotFound()
    security_event(
        "session_ended", namespace=principal.user.namespace, user_id=principal.user.id, session_id=session_id, ip=ip
    )


def prune(ctx: Context, *, keep_revoked_seconds: int) -> int:
    """Delete sessions past their absolute lifetime, or ended longer ago than `keep_revoked_seconds`; with them,
    the failed-login counts of clients not heard from for as long (and not locked out now), and expired login
    challenges."""
    now = ctx.clock()
    cutoff = now - timedelta(seconds=keep_revoked_seconds)
    with ctx.db.write() as tx:
        deleted = tx.execute(sql.PRUNE_SESSIONS, {"now": now, "cutoff": cutoff}).rowcount
        # Spent or expired tokens of sessions that stay open are not needed once expired.
        tx.execute(sql.PRUNE_REFRESH_TOKENS, {"now": now})
        tx.execute(sql.PRUNE_LOGIN_FAILURES, {"now": now, "cutoff": cutoff})
        tx.execute(mfa_sql.PRUNE_CHALLENGES, {"now": now})
    return int(deleted)
