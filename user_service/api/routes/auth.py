"""Registration, login and refresh."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from user_service.api.deps import ServiceDep
from user_service.api.errors import responses
from user_service.errors import (
    DatabaseUnavailable,
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    RefreshTokenReused,
    TokenExpired,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
)
from user_service.schemas import LoginRequest, Profile, RefreshRequest, RegisterRequest, TokenPair

router = APIRouter(prefix="/auth", tags=["auth"])


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses=responses(UsernameTaken, EmailTaken, InvalidInput, DatabaseUnavailable, validation=True),
)
def register(body: RegisterRequest, service: ServiceDep) -> Profile:
    return service.register(**body.model_dump())


@router.post(
    "/login",
    summary="Exchange a password for a token pair",
    responses=responses(InvalidCredentials, UserDisabled, TooManyAttempts, DatabaseUnavailable, validation=True),
)
def login(body: LoginRequest, request: Request, response: Response, service: ServiceDep) -> TokenPair:
    pair = service.login(
        namespace=body.namespace,
        username=body.username,
        password=body.password,
        user_agent=request.headers.get("user-agent"),
        ip=request.client.host if request.client else None,
    )
    _no_store(response)
    return pair


@router.post(
    "/refresh",
    summary="Spend a refresh token for a new token pair",
    responses=responses(
        InvalidToken, TokenExpired, RefreshTokenReused, UserDisabled, DatabaseUnavailable, validation=True
    ),
)
def refresh(body: RefreshRequest, response: Response, service: ServiceDep) -> TokenPair:
    pair = service.refresh(body.refresh_token)
    _no_store(response)
    return pair
