"""The statements of exports and imports: whole user rows page by page in key order, and the rows a batch of
imported users may collide with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, select, tuple_

from user_service.service.statements import USERS

EXPORT_FIELDS = (
    "id",
    "namespace",
    "username",
    "email",
    "full_name",
    "avatar_url",
    "extra",
    "is_active",
    "created_at",
    "updated_at",
)
_EXPORTED = (*(USERS.c[name] for name in EXPORT_FIELDS), USERS.c.avatar_key, USERS.c.password_hash)
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
USERS_BY_ID = select(*_COLLIDING).where(USERS.c.id.in_(bindparam("ids", expanding=True)))
USERS_BY_NAME = select(*_COLLIDING).where(
    tuple_(USERS.c.namespace, USERS.c.username).in_(bindparam("names", expanding=True))
)
USERS_BY_EMAIL = select(*_COLLIDING).where(
    tuple_(USERS.c.namespace, USERS.c.email).in_(bindparam("emails", expanding=True))
)
