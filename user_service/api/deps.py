"""Dependencies as Annotated aliases, so routes read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from user_service.errors import NotAuthenticated
from user_service.models import User
from user_service.service import UserService

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from /auth/login or /auth/refresh.")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_service(request: Request) -> UserService:
    service: UserService = request.app.state.service
    return service


ServiceDep = Annotated[UserService, Depends(get_service)]


def get_current_user(service: ServiceDep, credentials: BearerCredentials) -> User:
    if credentials is None:
        raise NotAuthenticated()
    return service.authenticate(credentials.credentials)


CurrentUser = Annotated[User, Depends(get_current_user)]
