"""Profiles and avatars: the public view of an account, merge patches, and uploaded images."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, BinaryIO

from user_service.errors import EmailTaken, ErrorCode, FileTooLarge, InvalidInput, InvalidToken, StorageUnavailable
from user_service.images import reencode_image
from user_service.schemas import Profile, ProfilePatch
from user_service.service import statements as sql
from user_service.service.context import Account, Context
from user_service.service.database import Transaction, UniqueViolation
from user_service.validation import EXTRA_MAX_KEYS

log = logging.getLogger("user_service.avatars")


def profile_of(ctx: Context, user: Account) -> Profile:
    """The public view of a user: never the hash or the lockout state."""
    avatar_url = user.avatar_url
    # A stored avatar has its key; its URL is in the row when the storage serves it (S3), else this app does.
    if user.avatar_key and not user.avatar_url:
        avatar_url = f"{ctx.settings.public_base_url or ''}/uploads/{user.avatar_key}"
    return Profile(
        id=user.id,
        namespace=user.namespace,
        username=user.username,
        email=user.email,
        email_verified=user.email_verified,
        full_name=user.full_name,
        avatar_url=avatar_url,
        extra=dict(user.extra or {}),
        created_at=user.created_at,
        updated_at=user.updated_at,
        mfa_enabled=user.mfa_enabled,
    )


def merge_extra(current: dict[str, str], patch: dict[str, str | None] | None) -> dict[str, str]:
    """RFC 7396 on a flat map: null clears everything, a key set to null is removed, others are set."""
    if patch is None:
        return {}
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > EXTRA_MAX_KEYS:
        raise InvalidInput(f"extra may hold at most {EXTRA_MAX_KEYS} keys", code=ErrorCode.TOO_MANY_EXTRA_KEYS)
    return merged


def _locked_account(tx: Transaction, user_id: uuid.UUID) -> Account:
    """The user's row, locked for the rest of the write transaction; a deleted user's token is no longer valid."""
    row = tx.execute(sql.ACCOUNT_FOR_UPDATE, {"user_id": user_id}).first()
    if row is None:
        raise InvalidToken()
    return Account.from_row(row._mapping)


def update_profile(
    ctx: Context, user_id: uuid.UUID, patch: ProfilePatch, *, state: Mapping[str, bool] | None = None
) -> Profile:
    """Apply a JSON Merge Patch inside one transaction holding the user's row lock; `state` (an app back end's
    `is_active` and `email_verified`) is set in the same transaction, and disabling ends every session."""
    fields = patch.model_fields_set
    changes: dict[str, Any] = {}
    try:
        with ctx.db.write() as tx:
            user = _locked_account(tx, user_id)
            if "email" in fields:
                changes["email"] = patch.email
                if patch.email != user.email:
                    # A new address is unproven until the user spends a verification token sent to it.
                    changes["email_verified"] = False
            if "full_name" in fields:
                changes["full_name"] = patch.full_name
            if "avatar_url" in fields:
                changes["avatar_key"], changes["avatar_url"] = None, patch.avatar_url
            if "extra" in fields:
                changes["extra"] = merge_extra(user.extra or {}, patch.extra)
            changes.update(state or {})
            changes["updated_at"] = now = ctx.clock()
            tx.execute(sql.UPDATE_USER, {"user_key": user_id, **changes})
            if changes.get("is_active") is False:
                # Disabling ends every session: the account's tokens stop working at once.
                tx.execute(sql.END_SESSIONS, {"owner_key": user_id, "now": now})
    except UniqueViolation:
        raise EmailTaken() from None
    if "avatar_key" in changes and user.avatar_key:
        discard_avatar(ctx, user.avatar_key)
    return profile_of(ctx, replace(user, **changes))


def discard_avatar(ctx: Context, key: str) -> None:
    """Delete an avatar no row names any more. The change that dropped it is already committed, so a storage
    outage here leaves an orphan to report, not an error to answer."""
    try:
        ctx.storage.delete(key)
    except StorageUnavailable:
        log.warning("avatar %s could not be deleted from the storage; delete it by hand", key)


def set_avatar(ctx: Context, user_id: uuid.UUID, image: bytes | BinaryIO) -> Profile:
    """Store an uploaded avatar, re-encoded without its metadata, once its bytes prove to be an accepted image; the
    old one is deleted. When the storage is down (StorageUnavailable) nothing changes.

    `image` is the bytes or a seekable binary file, which is read in chunks and never whole into memory.
    """
    limit = ctx.settings.avatar_max_bytes
    source = io.BytesIO(image) if isinstance(image, bytes) else image
    if source.seek(0, io.SEEK_END) > limit:
        raise FileTooLarge(f"The file is larger than {limit} bytes.")
    source.seek(0)
    encoded = reencode_image(
        source, max_pixels=ctx.settings.avatar_max_pixels, max_dimension=ctx.settings.avatar_max_dimension
    )
    with encoded.data:
        key = ctx.storage.save(encoded.data, encoded.extension)
    changes: dict[str, Any] = {"avatar_key": key, "avatar_url": ctx.storage.public_url(key)}
    try:
        with ctx.db.write() as tx:
            user = _locked_account(tx, user_id)
            changes["updated_at"] = ctx.clock()
            tx.execute(sql.UPDATE_USER, {"user_key": user_id, **changes})
    except BaseException:
        discard_avatar(ctx, key)
        raise
    if user.avatar_key:
        discard_avatar(ctx, user.avatar_key)
    return profile_of(ctx, replace(user, **changes))


def delete_avatar(ctx: Context, user_id: uuid.UUID) -> Profile:
    """Clear the user's avatar (a stored one or a URL set by a patch); a stored object is deleted."""
    changes: dict[str, Any] = {"avatar_key": None, "avatar_url": None}
    with ctx.db.write() as tx:
        user = _locked_account(tx, user_id)
        changes["updated_at"] = ctx.clock()
        tx.execute(sql.UPDATE_USER, {"user_key": user_id, **changes})
    if user.avatar_key:
        discard_avatar(ctx, user.avatar_key)
    return profile_of(ctx, replace(user, **changes))
