"""The SQL of admin keys and one-time tokens, built once on the tables like `statements.py`."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, insert, or_, select, update

from user_service.models import AdminKey, OneTimeToken

ADMIN_KEYS, ONE_TIME_TOKENS = (cast("Table", model.__table__) for model in (AdminKey, OneTimeToken))

# -- admin keys ---------------------------------------------------------------------------------------------------

INSERT_ADMIN_KEY = insert(ADMIN_KEYS)
ADMIN_KEY_LIST = select(
    ADMIN_KEYS.c.name,
    ADMIN_KEYS.c.namespace,
    ADMIN_KEYS.c.created_at,
    ADMIN_KEYS.c.last_used_at,
    ADMIN_KEYS.c.revoked_at,
).order_by(ADMIN_KEYS.c.created_at, ADMIN_KEYS.c.name)
# A presented key: looked up by its digest (a unique index), never compared in Python.
LIVE_ADMIN_KEY = select(ADMIN_KEYS.c.id, ADMIN_KEYS.c.name, ADMIN_KEYS.c.namespace, ADMIN_KEYS.c.last_used_at).where(
    ADMIN_KEYS.c.key_hash == bindparam("digest"), ADMIN_KEYS.c.revoked_at.is_(None)
)
# Last use is recorded at most once per interval, so that busy keys do not write on every request.
TOUCH_ADMIN_KEY = (
    update(ADMIN_KEYS)
    .where(
        ADMIN_KEYS.c.id == bindparam("key_id"),
        or_(ADMIN_KEYS.c.last_used_at.is_(None), ADMIN_KEYS.c.last_used_at < bindparam("stale_before")),
    )
    .values(last_used_at=bindparam("now"))
)
REVOKE_ADMIN_KEY = (
    update(ADMIN_KEYS)
    .where(ADMIN_KEYS.c.name == bindparam("key_name"), ADMIN_KEYS.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
    .returning(ADMIN_KEYS.c.id)
)
ADMIN_KEY_BY_NAME = select(ADMIN_KEYS.c.id, ADMIN_KEYS.c.revoked_at).where(ADMIN_KEYS.c.name == bindparam("key_name"))

# -- one-time tokens ----------------------------------------------------------------------------------------------

INSERT_ONE_TIME_TOKEN = insert(ONE_TIME_TOKENS)
# Any newer token of a kind, and a password change, make the older ones of that kind useless.
SPEND_OPEN_TOKENS = (
    update(ONE_TIME_TOKENS)
    .where(
        ONE_TIME_TOKENS.c.user_id == bindparam("owner_key"),
        ONE_TIME_TOKENS.c.kind == bindparam("token_kind"),
        ONE_TIME_TOKENS.c.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
)
# The race guard of a one-time token: of concurrent uses, exactly one claims it, and only while it is unused and
# unexpired.
CLAIM_ONE_TIME_TOKEN = (
    update(ONE_TIME_TOKENS)
    .where(
        ONE_TIME_TOKENS.c.token_hash == bindparam("digest"),
        ONE_TIME_TOKENS.c.kind == bindparam("token_kind"),
        ONE_TIME_TOKENS.c.used_at.is_(None),
        ONE_TIME_TOKENS.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
    .returning(ONE_TIME_TOKENS.c.user_id, ONE_TIME_TOKENS.c.email.label("token_email"))
)
