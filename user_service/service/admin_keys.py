"""Admin keys: the credentials an app's back end calls the admin API with.

A key is 256 random bits behind a recognisable prefix, shown once when it is made; only its SHA-256 digest is
stored, and a presented key is found by its digest (a unique index), so no key is ever compared in Python. A key
names one namespace, or none for all of them. Revoking one takes effect on the next request, on every instance:
each request looks the key up again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from user_service.errors import AdminKeyNameTaken, AdminKeyNotFound, InvalidInput, InvalidToken, NotAuthenticated
from user_service.events import security_event
from user_service.service import admin_statements as sql
from user_service.service.context import Context
from user_service.service.database import UniqueViolation
from user_service.validation import normalize_namespace

KEY_PREFIX = "usk_"
NAME_MAX = 64
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
# Bound what a presented key may be before it is hashed: a key this service made is 47 characters.
_KEY_MAX = 128
# Last use is written at most this often per key.
_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class AdminKeyInfo:
    """An admin key as listed: never the key or its digest."""

    name: str
    namespace: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """The key a request of the admin API was made with."""

    id: uuid.UUID
    name: str
    namespace: str | None

    def reaches(self, namespace: str) -> bool:
        """Whether this key may act in `namespace` (the stored, lowercase form)."""
        return self.namespace is None or self.namespace == namespace


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _checked_name(name: str) -> str:
    name = name.strip().lower()
    if not 1 <= len(name) <= NAME_MAX or not _NAME.fullmatch(name):
        raise InvalidInput(f"key name must be 1-{NAME_MAX} characters of a-z, 0-9, '.', '_' and '-'")
    return name


def create(ctx: Context, *, name: str, namespace: str | None = None) -> tuple[AdminKeyInfo, str]:
    """A new key and its record; the key itself is returned once and never stored."""
    name = _checked_name(name)
    if namespace is not None:
        try:
            namespace = normalize_namespace(namespace)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = ctx.clock()
    try:
        with ctx.db.write() as tx:
            tx.execute(
                sql.INSERT_ADMIN_KEY,
                {
                    "id": uuid.uuid4(),
                    "name": name,
                    "namespace": namespace,
                    "key_hash": key_digest(key),
                    "created_at": now,
                    "last_used_at": None,
                    "revoked_at": None,
                },
            )
    except UniqueViolation:
        raise AdminKeyNameTaken(f"An admin key named {name!r} already exists.") from None
    security_event("admin_key_created", key=name, scope=namespace or "*")
    return AdminKeyInfo(name, namespace, now, None, None), key


def list_keys(ctx: Context) -> list[AdminKeyInfo]:
    """Every admin key, revoked ones included, oldest first."""
    with ctx.db.read() as tx:
        return [AdminKeyInfo(**row) for row in tx.execute(sql.ADMIN_KEY_LIST).mappings().all()]


def revoke(ctx: Context, *, name: str) -> None:
    """End a key at once; AdminKeyNotFound when no live key has that name."""
    with ctx.db.write() as tx:
        ended = tx.execute(sql.REVOKE_ADMIN_KEY, {"key_name": name.strip().lower(), "now": ctx.clock()}).first()
    if ended is None:
        raise AdminKeyNotFound(f"No live admin key named {name!r}.")
    security_event("admin_key_revoked", key=name)


def authenticate(ctx: Context, key: str | None) -> AdminPrincipal:
    """The live key presented; NotAuthenticated without one, InvalidToken for a wrong or revoked one."""
    if not key:
        raise NotAuthenticated("Authentication required: send an admin key as `Authorization: Bearer <key>`.")
    if len(key) > _KEY_MAX or not key.startswith(KEY_PREFIX):
        raise InvalidToken("The admin key is invalid or revoked.")
    row = ctx.db.read_one(sql.LIVE_ADMIN_KEY, {"digest": key_digest(key)})
    if row is None:
        raise InvalidToken("The admin key is invalid or revoked.")
    now = ctx.clock()
    if row["last_used_at"] is None or row["last_used_at"] < now - _TOUCH_INTERVAL:
        with ctx.db.write() as tx:
            tx.execute(sql.TOUCH_ADMIN_KEY, {"key_id": row["id"], "now": now, "stale_before": now - _TOUCH_INTERVAL})
    return AdminPrincipal(id=row["id"], name=row["name"], namespace=row["namespace"])
