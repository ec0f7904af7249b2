"""Registration, login, refresh and logout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status

from user_service.api.cookies import NO_STORE, clear_refresh_cookie, refresh_token_of, token_response
from user_service.api.deps import ClientAddress, CurrentPrincipal, ServiceDep, UserAgent, rate_limited
from user_service.api.errors import responses
from user_service.api.openapi import NO_STORE_RESPONSE
from user_service.errors import (
    DatabaseUnavailable,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    MfaCodeInvalid,
    MfaCodeReused,
    MfaEnrolmentRequired,
    MfaTokenInvalid,
    NotAuthenticated,
    OneTimeTokenInvalid,
    OriginNotAllowed,
    RateLimited,
    RefreshTokenReused,
    RegistrationClosed,
    SessionRevoked,
    TokenExpired,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
)
from user_service.schemas import (
    LoginMfaRequest,
    LoginRequest,
    LogoutRequest,
    MfaChallenge,
    MfaEnrolmentRequiredBody,
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
LoginMfaAddress = Annotated[str | None, Depends(rate_limited("login-mfa"))]
RefreshAddress = Annotated[str | None, Depends(rate_limited("refresh"))]
LogoutAddress = Annotated[str | None, Depends(rate_limited("logout"))]
ResetAddress = Annotated[str | None, Depends(rate_limited("password-reset"))]
VerifyAddress = Annotated[str | None, Depends(rate_limited("verify-email"))]


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


def _login_responses() -> dict[int | str, dict[str, Any]]:
    documented = responses(
        InvalidCredentials,
        UserDisabled,
        EmailNotVerified,
        MfaEnrolmentRequired,
        TooManyAttempts,
        RateLimited,
        DatabaseUnavailable,
        validation=True,
    )
    # `mfa_enrolment_required` carries a token limited to enrolment beside the code.
    enrolment = MfaEnrolmentRequiredBody.model_json_schema()["properties"]
    forbidden = documented[403]["content"]["application/json"]["schema"]
    forbidden["properties"].update({name: enrolment[name] for name in ("enrolment_token", "expires_in")})
    documented[403]["description"] += " (`mfa_enrolment_required` with `enrolment_token` and `expires_in`)"
    return {**documented, **NO_STORE_RESPONSE}


@router.post(
    "/login",
    summary="Exchange a password for a token pair, or for a second-factor challenge",
    description=(
        "A token pair; or, for an account with a second factor, `{mfa_required: true, mfa_token, expires_in}` "
        "and no tokens: complete the login at POST /auth/login/mfa."
    ),
    response_model=TokenPair | MfaChallenge,
    responses=_login_responses(),
)
def login(
    body: LoginRequest, request: Request, service: ServiceDep, address: LoginAddress, agent: UserAgent
) -> Response:
    outcome = service.login(
        namespace=body.namespace, username=body.username, password=body.password, user_agent=agent, ip=address
    )
    if isinstance(outcome, MfaChallenge):
        return Response(outcome.model_dump_json(), media_type="application/json", headers=NO_STORE)
    return token_response(outcome, request)


@router.post(
    "/login/mfa",
    summary="Complete a login with a second factor: the mfa_token and a TOTP or recovery code for a token pair",
    response_model=TokenPair,
    responses={
        **responses(
            MfaTokenInvalid,
            MfaCodeInvalid,
            MfaCodeReused,
            UserDisabled,
            TooManyAttempts,
            RateLimited,
            DatabaseUnavailable,
            validation=True,
        ),
        **NO_STORE_RESPONSE,
    },
)
def login_mfa(
    body: LoginMfaRequest, request: Request, service: ServiceDep, address: LoginMfaAddress, agent: UserAgent
) -> Response:
    pair = service.login_mfa(mfa_token=body.mfa_token, code=body.code, user_agent=agent, ip=address)
    return token_response(pair, request)


@router.post(
    "/refresh",
    summary="Spend a refresh token for a new token pair",
    response_model=TokenPair,
    responses={
        **responses(
            InvalidToken,
            TokenExpired,
            RefreshTokenReused,
            SessionRevoked,
            UserDisabled,
            OriginNotAllowed,
            RateLimited,
            DatabaseUnavailable,
            validation=True,
        ),
        **NO_STORE_RESPONSE,
    },
)
def refresh(
    request: Request,
    service: ServiceDep,
    address: RefreshAddress,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> Response:
    # In cookie mode a browser sends no body: the refresh token comes from the cookie.
    token = refresh_token_of(request, body.refresh_token if body is not None else None)
    return token_response(service.refresh(token, ip=address), request)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the session of a refresh token (its refresh and access tokens stop working)",
    responses=responses(OriginNotAllowed, RateLimited, DatabaseUnavailable, validation=True),
)
def logout(
    request: Request,
    service: ServiceDep,
    address: LogoutAddress,
    body: Annotated[LogoutRequest | None, Body()] = None,
) -> Response:
    service.logout(refresh_token_of(request, body.refresh_token if body is not None else None), ip=address)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_refresh_cookie(response, request)
    return response


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End every session of the caller; all their tokens stop working at once",
    responses=responses(
        NotAuthenticated, InvalidToken, TokenExpired, SessionRevoked, UserDisabled, DatabaseUnavailable
    ),
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
