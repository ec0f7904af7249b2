"""The caller's own profile and avatar."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from user_service.api.deps import CurrentUser, ServiceDep
from user_service.api.errors import responses
from user_service.errors import (
    DatabaseUnavailable,
    EmailTaken,
    FileTooLarge,
    InvalidInput,
    InvalidToken,
    NotAuthenticated,
    TokenExpired,
    UnsupportedMediaType,
    UserDisabled,
)
from user_service.schemas import Profile, ProfilePatch

router = APIRouter(prefix="/users", tags=["users"])
_AUTH_ERRORS = (NotAuthenticated, InvalidToken, TokenExpired, UserDisabled, DatabaseUnavailable)


@router.get("/me", summary="The caller's profile", responses=responses(*_AUTH_ERRORS))
def read_me(user: CurrentUser, service: ServiceDep) -> Profile:
    return service.profile_of(user)


@router.patch(
    "/me",
    summary="Change the caller's profile (JSON Merge Patch)",
    responses=responses(*_AUTH_ERRORS, EmailTaken, InvalidInput, validation=True),
)
def patch_me(body: ProfilePatch, user: CurrentUser, service: ServiceDep) -> Profile:
    return service.update_profile(user.id, body)


@router.post(
    "/me/avatar",
    summary="Upload an avatar (JPEG, PNG or WebP)",
    responses=responses(*_AUTH_ERRORS, FileTooLarge, UnsupportedMediaType, validation=True),
)
def upload_avatar(
    file: Annotated[UploadFile, File(description="The image; its real type is detected from its bytes.")],
    user: CurrentUser,
    service: ServiceDep,
) -> Profile:
    # One byte over the limit is enough to know it is too large; the rest is never read.
    data = file.file.read(service.settings.avatar_max_bytes + 1)
    return service.set_avatar(user.id, data)
