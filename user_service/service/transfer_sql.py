"""The statements of exports and imports: whole user rows page by page in key order, and the rows a batch of
imported users may collide with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Connection, Select, Text, any_, bindparam, cast, select, text, tuple_

from user_service.service.statements import USERS

# The fields of an exported user as read; `extra` comes as the JSON text stored, passed through unparsed.
EXPORT_FIELDS = (
    "id",
    "namespace",
    "username",
    "email",
    "full_name",
    "avatar_url",
    "is_active",
    "email_verified",
    "created_at",
    "updated_at",
)
_EXPORTED = (
    *(USERS.c[name] for name in EXPORT_FIELDS),
    cast(USERS.c.extra, Text).label("extra_json"),
    USERS.c.avatar_key,
    USERS.c.password_hash,
)
_KEY = (USERS.c.namespace, USERS.c.created_at, USERS.c.id)


def _export_page(*, namespace: bool, after: bool) -> Select[Any]:
    # Keyset pages in (namespace, created_at, id) order: the order of the listing index, so each page is one range
    # scan of it, however far into the table.
    conditions = []
    if namespace:
        conditions.append(USERS.c.namespace == bindparam("namespace"))
    if after:
        position = (
            bindparam("after_namespace", type_=USERS.c.namespace.type),
            bindparam("after_created", type_=USERS.c.created_at.type),
            bindparam("after_id", type_=USERS.c.id.type),
        )
        conditions.append(tuple_(*_KEY) > tuple_(*position))
    return select(*_EXPORTED).where(*conditions).order_by(*_KEY).limit(bindparam("limit"))


# (one namespace, after a position) -> statement
EXPORT_PAGES = {
    (namespace, after): _export_page(namespace=namespace, after=after)
    for namespace in (False, True)
    for after in (False, True)
}

# The stored users a batch of imported users may collide with: by id, by name, by email.
_COLLIDING = (USERS.c.id, USERS.c.namespace, USERS.c.username, USERS.c.email, USERS.c.created_at)


def _one_of(column: ColumnElement[Any], name: str, *, array: bool) -> ColumnElement[bool]:
    """`column` is one of the values of the list parameter `name`: `= ANY(array)` on PostgreSQL (one parameter, the
    same statement text whatever the batch's size, so the driver parses it once), `IN (...)` elsewhere."""
    if array:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


@dataclass(frozen=True)
class Lookups:
    """The three lookups of a batch, for one database."""

    by_id: Select[Any]
    # Per namespace, so that each is one probe of the (namespace, username) or (namespace, email) unique index per
    # value.
    by_name: Select[Any]
    by_email: Select[Any]


def _lookups(*, array: bool) -> Lookups:
    in_namespace = USERS.c.namespace == bindparam("namespace")
    return Lookups(
        by_id=select(*_COLLIDING).where(_one_of(USERS.c.id, "ids", array=array)),
        by_name=select(*_COLLIDING).where(in_namespace, _one_of(USERS.c.username, "values", array=array)),
        by_email=select(*_COLLIDING).where(in_namespace, _one_of(USERS.c.email, "values", array=array)),
    )


_ARRAY_LOOKUPS, _LIST_LOOKUPS = _lookups(array=True), _lookups(array=False)
USERS_BY_ID = _LIST_LOOKUPS.by_id


def lookups(dialect_name: str) -> Lookups:
    return _ARRAY_LOOKUPS if dialect_name == "postgresql" else _LIST_LOOKUPS


_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


def plan_lookups_with_their_values(tx: Connection) -> None:
    """On PostgreSQL, plan this transaction's statements for the values they are given. The driver prepares a
    statement run five times, and PostgreSQL may then keep one generic plan for it; for the collision lookups that
    plan can be a scan of the whole table (its statistics do not count the rows the import is adding), once per
    batch: measured on 20,000 users, 25 s of lookups instead of 0.6 s."""
    if tx.dialect.name == "postgresql":
        tx.execute(_CUSTOM_PLANS)
