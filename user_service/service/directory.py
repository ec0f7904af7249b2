"""The directory of accounts, for operators and app back ends: listing a namespace page by page, one account's
state, the namespaces, and ending a user's sessions."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from user_service.errors import InvalidInput
from user_service.events import security_event
from user_service.schemas import NamespaceCount, UserDetail, UserPage, UserSummary
from user_service.service import accounts, sessions
from user_service.service import statements as sql
from user_service.service.context import Context
from user_service.service.profiles import profile_of

PAGE_MAX = 500
SEARCH_MAX = 320


def encode_cursor(created_at: datetime, user_id: uuid.UUID) -> str:
    """The opaque cursor after a user: where the next page starts, in (created_at, id) order."""
    raw = json.dumps([created_at.isoformat(), str(user_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; InvalidInput for anything this service did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, user_id = json.loads(raw)
        position = datetime.fromisoformat(created), uuid.UUID(user_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this service gave out") from None
    if position[0].tzinfo is None:
        raise InvalidInput("cursor is not one this service gave out")
    return position


# Above every character: [prefix, prefix + this) holds every string that starts with prefix, in byte order.
_LAST_CHARACTER = "\U0010ffff"


def _prefix_params(text: str) -> dict[str, str]:
    """The bounds of a case-insensitive prefix search (stored names are lowercase)."""
    prefix = text.lower()
    return {"prefix_low": prefix, "prefix_high": prefix + _LAST_CHARACTER}


def list_users(
    ctx: Context,
    namespace: str,
    *,
    search: str | None = None,
    active: bool | None = None,
    limit: int = 50,
    after: str | None = None,
) -> UserPage:
    """One page of a namespace's users in order of creation; `search` matches a username or email prefix,
    case-insensitively; `active` keeps only enabled (True) or disabled (False) accounts."""
    if not 1 <= limit <= PAGE_MAX:
        raise InvalidInput(f"limit must be 1 to {PAGE_MAX}")
    if search is not None and len(search) > SEARCH_MAX:
        raise InvalidInput(f"search must be at most {SEARCH_MAX} characters")
    key = accounts.normalized_name(namespace, "x")
    if key is None:
        raise InvalidInput("namespace must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
    params: dict[str, object] = {"namespace": key[0], "limit": limit + 1}
    if search:
        params |= _prefix_params(search)
    if active is not None:
        params["active"] = active
    if after is not None:
        params["after_created"], params["after_id"] = decode_cursor(after)
    with ctx.db.read() as tx:

        def page(search: str | None) -> Sequence[Mapping[Any, Any]]:
            statement = sql.user_page(tx.dialect.name, search, active=active is not None, after=after is not None)
            return tx.execute(statement, params).mappings().all()

        if not search:
            rows = page(None)
        else:
            counts = tx.execute(sql.PREFIX_MATCH_COUNTS, {**params, "cap": sql.SPARSE_PREFIX_MATCHES}).one()
            # Many matches: a short walk in order of creation finds a page where they are common.
            rows = page("walked") if max(counts) >= sql.SPARSE_PREFIX_MATCHES else []
            if len(rows) <= limit:
                rows = page("sorted")
    items = [UserSummary(**row) for row in rows[:limit]]
    following = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return UserPage(items=items, next=following)


def user_detail(ctx: Context, namespace: str, username: str) -> UserDetail:
    """One account with its state: active, lock, failures, last login and how many sessions are live."""
    user = accounts.find_user(ctx, namespace, username)
    live = ctx.db.read_one(sql.LIVE_SESSION_COUNT, {"owner_key": user.id, "now": ctx.clock()})
    return UserDetail(
        **profile_of(ctx, user).model_dump(),
        is_active=user.is_active,
        locked_until=user.locked_until,
        failed_login_count=user.failed_login_count,
        last_login_at=user.last_login_at,
        live_sessions=int(next(iter(live.values()))) if live is not None else 0,
    )


def namespaces(ctx: Context) -> list[NamespaceCount]:
    """Every namespace that holds accounts, with how many."""
    with ctx.db.read() as tx:
        return [NamespaceCount(**row) for row in tx.execute(sql.NAMESPACE_COUNTS).mappings().all()]


def revoke_sessions(ctx: Context, namespace: str, username: str, *, actor: str = "operator") -> int:
    """End every session of the user: their tokens stop working at once. Returns how many were open."""
    user = accounts.find_user(ctx, namespace, username)
    with ctx.db.write() as tx:
        ended = sessions.end_sessions(tx, user.id, ctx.clock())
    security_event("sessions_revoked", namespace=user.namespace, user_id=user.id, sessions=ended, actor=actor)
    return ended
