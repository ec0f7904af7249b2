"""The admin API for apps' back ends: a namespace's users, their sessions, and one-time tokens, behind an admin key.

Path names are checked by the same rules as every door (422 for a malformed one); a namespace out of the key's
reach answers exactly as one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from starlette.concurrency import run_in_threadpool

from user_service.api.deps import CurrentAdminKey, ServiceDep
from user_service.api.errors import responses
from user_service.errors import (
    DatabaseUnavailable,
    EmailTaken,
    InvalidInput,
    InvalidToken,
    NamespaceNotFound,
    NotAuthenticated,
    UsernameTaken,
    UserNotFound,
)
from user_service.schemas import (
    AdminSessionInfo,
    AdminUserCreate,
    AdminUserPatch,
    OneTimeTokenOut,
    Profile,
    UserDetail,
    UserPage,
)
from user_service.service.directory import PAGE_MAX, SEARCH_MAX
from user_service.service.recovery import EMAIL_VERIFICATION, PASSWORD_RESET, TokenKind
from user_service.validation import NAMESPACE_MAX, USERNAME_MAX, normalize_namespace, normalize_username

router = APIRouter(prefix="/admin", tags=["admin"])
_KEY_ERRORS = (NotAuthenticated, InvalidToken, DatabaseUnavailable)
_USER_ERRORS = (*_KEY_ERRORS, UserNotFound)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

NamespacePath = Annotated[
    str, Path(max_length=NAMESPACE_MAX, description="The namespace; lowercased.", examples=["acme"])
]
UsernamePath = Annotated[str, Path(max_length=USERNAME_MAX, description="The username; lowercased.")]


def _names(namespace: str, username: str | None = None) -> tuple[str, str | None]:
    """The stored forms of the path's names, by the rules registration uses; InvalidInput for malformed ones."""
    try:
        return normalize_namespace(namespace), normalize_username(username) if username is not None else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _user_path(namespace: str, username: str) -> dict[str, str]:
    ns, name = _names(namespace, username)
    assert name is not None
    return {"namespace": ns, "username": name}


@router.get(
    "/namespaces/{namespace}/users",
    summary="A page of the namespace's users in order of creation",
    responses=responses(*_KEY_ERRORS, NamespaceNotFound, InvalidInput, validation=True),
)
def list_users(
    namespace: NamespacePath,
    key: CurrentAdminKey,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    after: Annotated[str | None, Query(max_length=512, description="The `next` of the previous page.")] = None,
    q: Annotated[str | None, Query(max_length=SEARCH_MAX, description="A username or email prefix.")] = None,
    active: Annotated[bool | None, Query(description="Only enabled (true) or disabled (false) accounts.")] = None,
) -> UserPage:
    ns, _name = _names(namespace)
    assert ns is not None
    return service.admin_list_users(key, ns, search=q or None, active=active, limit=limit, after=after)


@router.post(
    "/namespaces/{namespace}/users",
    status_code=status.HTTP_201_CREATED,
    summary="Create a user, with a password or a bcrypt password hash",
    responses=responses(*_KEY_ERRORS, NamespaceNotFound, UsernameTaken, EmailTaken, InvalidInput, validation=True),
)
def create_user(namespace: NamespacePath, body: AdminUserCreate, key: CurrentAdminKey, service: ServiceDep) -> Profile:
    ns, _name = _names(namespace)
    assert ns is not None
    return service.admin_create_user(key, ns, body)


@router.get(
    "/namespaces/{namespace}/users/{username}",
    summary="A user's profile and state",
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
def read_user(
    namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep
) -> UserDetail:
    return service.admin_user_detail(key, **_user_path(namespace, username))


@router.patch(
    "/namespaces/{namespace}/users/{username}",
    summary="Change a user (JSON Merge Patch; also is_active and email_verified)",
    responses=responses(*_USER_ERRORS, EmailTaken, InvalidInput, validation=True),
)
def update_user(
    namespace: NamespacePath, username: UsernamePath, body: AdminUserPatch, key: CurrentAdminKey, service: ServiceDep
) -> Profile:
    return service.admin_update_user(key, **_user_path(namespace, username), patch=body)


@router.delete(
    "/namespaces/{namespace}/users/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user with their sessions and avatar",
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
def delete_user(namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep) -> None:
    service.admin_delete_user(key, **_user_path(namespace, username))


@router.get(
    "/namespaces/{namespace}/users/{username}/sessions",
    summary="A user's live sessions, newest first",
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
def list_sessions(
    namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep
) -> list[AdminSessionInfo]:
    return service.admin_list_sessions(key, **_user_path(namespace, username))


@router.delete(
    "/namespaces/{namespace}/users/{username}/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End every session of a user; their tokens stop working at once",
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
def end_sessions(namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep) -> None:
    service.admin_end_sessions(key, **_user_path(namespace, username))


@router.delete(
    "/namespaces/{namespace}/users/{username}/mfa",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a user's second factor and recovery codes, and end every session of the user",
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
def reset_mfa(namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep) -> None:
    service.admin_reset_mfa(key, **_user_path(namespace, username))


async def _token(service: ServiceDep, key: CurrentAdminKey, namespace: str, username: str, kind: TokenKind) -> Response:
    names = _user_path(namespace, username)
    issued = await run_in_threadpool(lambda: service.admin_issue_token(key, kind=kind, **names))
    return Response(issued.model_dump_json(), media_type="application/json", headers=NO_STORE)


@router.post(
    "/namespaces/{namespace}/users/{username}/password-reset",
    summary="A one-time password-reset token for the app to deliver to the user",
    response_model=OneTimeTokenOut,
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
async def start_password_reset(
    namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep
) -> Response:
    return await _token(service, key, namespace, username, PASSWORD_RESET)


@router.post(
    "/namespaces/{namespace}/users/{username}/email-verification",
    summary="A one-time token verifying the user's current email, for the app to deliver to that address",
    response_model=OneTimeTokenOut,
    responses=responses(*_USER_ERRORS, InvalidInput, validation=True),
)
async def start_email_verification(
    namespace: NamespacePath, username: UsernamePath, key: CurrentAdminKey, service: ServiceDep
) -> Response:
    return await _token(service, key, namespace, username, EMAIL_VERIFICATION)
