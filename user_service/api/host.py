"""What a host app uses to protect its own routes with user-service's bearer tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import FastAPI, HTTPException

from user_service.api.deps import BearerCredentials
from user_service.api.errors import domain_error_headers
from user_service.errors import InvalidToken, NotAuthenticated, UserServiceError
from user_service.schemas import Profile
from user_service.service import UserService
from user_service.validation import normalize_namespace


def require_user(accounts: FastAPI, namespace: str | Iterable[str] | None = None) -> Callable[..., Profile]:
    """A dependency giving the caller's Profile, for routes of a host app that mounted `accounts`.

    `namespace` (one, or several) is the tenant the host serves: a token of any other namespace is refused like an
    invalid one, since anyone may hold an account in some namespace. Identify the caller by `Profile.id` (the
    token's `sub`), which never changes and is unique across namespaces; a username is unique only within its
    namespace. Errors are raised as HTTPException (401 with WWW-Authenticate, 403 for a disabled account, 503 when
    the database is down), so they render correctly under the host's own exception handlers.
    """
    service: UserService = accounts.state.service
    names = [namespace] if isinstance(namespace, str) else namespace
    allowed = None if names is None else frozenset(normalize_namespace(name) for name in names)
    if allowed is not None and not allowed:
        raise ValueError("require_user: name at least one namespace, or None for any")

    def current_profile(credentials: BearerCredentials) -> Profile:
        try:
            if credentials is None:
                raise NotAuthenticated()
            user = service.authenticate(credentials.credentials).user
            if allowed is not None and user.namespace not in allowed:
                raise InvalidToken("The token belongs to another namespace.")
            return service.profile_of(user)
        except UserServiceError as exc:
            raise HTTPException(exc.status, exc.message, headers=domain_error_headers(exc) or None) from None

    return current_profile
