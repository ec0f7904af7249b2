"""What an app's back end does to its users through the admin API: every call checks the key's reach first.

A key scoped to one namespace meets every other namespace as one that does not exist: the same 404, whether the
namespace holds users or not.
"""

from __future__ import annotations

from user_service.errors import InvalidInput, NamespaceNotFound, UserNotFound
from user_service.events import security_event
from user_service.schemas import (
    AdminSessionInfo,
    AdminUserCreate,
    AdminUserPatch,
    ImportedUser,
    OneTimeTokenOut,
    Profile,
    RegisterRequest,
    UserDetail,
    UserPage,
)
from user_service.service import accounts, directory, mfa, profiles, recovery, transfer
from user_service.service import statements as sql
from user_service.service.admin_keys import AdminPrincipal
from user_service.service.context import Account, Context
from user_service.validation import normalize_namespace


def _namespace(key: AdminPrincipal, namespace: str) -> str:
    """The stored form of a namespace this key reaches; NamespaceNotFound otherwise."""
    try:
        stored = normalize_namespace(namespace)
    except ValueError:
        raise NamespaceNotFound() from None
    if not key.reaches(stored):
        raise NamespaceNotFound()
    return stored


def _user(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> Account:
    """The account this key names; UserNotFound for an unknown user and for a namespace out of the key's reach."""
    key_name = accounts.normalized_name(namespace, username)
    user = accounts.find(ctx, *key_name) if key_name is not None and key.reaches(key_name[0]) else None
    if user is None:
        raise UserNotFound()
    return user


def _event(action: str, key: AdminPrincipal, user: Account | Profile, **fields: object) -> None:
    security_event(
        "admin_action", action=action, key=key.name, namespace=user.namespace, username=user.username, **fields
    )


def list_users(
    ctx: Context,
    key: AdminPrincipal,
    namespace: str,
    *,
    search: str | None,
    active: bool | None,
    limit: int,
    after: str | None,
) -> UserPage:
    """A page of the namespace's users; a namespace without users is NamespaceNotFound, like one out of reach."""
    stored = _namespace(key, namespace)
    page = directory.list_users(ctx, stored, search=search, active=active, limit=limit, after=after)
    if not page.items and after is None and search is None and active is None:
        raise NamespaceNotFound()
    return page


def create_user(ctx: Context, key: AdminPrincipal, namespace: str, data: AdminUserCreate) -> Profile:
    """A new account in a namespace the key reaches, with a password (the policy applies) or a bcrypt hash."""
    stored = _namespace(key, namespace)
    if data.password is not None:
        registration = RegisterRequest.model_validate(
            {"namespace": stored, **data.model_dump(exclude={"password_hash", "email_verified"}, exclude_none=True)}
        )
        profile = accounts.register(ctx, registration, by_operator=True)
        if data.email_verified:
            profile = profiles.update_profile(ctx, profile.id, AdminUserPatch(), state={"email_verified": True})
    else:
        profile = create_user_with_hash(ctx, stored, data)
    _event("create_user", key, profile, user_id=profile.id)
    return profile


def create_user_with_hash(ctx: Context, namespace: str, data: AdminUserCreate) -> Profile:
    """Store a new account with a given bcrypt hash (carried over from another system): the import's own path, so
    the same rules and conflicts apply; its password is whatever it was there, so no policy applies to it."""
    imported = ImportedUser.model_validate({"namespace": namespace, **data.model_dump(exclude_none=True)})
    return transfer.create_user(ctx, imported)


def user_detail(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> UserDetail:
    user = _user(ctx, key, namespace, username)
    return directory.user_detail(ctx, user.namespace, user.username)


def update_user(ctx: Context, key: AdminPrincipal, namespace: str, username: str, patch: AdminUserPatch) -> Profile:
    """A merge patch of the profile, with `is_active` and `email_verified`; disabling ends every session."""
    user = _user(ctx, key, namespace, username)
    state: dict[str, bool] = {
        name: getattr(patch, name) for name in ("is_active", "email_verified") if name in patch.model_fields_set
    }
    profile = profiles.update_profile(ctx, user.id, patch, state=state)
    _event("update_user", key, user, fields=",".join(sorted(patch.model_fields_set)))
    return profile


def delete_user(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> None:
    user = _user(ctx, key, namespace, username)
    accounts.delete_user(ctx, namespace=user.namespace, username=user.username)
    _event("delete_user", key, user)


def list_sessions(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> list[AdminSessionInfo]:
    """The user's live sessions, newest first."""
    user = _user(ctx, key, namespace, username)
    with ctx.db.read() as tx:
        rows = tx.execute(sql.LIVE_SESSIONS, {"owner_key": user.id, "now": ctx.clock()}).mappings().all()
    return [AdminSessionInfo(**row) for row in rows]


def end_sessions(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> int:
    user = _user(ctx, key, namespace, username)
    return directory.revoke_sessions(ctx, user.namespace, user.username, actor=f"admin-key:{key.name}")


def reset_mfa(ctx: Context, key: AdminPrincipal, namespace: str, username: str) -> None:
    """Remove the user's second factor and recovery codes, and end every session of the user."""
    user = _user(ctx, key, namespace, username)
    mfa.reset(ctx, namespace=user.namespace, username=user.username, actor=f"admin-key:{key.name}")
    _event("reset_mfa", key, user)


def issue_token(
    ctx: Context, key: AdminPrincipal, namespace: str, username: str, kind: recovery.TokenKind
) -> OneTimeTokenOut:
    """A password-reset or email-verification token for the user (verification needs an email on the account)."""
    user = _user(ctx, key, namespace, username)
    if kind == recovery.EMAIL_VERIFICATION and user.email is None:
        raise InvalidInput("the user has no email address to verify")
    return recovery.issue(ctx, user, kind, actor=f"admin-key:{key.name}")
