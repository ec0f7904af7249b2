"""Registration, login, refresh and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic_core import to_json

from user_service.api.deps import ClientAddress, CurrentPrincipal, ServiceDep, UserAgent, rate_limited
from user_service.api.errors import responses
from user_service.errors import (
    DatabaseUnavailable,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    NotAuthenticated,
    OneTimeTokenInvalid,
    RateLimited,
    RefreshTokenReused,
    RegistrationClosed,
    TokenExpired,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
)
from user_service.schemas import (
    LoginRequest,
    LogoutRequest,
    PasswordResetRequest,
    Profile,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    VerifyEmailRequest,
)

router = APIRouter(prefix="/auth", tags=["auth"])

# The client address, counted against the per-address limit of the endpoint that takes it.
RegisterAddress = Annotated[str | None, Depends(rate_limited("register"))]
LoginAddress = Annotated[str | None, Depends(rate_limited("login"))]
RefreshAddress = Annotated[str | None, Depends(rate_limited("refresh"))]
LogoutAddress = Annotated[str | None, Depends(rate_limited("logout"))]
ResetAddress = Annotated[str | None, Depends(rate_limited("password-reset"))]
VerifyAddress = Annotated[str | None, Depends(rate_limited("verify-email"))]


# Token responses must never be cached (RFC 6749 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_response(pair: TokenPair) -> Response:
    """A token pair as the response body, serialized once from the model the service built (FastAPI would validate
    it again against the response model, a sizeable share of a refresh's cost)."""
    return Response(to_json(pair), media_type="application/json", headers=NO_STORE)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses=responses(
        UsernameTaken, EmailTaken, RegistrationClosed, InvalidInput, RateLimited, DatabaseUnavailable, validation=True
    ),
)
def register(body: RegisterRequest, service: ServiceDep, address: RegisterAddress) -> Profile:
    return service.register(body, ip=address)


@router.post(
    "/login",
    summary="Exchange a password for a token pair",
    response_model=TokenPair,
    responses=responses(
        InvalidCredentials,
        UserDisabled,
        EmailNotVerified,
        TooManyAttempts,
        RateLimited,
        DatabaseUnavailable,
        validation=True,
    ),
)
def login(body: LoginRequest, service: ServiceDep, address: LoginAddress, agent: UserAgent) -> Response:
    pair = service.login(
        namespace=body.namespace, username=body.username, password=body.password, user_agent=agent, ip=address
    )
    return token_response(pair)


@router.post(
    "/refresh",
    summary="Spend a refresh token for a new token pair",
    response_model=TokenPair,
    responses=responses(
        InvalidToken, TokenExpired, RefreshTokenReused, UserDisabled, RateLimited, DatabaseUnavailable, validation=True
    ),
)
def refresh(body: RefreshRequest, service: ServiceDep, address: RefreshAddress) -> Response:
    return token_response(service.refresh(body.refresh_token, ip=address))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the session of a refresh token (its refresh and access tokens stop working)",
    responses=responses(RateLimited, DatabaseUnavailable, validation=True),
)
def logout(body: LogoutRequest, service: ServiceDep, address: LogoutAddress) -> None:
    service.logout(body.refresh_token, ip=address)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End every session of the caller; all their tokens stop working at once",
    responses=responses(NotAuthenticated, InvalidToken, TokenExpired, UserDisabled, DatabaseUnavailable),
)
def logout_all(principal: CurrentPrincipal, service: ServiceDep, address: ClientAddress) -> None:
    service.logout_all(principal, ip=address)


@router.post(
    "/password-reset",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Spend a password-reset token for a new password; every session ends (log in afterwards)",
    responses=responses(OneTimeTokenInvalid, InvalidInput, RateLimited, DatabaseUnavailable, validation=True),
)
def password_reset(body: PasswordResetRequest, service: ServiceDep, address: ResetAddress) -> None:
    service.complete_password_reset(body.token, body.new_password, ip=address)


@router.post(
    "/verify-email",
    summary="Spend an email-verification token; the profile, with email_verified true",
    responses=responses(OneTimeTokenInvalid, RateLimited, DatabaseUnavailable, validation=True),
)
def verify_email(body: VerifyEmailRequest, service: ServiceDep, address: VerifyAddress) -> Profile:
    return service.verify_email(body.token, ip=address)
