"""What a host app uses to protect its own routes with user-service's bearer tokens."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, HTTPException

from user_service.api.deps import BearerCredentials
from user_service.api.errors import domain_error_headers
from user_service.errors import NotAuthenticated, UserServiceError
from user_service.schemas import Profile
from user_service.service import UserService


def require_user(accounts: FastAPI) -> Callable[..., Profile]:
    """A dependency giving the caller's Profile, for routes of a host app that mounted `accounts`.

    Errors are raised as HTTPException (401 with WWW-Authenticate, 403 for a disabled account, 503 when the
    database is down), so they render correctly under the host's own exception handlers.
    """
    service: UserService = accounts.state.service

    def current_profile(credentials: BearerCredentials) -> Profile:
        try:
            if credentials is None:
                raise NotAuthenticated()
            return service.profile_of(service.authenticate(credentials.credentials).user)
        except UserServiceError as exc:
            raise HTTPException(exc.status, exc.message, headers=domain_error_headers(exc) or None) from None

    return current_profile
