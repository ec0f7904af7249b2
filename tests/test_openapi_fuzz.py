"""Schemathesis against the app's own OpenAPI schema: for every operation, generated requests (valid ones, and
invalid ones where the operation takes input) never get a 5xx, and every response is one the schema documents:
its status code, its content type and its body.

The schema is the one an app built by `create_app` with the test settings serves at /openapi.json. Authenticated
operations get the bearer token of a fresh login per request, so that one generated request (logout-all, a
password change) cannot turn every later one into a 401; the admin API's operations get a real admin key that
reaches every namespace. Generation is derandomized, so CI runs the same requests
every time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.conftest import PASSWORD, FakeClock, bearer, image_bytes, registration
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.service import UserService

NAMESPACE = "fuzz"
USERNAME = "fuzzer"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 25
ADMIN_USERS = "/admin/namespaces/{namespace}/users"
ADMIN_USER = ADMIN_USERS + "/{username}"
# Operations with input a request can get wrong: a body, or a path parameter narrower than any string.
WITH_INPUT = [
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/login/mfa"),
    ("POST", "/users/me/mfa/totp/confirm"),
    ("DELETE", "/users/me/mfa/totp"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("PATCH", "/users/me"),
    ("POST", "/users/me/avatar"),
    ("POST", "/users/me/password"),
    ("DELETE", "/users/me/sessions/{session_id}"),
    ("POST", "/auth/password-reset"),
    ("POST", "/auth/verify-email"),
    ("GET", ADMIN_USERS),
    ("POST", ADMIN_USERS),
    ("PATCH", ADMIN_USER),
]
WITHOUT_INPUT = [
    ("POST", "/auth/logout-all"),
    ("GET", "/users/me"),
    ("GET", "/users/me/sessions"),
    ("DELETE", "/users/me/avatar"),
    ("GET", "/uploads/{key}"),
    ("GET", "/health"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", ADMIN_USER),
    ("DELETE", ADMIN_USER),
    ("GET", ADMIN_USER + "/sessions"),
    ("DELETE", ADMIN_USER + "/sessions"),
    ("DELETE", ADMIN_USER + "/mfa"),
    ("POST", "/users/me/mfa/totp"),
    ("POST", ADMIN_USER + "/password-reset"),
    ("POST", ADMIN_USER + "/email-verification"),
]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for operations, modes in ((WITH_INPUT, list(GenerationMode)), (WITHOUT_INPUT, [GenerationMode.POSITIVE]))
    for method, path in operations
    for mode in modes
]


@pytest.fixture
def api_schema(app: FastAPI) -> Iterator[OpenApiSchema]:
    """The schema the test app serves, with that app as the transport; the fuzzing account exists."""
    service: UserService = app.state.service
    service.register(
        registration(namespace=NAMESPACE, username=USERNAME, password=PASSWORD, email="fuzzer@example.com")
    )
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # Schemathesis keeps the lifespan of every app it called running until told otherwise.
    shutdown_lifespans()


def any_string(parameter: dict[str, Any]) -> bool:
    return parameter["schema"].get("type") == "string" and "format" not in parameter["schema"]


def test_the_cases_cover_every_operation(api_schema: OpenApiSchema) -> None:
    """A new operation must be added to the fuzzed ones, in the right list."""
    operations = {}
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations[(operation.method.upper(), operation.path)] = operation.definition.raw

    assert sorted(operations) == sorted(WITH_INPUT + WITHOUT_INPUT)
    for key in WITH_INPUT:
        definition = operations[key]
        narrow = [parameter for parameter in definition.get("parameters", []) if not any_string(parameter)]
        assert "requestBody" in definition or narrow, key
    for key in WITHOUT_INPUT:
        assert "requestBody" not in operations[key], key
        assert all(any_string(parameter) for parameter in operations[key].get("parameters", [])), key


def requires_bearer(definition: dict[str, Any]) -> bool:
    return any("HTTPBearer" in requirement for requirement in definition.get("security", []))


def requires_admin_key(definition: dict[str, Any]) -> bool:
    return any("AdminKey" in requirement for requirement in definition.get("security", []))


def admin_key(service: UserService) -> dict[str, str]:
    """The header of a new admin key that reaches every namespace."""
    return bearer(service.create_admin_key(name=f"fuzz-{uuid.uuid4().hex[:12]}")[1])


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_responses_match_the_schema(
    api_schema: OpenApiSchema, app: FastAPI, method: str, path: str, mode: GenerationMode
) -> None:
    """No 5xx, and each response's status code, content type and body are documented for the operation."""
    operation = api_schema[path][method]
    service: UserService = app.state.service
    authenticated = requires_bearer(operation.definition.raw)
    admin = admin_key(service) if requires_admin_key(operation.definition.raw) else {}
    calls: list[int] = []

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case[Any]) -> None:
        if authenticated:
            pair = service.login(namespace=NAMESPACE, username=USERNAME, password=PASSWORD)
            case.headers.update(bearer(pair.access_token))
        case.headers.update(admin)
        response = case.call_and_validate(checks=CHECKS)
        calls.append(response.status_code)

    check()

    assert calls


def _login(service: UserService) -> dict[str, Any]:
    return {"body": {"namespace": NAMESPACE, "username": USERNAME, "password": PASSWORD}}


def _refresh(service: UserService) -> dict[str, Any]:
    pair = service.login(namespace=NAMESPACE, username=USERNAME, password=PASSWORD)
    return {"body": {"refresh_token": pair.refresh_token}}


def _logout(service: UserService) -> dict[str, Any]:
    pair = service.login(namespace=NAMESPACE, username=USERNAME, password=PASSWORD)
    return {"body": {"refresh_token": pair.refresh_token}}


def _avatar(service: UserService) -> dict[str, Any]:
    return {"body": {"file": image_bytes("PNG")}, "media_type": "multipart/form-data"}


def _password(service: UserService) -> dict[str, Any]:
    return {"body": {"current_password": PASSWORD, "new_password": "another fine passphrase"}}


def _end_session(service: UserService) -> dict[str, Any]:
    pair = service.login(namespace=NAMESPACE, username=USERNAME, password=PASSWORD)
    principal = service.authenticate(pair.access_token)
    return {"path_parameters": {"session_id": str(principal.session_id)}}


def _served_upload(service: UserService) -> dict[str, Any]:
    user = service.get_user(namespace=NAMESPACE, username=USERNAME)
    profile = service.set_avatar(user.id, image_bytes("PNG"))
    assert profile.avatar_url is not None
    return {"path_parameters": {"key": profile.avatar_url.rsplit("/", 1)[1]}}


def _fuzzer(service: UserService) -> dict[str, Any]:
    return {"path_parameters": {"namespace": NAMESPACE, "username": USERNAME}}


def _namespace(service: UserService) -> dict[str, Any]:
    return {"path_parameters": {"namespace": NAMESPACE}}


def _admin_create(service: UserService) -> dict[str, Any]:
    return {**_namespace(service), "body": {"username": "made-by-admin", "password": PASSWORD}}


def _admin_patch(service: UserService) -> dict[str, Any]:
    return {**_fuzzer(service), "body": {"full_name": "Fuzz", "email_verified": True}}


def _admin_delete(service: UserService) -> dict[str, Any]:
    service.register(registration(namespace=NAMESPACE, username="doomed", password=PASSWORD))
    return {"path_parameters": {"namespace": NAMESPACE, "username": "doomed"}}


def _one_time_token(service: UserService, kind: str) -> str:
    key = service.authenticate_admin(admin_key(service)["Authorization"].removeprefix("Bearer "))
    issued = service.admin_issue_token(key, namespace=NAMESPACE, username=USERNAME, kind=kind)  # type: ignore[arg-type]
    return issued.token


def _reset(service: UserService) -> dict[str, Any]:
    return {"body": {"token": _one_time_token(service, "password_reset"), "new_password": "reset fine passphrase"}}


def _verify(service: UserService) -> dict[str, Any]:
    return {"body": {"token": _one_time_token(service, "email_verification")}}


# Requests that random data almost never makes succeed: each is made once, so the success bodies are checked too.
SUCCESSES = {
    "login": ("POST", "/auth/login", 200, _login),
    "refresh": ("POST", "/auth/refresh", 200, _refresh),
    "logout": ("POST", "/auth/logout", 204, _logout),
    "avatar": ("POST", "/users/me/avatar", 200, _avatar),
    "password": ("POST", "/users/me/password", 200, _password),
    "end-session": ("DELETE", "/users/me/sessions/{session_id}", 204, _end_session),
    "served-upload": ("GET", "/uploads/{key}", 200, _served_upload),
    "password-reset": ("POST", "/auth/password-reset", 204, _reset),
    "verify-email": ("POST", "/auth/verify-email", 200, _verify),
    "admin-list": ("GET", ADMIN_USERS, 200, _namespace),
    "admin-create": ("POST", ADMIN_USERS, 201, _admin_create),
    "admin-read": ("GET", ADMIN_USER, 200, _fuzzer),
    "admin-patch": ("PATCH", ADMIN_USER, 200, _admin_patch),
    "admin-delete": ("DELETE", ADMIN_USER, 204, _admin_delete),
    "admin-sessions": ("GET", ADMIN_USER + "/sessions", 200, _fuzzer),
    "admin-end-sessions": ("DELETE", ADMIN_USER + "/sessions", 204, _fuzzer),
    "admin-reset": ("POST", ADMIN_USER + "/password-reset", 200, _fuzzer),
    "admin-verification": ("POST", ADMIN_USER + "/email-verification", 200, _fuzzer),
}


@pytest.mark.parametrize("name", list(SUCCESSES))
def test_successful_responses_match_the_schema(api_schema: OpenApiSchema, app: FastAPI, name: str) -> None:
    """The 2xx answers are documented as well: status code, content type and body."""
    method, path, status, build = SUCCESSES[name]
    service: UserService = app.state.service
    operation = api_schema[path][method]
    case = operation.Case(**build(service))
    if requires_bearer(operation.definition.raw):
        pair = service.login(namespace=NAMESPACE, username=USERNAME, password=PASSWORD)
        case.headers.update(bearer(pair.access_token))
    if requires_admin_key(operation.definition.raw):
        case.headers.update(admin_key(service))

    response = case.call_and_validate(checks=CHECKS)

    assert response.status_code == status, response.text


REQUEST_MAX_BYTES = 1024
JSON_BODIES = [
    (method, path)
    for method, path in WITH_INPUT
    if path not in ("/users/me/avatar", "/users/me/sessions/{session_id}") and (method, path) != ("GET", ADMIN_USERS)
]


@pytest.fixture
def small_body_schema(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[OpenApiSchema]:
    """The schema of an app with the smallest body limit, so that an oversized request stays small."""
    app = create_app(make_settings(request_max_bytes=REQUEST_MAX_BYTES), clock=clock)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()


@pytest.mark.parametrize(("method", "path"), JSON_BODIES, ids=[f"{method} {path}" for method, path in JSON_BODIES])
def test_an_oversized_body_matches_the_schema(small_body_schema: OpenApiSchema, method: str, path: str) -> None:
    """A body over REQUEST_MAX_BYTES (which generation never reaches) is refused with a documented 413."""
    operation = small_body_schema[path][method]
    names = {"namespace": NAMESPACE, "username": USERNAME}
    case = operation.Case(
        body={"padding": "x" * REQUEST_MAX_BYTES},
        media_type="application/json",
        path_parameters={name: value for name, value in names.items() if "{" + name + "}" in path},
    )

    response = case.call_and_validate(checks=CHECKS)

    assert response.status_code == 413, response.text
    assert response.json()["code"] == "request_too_large"
