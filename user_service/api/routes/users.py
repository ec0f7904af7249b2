"""The caller's own profile, avatar, password and sessions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile, status
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from user_service.api.cookies import NO_STORE, token_response
from user_service.api.deps import (
    BEARER,
    ClientAddress,
    CurrentPrincipal,
    EnrollingPrincipal,
    ServiceDep,
    UserAgent,
    current_principal,
    rate_limited,
)
from user_service.api.errors import responses
from user_service.api.metrics import Metrics
from user_service.api.openapi import NO_STORE_RESPONSE
from user_service.api.ratelimit import AddressRateLimiter
from user_service.errors import (
    DatabaseUnavailable,
    EmailTaken,
    FileTooLarge,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    MfaAlreadyEnabled,
    MfaCodeInvalid,
    MfaCodeReused,
    MfaEnrolmentRequired,
    MfaNotEnrolled,
    NotAuthenticated,
    RateLimited,
    SessionNotFound,
    SessionRevoked,
    StorageUnavailable,
    TokenExpired,
    TooManyAttempts,
    UnsupportedMediaType,
    UserDisabled,
    UserServiceError,
)
from user_service.images import MEDIA_TYPES
from user_service.schemas import (
    PasswordChangeRequest,
    Profile,
    ProfilePatch,
    RecoveryCodes,
    SessionInfo,
    TokenPair,
    TotpConfirmRequest,
    TotpEnrolment,
    TotpRemoveRequest,
)
from user_service.service import UserService

router = APIRouter(prefix="/users", tags=["users"])
# GET /users/me, the most frequent request, on a router of its own: the app tries it before every other route, and
# the rest of the users' routes after the auth routes (see create_app).
me_router = APIRouter(prefix="/users", tags=["users"])
_AUTH_ERRORS = (
    NotAuthenticated,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    UserDisabled,
    MfaEnrolmentRequired,
    DatabaseUnavailable,
)
# What a code or a password check can answer: wrong, reused, or the lockout.
_PROOF_ERRORS = (MfaCodeInvalid, MfaCodeReused, TooManyAttempts, RateLimited)
MfaAddress = Annotated[str | None, Depends(rate_limited("mfa"))]
_LOCAL_AVATAR_PREFIX = "/uploads/"
# The upload form's example and the file part's accepted types (a form has no model to carry an example).
_AVATAR_FORM = {
    "encoding": {"file": {"contentType": ", ".join(MEDIA_TYPES.values())}},
    "example": {"file": "(the bytes of a JPEG, PNG or WebP image)"},
}


def as_seen_from(request: Request, profile: Profile) -> Profile:
    """The profile with an avatar this app serves addressed through the path the app is mounted at (the request's
    root_path), so that the URL works through the host as given. PUBLIC_BASE_URL, when set, already is the
    prefix."""
    url = profile.avatar_url
    root_path = request.scope.get("root_path", "")
    if not root_path or url is None or not url.startswith(_LOCAL_AVATAR_PREFIX):
        return profile
    return profile.model_copy(update={"avatar_url": root_path.rstrip("/") + url})


@me_router.get(
    "/me",
    summary="The caller's profile",
    response_model=Profile,
    responses=responses(*_AUTH_ERRORS),
    openapi_extra={"security": [{BEARER["scheme_name"]: []}]},
)
async def read_me(request: Request) -> Response:
    # The most frequent request of all does without FastAPI's dependency solving and response validation, which
    # cost about a quarter of it: the same token check is called directly (OpenAPI still shows the bearer scheme),
    # and the profile the service built is serialized once.
    principal = await current_principal(request)
    service: UserService = request.app.state.service
    return Response(to_json(as_seen_from(request, service.profile_of(principal.user))), media_type="application/json")


@router.patch(
    "/me",
    summary="Change the caller's profile (JSON Merge Patch)",
    responses=responses(*_AUTH_ERRORS, EmailTaken, InvalidInput, RateLimited, validation=True),
)
async def patch_me(
    body: ProfilePatch, principal: CurrentPrincipal, service: ServiceDep, request: Request, address: ClientAddress
) -> Profile:
    if "email" in body.model_fields_set:
        # A taken email is refused, which tells whether it is taken: counted per address like registration.
        limiter: AddressRateLimiter = request.app.state.rate_limiter
        await limiter.hit_async("email", address)
    return as_seen_from(request, await run_in_threadpool(service.update_profile, principal.user.id, body))


@router.post(
    "/me/avatar",
    summary="Upload an avatar (JPEG, PNG or WebP)",
    responses=responses(
        *_AUTH_ERRORS, FileTooLarge, UnsupportedMediaType, RateLimited, StorageUnavailable, validation=True
    ),
    openapi_extra={"requestBody": {"content": {"multipart/form-data": _AVATAR_FORM}}},
)
async def upload_avatar(
    file: Annotated[UploadFile, File(description="The image; its real type is detected from its bytes.")],
    principal: CurrentPrincipal,
    service: ServiceDep,
    request: Request,
    _address: Annotated[str | None, Depends(rate_limited("avatar"))],
) -> Profile:
    # Decoding an image is the costliest work a request can ask for: counted per client address and per account.
    limiter: AddressRateLimiter = request.app.state.rate_limiter
    await limiter.hit_async("avatar-user", str(principal.user.id))
    # The body was streamed into a temporary file (kept in memory up to 1 MiB, on disk beyond) while RequestGuard
    # counted it against the limit; the service reads that file in chunks.
    metrics: Metrics | None = request.app.state.metrics
    try:
        profile = await run_in_threadpool(service.set_avatar, principal.user.id, file.file)
    except UserServiceError as exc:
        if metrics is not None:
            metrics.avatar_upload(exc.code)
        raise
    if metrics is not None:
        metrics.avatar_upload("stored")
    return as_seen_from(request, profile)


@router.delete(
    "/me/avatar",
    summary="Remove the caller's avatar",
    responses=responses(*_AUTH_ERRORS),
)
async def delete_avatar(principal: CurrentPrincipal, service: ServiceDep) -> Profile:
    # The storage call (a file, or an S3 request) runs in a worker thread, like every write.
    return await run_in_threadpool(service.delete_avatar, principal.user.id)


@router.post(
    "/me/password",
    summary="Change the password; every other session ends and a fresh token pair is returned",
    response_model=TokenPair,
    responses={
        **responses(*_AUTH_ERRORS, InvalidCredentials, TooManyAttempts, RateLimited, InvalidInput, validation=True),
        **NO_STORE_RESPONSE,
    },
)
def change_password(
    body: PasswordChangeRequest,
    request: Request,
    principal: CurrentPrincipal,
    service: ServiceDep,
    address: Annotated[str | None, Depends(rate_limited("password"))],
    agent: UserAgent,
) -> Response:
    pair = service.change_password(
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
        user_agent=agent,
        ip=address,
    )
    return token_response(pair, request)


@router.get("/me/sessions", summary="The caller's open sessions", responses=responses(*_AUTH_ERRORS))
def list_sessions(principal: CurrentPrincipal, service: ServiceDep) -> list[SessionInfo]:
    return service.list_sessions(principal)


@router.delete(
    "/me/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End one of the caller's sessions",
    responses=responses(*_AUTH_ERRORS, SessionNotFound, validation=True),
)
def end_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, service: ServiceDep, address: ClientAddress
) -> None:
    service.end_session(principal, session_id, ip=address)


@router.post(
    "/me/mfa/totp",
    summary="Start setting up a TOTP second factor: a new secret, its otpauth:// URI and QR code",
    description="Pending until confirmed; calling again while pending replaces the secret.",
    response_model=TotpEnrolment,
    responses={**responses(*_AUTH_ERRORS, MfaAlreadyEnabled), **NO_STORE_RESPONSE},
)
def enrol_totp(principal: EnrollingPrincipal, service: ServiceDep, address: ClientAddress) -> Response:
    enrolment = service.enrol_totp(principal, ip=address)
    return Response(enrolment.model_dump_json(), media_type="application/json", headers=NO_STORE)


@router.post(
    "/me/mfa/totp/confirm",
    summary="Turn the pending TOTP factor on with a code; every other session ends; the recovery codes, shown once",
    response_model=RecoveryCodes,
    responses={
        **responses(*_AUTH_ERRORS, *_PROOF_ERRORS, MfaNotEnrolled, MfaAlreadyEnabled, validation=True),
        **NO_STORE_RESPONSE,
    },
)
def confirm_totp(
    body: TotpConfirmRequest, principal: EnrollingPrincipal, service: ServiceDep, address: MfaAddress
) -> Response:
    codes = service.confirm_totp(principal, body.code, ip=address)
    return Response(codes.model_dump_json(), media_type="application/json", headers=NO_STORE)


@router.delete(
    "/me/mfa/totp",
    summary="Remove the second factor and its recovery codes, with a code or the password; the profile",
    responses=responses(*_AUTH_ERRORS, *_PROOF_ERRORS, InvalidCredentials, MfaNotEnrolled, validation=True),
)
def remove_totp(
    body: TotpRemoveRequest, principal: EnrollingPrincipal, service: ServiceDep, address: MfaAddress
) -> Profile:
    return service.remove_totp(principal, code=body.code, password=body.password, ip=address)
