"""Signing keys: the asymmetric keys that sign access tokens, shared by every instance through the database.

Each key is `next` (published, not yet signing), `current` (signing) or `retired` (published until every token it
may have signed has expired). A process keeps the keys it read in memory, opened once, and reads them again at most
every KEY_REFRESH_SECONDS, or at once (at most once a second) when a token names a kid it has not seen: a rotation
reaches every instance within that time, without a restart, and a known kid never costs a database read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from user_service import signing
from user_service.config import MAX_ACCESS_TOKEN_TTL_SECONDS
from user_service.errors import ConfigurationError, DatabaseUnavailable
from user_service.security import CLOCK_LEEWAY_SECONDS
from user_service.service import statements as sql
from user_service.service.context import Context, KeySnapshot, SigningKeyInUse
from user_service.service.database import Transaction, UniqueViolation
from user_service.signing import PublicKey

# How stale this process's copy of the keys may get: a rotation reaches every instance within this time.
KEY_REFRESH_SECONDS = 60.0
# A token naming an unseen kid reloads the keys at once, but at most this often (random kids cost no read each).
UNKNOWN_KID_RELOAD_SECONDS = 1.0
# A retired key stays published as long as a token it signed may live: the longest lifetime, plus the time an
# instance may keep signing with it before it sees the rotation, plus the clock leeway.
RETIRED_KEY_PUBLISHED_SECONDS = MAX_ACCESS_TOKEN_TTL_SECONDS + int(KEY_REFRESH_SECONDS) + CLOCK_LEEWAY_SECONDS
_ROTATION_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What an operator may see of a key: never private material."""

    kid: str
    algorithm: str
    state: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    published: bool


def _algorithm(ctx: Context) -> str:
    settings = ctx.settings
    if not settings.uses_key_store:
        raise ConfigurationError(
            f"JWT_ALGORITHM is {settings.jwt_algorithm}: tokens are signed with JWT_SECRET_KEY and there are no keys; "
            "set JWT_ALGORITHM to ES256, EdDSA or RS256 to use signing keys"
        )
    return settings.jwt_algorithm


def _new_key_row(ctx: Context, *, state: str, now: datetime) -> dict[str, Any]:
    algorithm = _algorithm(ctx)
    kid = signing.new_kid()
    private_key = signing.generate_private_key(algorithm)
    return {
        "kid": kid,
        "algorithm": algorithm,
        "state": state,
        "slot": state,
        "public_jwk": json.dumps(signing.public_jwk(private_key, kid=kid, algorithm=algorithm)),
        "private_key": signing.seal_private_key(private_key, secret=ctx.settings.signing_key(), kid=kid),
        "created_at": now,
        "activated_at": now if state == "current" else None,
        "retired_at": None,
    }


def _create_missing(ctx: Context, tx: Transaction, slots: set[str], now: datetime) -> None:
    for state in ("current", "next"):
        if state not in slots:
            tx.execute(sql.INSERT_SIGNING_KEY, _new_key_row(ctx, state=state, now=now))


def ensure(ctx: Context) -> bool:
    """Create the current and next keys when the database has none; safe when several instances start at once (the
    database holds one key per slot: the losers' inserts are refused and they use the winner's). True when this
    call made them."""
    _algorithm(ctx)
    with ctx.db.read() as tx:
        rows = tx.execute(sql.PUBLISHED_KEYS, {"cutoff": ctx.clock()})
        slots = {row._mapping["slot"] for row in rows if row._mapping["slot"]}
    if {"current", "next"} <= slots:
        return False
    try:
        with ctx.db.write() as tx:
            held = {row._mapping["slot"] for row in tx.execute(sql.KEYS_IN_SLOTS)}
            _create_missing(ctx, tx, held, ctx.clock())
    except UniqueViolation:
        return False
    return "current" not in held


def reload(ctx: Context) -> KeySnapshot:
    """Read the published keys again (creating the first ones if there are none) and open the current one."""
    ring = ctx.keys
    seen = ring.reloads
    with ring.lock:
        # Another thread reloaded while this one waited for the lock: its result serves this one too, and its
        # failure fails this one at once (a database that just timed out is not asked again in a queue).
        if ring.reloads != seen:
            if ring.last_reload_failed or ring.snapshot is None:
                raise DatabaseUnavailable()
            return ring.snapshot
        try:
            snapshot = _read_keys(ctx)
        except DatabaseUnavailable:
            ring.last_reload_failed = True
            raise
        else:
            ring.last_reload_failed = False
        finally:
            ring.reloads += 1
        return snapshot


def _read_keys(ctx: Context) -> KeySnapshot:
    ring = ctx.keys
    now = ctx.clock()
    rows = _published_rows(ctx, now)
    if not any(row["state"] == "current" for row in rows) or not any(row["state"] == "next" for row in rows):
        ensure(ctx)
        rows = _published_rows(ctx, now)
    verifiers: dict[str, tuple[PublicKey, str]] = {}
    jwks = []
    signer = None
    for row in rows:
        jwk = json.loads(row["public_jwk"])
        verifiers[row["kid"]] = (signing.public_key_of(jwk), row["algorithm"])
        jwks.append(jwk)
        if row["state"] == "current":
            signer = SigningKeyInUse(row["kid"], row["algorithm"], _open(ctx, row))
    if signer is None:
        raise ConfigurationError("the database holds no current signing key; run `user-service keys rotate`")
    ring.snapshot = KeySnapshot(signer=signer, verifiers=verifiers, jwks=tuple(jwks), loaded_at=ring.monotonic())
    return ring.snapshot


def _published_rows(ctx: Context, now: datetime) -> list[dict[str, Any]]:
    cutoff = now - timedelta(seconds=RETIRED_KEY_PUBLISHED_SECONDS)
    with ctx.db.read() as tx:
        return [dict(row._mapping) for row in tx.execute(sql.PUBLISHED_KEYS, {"cutoff": cutoff})]


def _open(ctx: Context, row: dict[str, Any]) -> signing.PrivateKey:
    try:
        return signing.unseal_private_key(row["private_key"], secret=ctx.settings.signing_key(), kid=row["kid"])
    except signing.KeyUnsealError:
        raise ConfigurationError(
            f"JWT_SECRET_KEY cannot decrypt the signing key {row['kid']} in the database; use the JWT_SECRET_KEY the "
            "keys were made with"
        ) from None


def snapshot(ctx: Context) -> KeySnapshot:
    """The keys, read again when this process's copy is older than KEY_REFRESH_SECONDS."""
    ring = ctx.keys
    current = ring.snapshot
    if current is None or ring.monotonic() - current.loaded_at >= KEY_REFRESH_SECONDS:
        if current is not None and ring.lock.locked():
            # Another thread is reading them now; until it is done, the copy in hand is still good.
            return current
        return reload(ctx)
    return current


def signer(ctx: Context) -> SigningKeyInUse:
    """The key that signs access tokens now."""
    return snapshot(ctx).signer


def verifying_key(ctx: Context, kid: str) -> tuple[PublicKey, str] | None:
    """The public key and algorithm of a published key, or None for a kid the database does not publish."""
    ring = ctx.keys
    found = snapshot(ctx).verifiers.get(kid)
    if found is not None:
        return found
    moment = ring.monotonic()
    if moment - ring.last_unknown_kid_reload < UNKNOWN_KID_RELOAD_SECONDS:
        return None
    ring.last_unknown_kid_reload = moment
    return reload(ctx).verifiers.get(kid)


def jwks(ctx: Context) -> dict[str, Any]:
    """The JSON Web Key Set of the published keys; empty with an HS* algorithm (a shared secret is never
    published)."""
    if not ctx.settings.uses_key_store:
        return {"keys": []}
    return {"keys": [dict(jwk) for jwk in snapshot(ctx).jwks]}


def rotate(ctx: Context) -> KeyInfo:
    """Retire the current key, make the next one current and create a new next key; returns the new current key.
    On a database without keys, the first ones are made instead."""
    _algorithm(ctx)
    if ensure(ctx):
        ctx.keys.snapshot = None
        return next(key for key in list_keys(ctx) if key.state == "current")
    for _ in range(_ROTATION_ATTEMPTS):
        now = ctx.clock()
        try:
            with ctx.db.write() as tx:
                slots = {row._mapping["slot"]: row._mapping["kid"] for row in tx.execute(sql.KEYS_IN_SLOTS)}
                if set(slots) != {"current", "next"}:
                    # A concurrent rotation moved the keys after this one read them: start again.
                    continue
                retired = tx.execute(sql.RETIRE_KEY, {"key_id": slots["current"], "now": now}).rowcount
                promoted = tx.execute(sql.PROMOTE_KEY, {"key_id": slots["next"], "now": now}).rowcount
                if retired != 1 or promoted != 1:
                    raise UniqueViolation()
                tx.execute(sql.INSERT_SIGNING_KEY, _new_key_row(ctx, state="next", now=now))
        except UniqueViolation:
            continue
        ctx.keys.snapshot = None
        return next(key for key in list_keys(ctx) if key.kid == slots["next"])
    raise ConfigurationError("the keys changed during the rotation each time it was tried; run it again")


def list_keys(ctx: Context) -> list[KeyInfo]:
    """Every key, oldest first, with whether the JWKS publishes it."""
    cutoff = ctx.clock() - timedelta(seconds=RETIRED_KEY_PUBLISHED_SECONDS)
    with ctx.db.read() as tx:
        rows = [dict(row._mapping) for row in tx.execute(sql.ALL_KEYS)]
    return [
        KeyInfo(
            **row,
            published=row["state"] != "retired" or (row["retired_at"] is not None and row["retired_at"] > cutoff),
        )
        for row in rows
    ]
