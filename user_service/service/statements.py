"""Every SQL statement the core runs, built once on the tables (their compiled forms are cached by SQLAlchemy); a
call only binds its values. Columns that two tables share a name for are labelled, so rows are read by name."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    ScalarSelect,
    Select,
    Subquery,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union,
    update,
)

from user_service.models import AuthSession, LoginFailure, MfaFactor, RefreshToken, SigningKey, User

USERS, SESSIONS, REFRESH_TOKENS, LOGIN_FAILURES, SIGNING_KEYS, MFA_FACTORS = (
    cast("Table", model.__table__) for model in (User, AuthSession, RefreshToken, LoginFailure, SigningKey, MfaFactor)
)

ACCOUNT_FIELDS = (
    "id",
    "namespace",
    "username",
    "password_hash",
    "email",
    "full_name",
    "avatar_url",
    "avatar_key",
    "extra",
    "is_active",
    "failed_login_count",
    "locked_until",
    "created_at",
    "updated_at",
    "last_login_at",
    "email_verified",
)
# Whether the account has a confirmed second factor: read with the account, by the factor table's primary key.
MFA_ENABLED = (
    exists().where(MFA_FACTORS.c.user_id == USERS.c.id, MFA_FACTORS.c.confirmed_at.is_not(None)).label("mfa_enabled")
)
_ACCOUNT = (*(USERS.c[name] for name in ACCOUNT_FIELDS), MFA_ENABLED)

# -- accounts ---------------------------------------------------------------------------------------------------

ACCOUNT_BY_NAME = select(*_ACCOUNT).where(
    USERS.c.namespace == bindparam("namespace"), USERS.c.username == bindparam("username")
)
ACCOUNT_BY_ID = select(*_ACCOUNT).where(USERS.c.id == bindparam("user_id"))
# In a write transaction: the row, locked until the transaction ends (SQLite's write lock covers it).
ACCOUNT_FOR_UPDATE = select(*_ACCOUNT).where(USERS.c.id == bindparam("user_id")).with_for_update()
EMAIL_OWNER = select(USERS.c.id).where(USERS.c.namespace == bindparam("namespace"), USERS.c.email == bindparam("email"))
INSERT_USER = insert(USERS)
UPDATE_USER = update(USERS).where(USERS.c.id == bindparam("user_key"))  # SET from the parameters given
DELETE_USER = delete(USERS).where(USERS.c.id == bindparam("user_key"))
# The avatar key of the row as it was deleted: a change racing the delete cannot leave its object behind.
DELETE_USER_RETURNING_AVATAR = DELETE_USER.returning(USERS.c.avatar_key.label("avatar_key"))

# -- login and lockout ----------------------------------------------------------------------------------------------

SET_ACCOUNT_FAILURES = update(USERS).where(USERS.c.id == bindparam("user_key"))  # failed_login_count, locked_until
CLIENT_FAILURES = select(LOGIN_FAILURES.c.failures, LOGIN_FAILURES.c.locked_until).where(
    LOGIN_FAILURES.c.user_id == bindparam("user_id"), LOGIN_FAILURES.c.client == bindparam("client")
)
INSERT_CLIENT_FAILURES = insert(LOGIN_FAILURES)
SET_CLIENT_FAILURES = update(LOGIN_FAILURES).where(
    LOGIN_FAILURES.c.user_id == bindparam("user_key"), LOGIN_FAILURES.c.client == bindparam("client_key")
)
CLEAR_CLIENT_FAILURES = delete(LOGIN_FAILURES).where(
    LOGIN_FAILURES.c.user_id == bindparam("user_key"), LOGIN_FAILURES.c.client == bindparam("client_key")
)
CLEAR_ALL_CLIENT_FAILURES = delete(LOGIN_FAILURES).where(LOGIN_FAILURES.c.user_id == bindparam("user_key"))
# A session may start only for the account as it was when its password was checked: the same hash, still active.
# A password change, a reset or a disable that commits in between makes this update match nothing.
UPDATE_VERIFIED_USER = (
    update(USERS)
    .where(
        USERS.c.id == bindparam("user_key"),
        USERS.c.password_hash == bindparam("verified_hash"),
        USERS.c.is_active.is_(True),
    )
    .returning(USERS.c.id)
)
PRUNE_LOGIN_FAILURES = delete(LOGIN_FAILURES).where(
    LOGIN_FAILURES.c.updated_at <= bindparam("cutoff"),
    or_(LOGIN_FAILURES.c.locked_until.is_(None), LOGIN_FAILURES.c.locked_until <= bindparam("now")),
)

# -- sessions and refresh tokens ----------------------------------------------------------------------------------

# The user an access token names, joined with the token's session: one indexed read on every authenticated request.
PRINCIPAL = (
    select(
        *_ACCOUNT,
        SESSIONS.c.revoked_at.label("session_revoked_at"),
        SESSIONS.c.revoked_reason.label("session_revoked_reason"),
        SESSIONS.c.expires_at.label("session_expires_at"),
    )
    .join(SESSIONS, and_(SESSIONS.c.user_id == USERS.c.id, SESSIONS.c.id == bindparam("session_id")))
    .where(USERS.c.id == bindparam("user_id"))
)
INSERT_SESSION = insert(SESSIONS)
INSERT_REFRESH_TOKEN = insert(REFRESH_TOKENS)
TOUCH_SESSION = update(SESSIONS).where(SESSIONS.c.id == bindparam("session_key")).values(last_used_at=bindparam("now"))
# The race guard of a refresh: of concurrent refreshes with one token, only one claims it.
CLAIM_REFRESH_TOKEN = (
    update(REFRESH_TOKENS)
    .where(REFRESH_TOKENS.c.id == bindparam("token_key"), REFRESH_TOKENS.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
REFRESH_TOKEN_USED_AT = select(REFRESH_TOKENS.c.used_at).where(REFRESH_TOKENS.c.id == bindparam("token_key"))
# A refresh token with its session and the few fields of its user that a refresh needs, for spending it.
REFRESH_TOKEN_BY_DIGEST = (
    select(
        REFRESH_TOKENS.c.id.label("token_id"),
        REFRESH_TOKENS.c.used_at.label("token_used_at"),
        REFRESH_TOKENS.c.expires_at.label("token_expires_at"),
        SESSIONS.c.id.label("session_id"),
        SESSIONS.c.revoked_at.label("session_revoked_at"),
        SESSIONS.c.revoked_reason.label("session_revoked_reason"),
        SESSIONS.c.expires_at.label("session_expires_at"),
        SESSIONS.c.aal.label("session_aal"),
        USERS.c.is_active,
        USERS.c.id.label("user_id"),
        USERS.c.namespace,
        USERS.c.username,
    )
    .join(SESSIONS, REFRESH_TOKENS.c.session_id == SESSIONS.c.id)
    .join(USERS, SESSIONS.c.user_id == USERS.c.id)
    .where(REFRESH_TOKENS.c.token_hash == bindparam("digest"))
)
# (UPDATE statements may not name a bound parameter after one of their table's columns.)
OPEN_SESSIONS = and_(SESSIONS.c.user_id == bindparam("owner_key"), SESSIONS.c.revoked_at.is_(None))
END_SESSIONS = update(SESSIONS).where(OPEN_SESSIONS).values(revoked_at=bindparam("now"))
END_OTHER_SESSIONS = (
    update(SESSIONS)
    .where(OPEN_SESSIONS, SESSIONS.c.id != bindparam("kept_session"))
    .values(revoked_at=bindparam("now"))
)
END_SESSION = (
    update(SESSIONS).where(OPEN_SESSIONS, SESSIONS.c.id == bindparam("session_id")).values(revoked_at=bindparam("now"))
)
# Ending a session because a spent refresh token came back: the reason is kept, so its other tokens can say so.
END_SESSION_FOR_REUSE = (
    update(SESSIONS)
    .where(OPEN_SESSIONS, SESSIONS.c.id == bindparam("session_id"))
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
)
# The guard of a refresh within the reuse interval: the session is still open and live, checked and touched in one
# statement (PostgreSQL's row lock orders it against a concurrent END_SESSION; SQLite has one writer).
TOUCH_OPEN_SESSION = (
    update(SESSIONS)
    .where(
        SESSIONS.c.id == bindparam("session_key"),
        SESSIONS.c.revoked_at.is_(None),
        SESSIONS.c.expires_at > bindparam("now"),
    )
    .values(last_used_at=bindparam("now"))
)
LIVE_SESSIONS = (
    select(
        SESSIONS.c.id,
        SESSIONS.c.created_at,
        SESSIONS.c.last_used_at,
        SESSIONS.c.expires_at,
        SESSIONS.c.user_agent,
        SESSIONS.c.ip,
    )
    .where(OPEN_SESSIONS, SESSIONS.c.expires_at > bindparam("now"))
    .order_by(SESSIONS.c.created_at.desc(), SESSIONS.c.id)
)
PRUNE_SESSIONS = delete(SESSIONS).where(
    or_(SESSIONS.c.expires_at <= bindparam("now"), SESSIONS.c.revoked_at <= bindparam("cutoff"))
)
PRUNE_REFRESH_TOKENS = delete(REFRESH_TOKENS).where(REFRESH_TOKENS.c.expires_at <= bindparam("now"))

# -- the directory: listing and counting accounts ---------------------------------------------------------------

USER_SUMMARY = (
    USERS.c.id,
    USERS.c.namespace,
    USERS.c.username,
    USERS.c.email,
    USERS.c.full_name,
    USERS.c.is_active,
    USERS.c.created_at,
    USERS.c.last_login_at,
)


# A prefix search sorts the matches out of the (namespace, username|email, created_at, id, is_active) indexes when
# they are few (at most this many per column); when they are many it first walks the namespace in order of creation
# through at most WALKED_USERS users, which finds a page at once where the matches are common, and sorts them out of
# those indexes when that walk falls short (the matches come late, or are rarer than their number made likely).
SPARSE_PREFIX_MATCHES = 2000
WALKED_USERS = 5000
# Stored usernames and emails are lowercase: a lowercase prefix matches them case-insensitively. Both columns compare
# byte by byte (SQLite's BINARY, PostgreSQL's "C"), so the range [prefix_low, prefix_high) holds exactly the strings
# that start with the prefix, and the indexes serve it.
_PREFIX_LOW = bindparam("prefix_low", type_=USERS.c.username.type)
_PREFIX_HIGH = bindparam("prefix_high", type_=USERS.c.username.type)
_PREFIXED = (USERS.c.username, USERS.c.email)
_ORDER = (USERS.c.created_at, USERS.c.id)


def _page_conditions(*, active: bool, after: bool) -> list[ColumnElement[bool]]:
    conditions = [USERS.c.namespace == bindparam("namespace")]
    if active:
        conditions.append(USERS.c.is_active == bindparam("active"))
    if after:
        conditions.append(
            tuple_(*_ORDER)
            > tuple_(
                bindparam("after_created", type_=USERS.c.created_at.type), bindparam("after_id", type_=USERS.c.id.type)
            )
        )
    return conditions


def _in_range(column: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(column >= _PREFIX_LOW, column < _PREFIX_HIGH)


def _first_matches(
    column: ColumnElement[Any], conditions: list[ColumnElement[bool]], limit: BindParameter[int], *, fenced: bool
) -> Subquery:
    """The first `limit` matches of the prefix in `column`, in order of creation, as (created_at, id): sorted out of
    the column's search index, no row read. `fenced` keeps the range in a subquery of its own (OFFSET 0), which
    PostgreSQL plans apart: seeing the ORDER BY with the range, it may guess the matches spread evenly and walk the
    creation-order index instead, past every earlier user. SQLite plans the unfenced form as the range and a sort
    already, and runs it faster."""
    if not fenced:
        return select(*_ORDER).where(*conditions, _in_range(column)).order_by(*_ORDER).limit(limit).subquery()
    matches = select(*_ORDER).where(*conditions, _in_range(column)).offset(0).subquery()
    return (
        select(matches.c.created_at, matches.c.id).order_by(matches.c.created_at, matches.c.id).limit(limit).subquery()
    )


def _user_page(*, search: str | None, active: bool, after: bool, fenced: bool) -> Select[Any]:
    conditions = _page_conditions(active=active, after=after)
    limit = bindparam("limit", type_=Integer)
    if search == "sorted":
        # Each column's first page of matches, merged; only the page's rows are read. (SQLite takes no ORDER BY or
        # LIMIT on a member of a UNION: each first page is a subquery.)
        firsts = union(
            *(
                select(first.c.created_at, first.c.id)
                for first in (_first_matches(column, conditions, limit, fenced=fenced) for column in _PREFIXED)
            )
        ).subquery("firsts")
        page = select(firsts.c.id).order_by(firsts.c.created_at, firsts.c.id).limit(limit)
        return select(*USER_SUMMARY).where(USERS.c.id.in_(page)).order_by(*_ORDER)
    if search == "walked":
        # The next WALKED_USERS users in order of creation, and the matches among them.
        walked = select(*USER_SUMMARY).where(*conditions).order_by(*_ORDER).limit(WALKED_USERS).subquery("walked")
        matching = or_(*(_in_range(walked.c[column.name]) for column in _PREFIXED))
        return select(walked).where(matching).order_by(walked.c.created_at, walked.c.id).limit(limit)
    return select(*USER_SUMMARY).where(*conditions).order_by(*_ORDER).limit(limit)


def _prefix_count(column: ColumnElement[Any]) -> ScalarSelect[Any]:
    """How many of a namespace's values of `column` fall in the prefix's range, counted up to the cap."""
    inner = select(literal(1)).where(USERS.c.namespace == bindparam("namespace"), column >= _PREFIX_LOW)
    capped = inner.where(column < _PREFIX_HIGH).limit(bindparam("cap", type_=Integer)).subquery()
    return select(func.count()).select_from(capped).scalar_subquery()


# One prebuilt statement for each combination: (search: None, "sorted" or "walked", active, after, fenced).
_USER_PAGES = {
    (search, active, after, fenced): _user_page(search=search, active=active, after=after, fenced=fenced)
    for search in (None, "sorted", "walked")
    for active in (False, True)
    for after in (False, True)
    for fenced in (False, True)
}


def user_page(dialect_name: str, search: str | None, *, active: bool, after: bool) -> Select[Any]:
    """The statement of one page of users: `search` None (all), "sorted" or "walked" (a prefix search, above);
    `active` and `after` say whether the active and cursor parameters are given."""
    return _USER_PAGES[(search, active, after, dialect_name == "postgresql")]


# The prefix's matches by username and by email, each counted up to `cap`: which of the two searches to run.
PREFIX_MATCH_COUNTS = select(*(_prefix_count(column).label(column.name) for column in _PREFIXED))
LIVE_SESSION_COUNT = select(func.count()).where(OPEN_SESSIONS, SESSIONS.c.expires_at > bindparam("now"))
NAMESPACE_COUNTS = (
    select(USERS.c.namespace, func.count().label("users")).group_by(USERS.c.namespace).order_by(USERS.c.namespace)
)

# -- signing keys ---------------------------------------------------------------------------------------------------

_KEY_INFO = (
    SIGNING_KEYS.c.kid,
    SIGNING_KEYS.c.algorithm,
    SIGNING_KEYS.c.state,
    SIGNING_KEYS.c.created_at,
    SIGNING_KEYS.c.activated_at,
    SIGNING_KEYS.c.retired_at,
)
# The next and current keys, and the retired ones whose tokens may still be unexpired: what the JWKS publishes.
PUBLISHED_KEYS = select(*_KEY_INFO, SIGNING_KEYS.c.slot, SIGNING_KEYS.c.public_jwk, SIGNING_KEYS.c.private_key).where(
    or_(SIGNING_KEYS.c.slot.is_not(None), SIGNING_KEYS.c.retired_at > bindparam("cutoff"))
)
ALL_KEYS = select(*_KEY_INFO).order_by(SIGNING_KEYS.c.created_at, SIGNING_KEYS.c.kid)
# In a write transaction: the current and next keys, locked until it ends.
KEYS_IN_SLOTS = (
    select(SIGNING_KEYS.c.kid, SIGNING_KEYS.c.slot).where(SIGNING_KEYS.c.slot.is_not(None)).with_for_update()
)
INSERT_SIGNING_KEY = insert(SIGNING_KEYS)
RETIRE_KEY = (
    update(SIGNING_KEYS)
    .where(SIGNING_KEYS.c.kid == bindparam("key_id"), SIGNING_KEYS.c.slot == "current")
    .values(state="retired", slot=None, retired_at=bindparam("now"))
)
PROMOTE_KEY = (
    update(SIGNING_KEYS)
    .where(SIGNING_KEYS.c.kid == bindparam("key_id"), SIGNING_KEYS.c.slot == "next")
    .values(state="current", slot="current", activated_at=bindparam("now"))
)
