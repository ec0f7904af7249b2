"""Schemathesis against the app's own OpenAPI schema: for every operation, generated requests (valid ones, and
invalid ones where the operation takes input) never get a 5xx, and every response is one the schema documents:
its status code, its content type and its body.

The schema is the one an app built by `create_app` with the test settings serves at /openapi.json. Authenticated
operations get the bearer token of a fresh login per request, so that one generated request (logout-all, a
password change) cannot turn every later one into a 401. Generation is derandomized, so CI runs the same requests
every time.
"""

from __future__ import annotations

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
# Operations with input a request can get wrong: a body, or a path parameter narrower than any string.
WITH_INPUT = [
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("PATCH", "/users/me"),
    ("POST", "/users/me/avatar"),
    ("POST", "/users/me/password"),
    ("DELETE", "/users/me/sessions/{session_id}"),
]
WITHOUT_INPUT = [
    ("POST", "/auth/logout-all"),
    ("GET", "/users/me"),
    ("GET", "/users/me/sessions"),
    ("DELETE", "/users/me/avatar"),
    ("GET", "/uploads/{key}"),
    ("GET", "/health"),
    ("GET", "/.well-known/jwks.json"),
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
    service.register(registration(namespace=NAMESPACE, username=USERNAME, password=PASSWORD))
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


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_responses_match_the_schema(
    api_schema: OpenApiSchema, app: FastAPI, method: str, path: str, mode: GenerationMode
) -> None:
    """No 5xx, and each response's status code, content type and body are documented for the operation."""
    operation = api_schema[path][method]
    service: UserService = app.state.service
    authenticated = requires_bearer(operation.definition.raw)
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


# Requests that random data almost never makes succeed: each is made once, so the success bodies are checked too.
SUCCESSES = {
    "login": ("POST", "/auth/login", 200, _login),
    "refresh": ("POST", "/auth/refresh", 200, _refresh),
    "logout": ("POST", "/auth/logout", 204, _logout),
    "avatar": ("POST", "/users/me/avatar", 200, _avatar),
    "password": ("POST", "/users/me/password", 200, _password),
    "end-session": ("DELETE", "/users/me/sessions/{session_id}", 204, _end_session),
    "served-upload": ("GET", "/uploads/{key}", 200, _served_upload),
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

    response = case.call_and_validate(checks=CHECKS)

    assert response.status_code == status, response.text


REQUEST_MAX_BYTES = 1024
JSON_BODIES = [
    (method, path) for method, path in WITH_INPUT if path not in ("/users/me/avatar", "/users/me/sessions/{session_id}")
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
    case = operation.Case(body={"padding": "x" * REQUEST_MAX_BYTES}, media_type="application/json")

    response = case.call_and_validate(checks=CHECKS)

    assert response.status_code == 413, response.text
    assert response.json()["code"] == "request_too_large"
