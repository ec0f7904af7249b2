"""Limits on what one request may cost (ASVS 5.0 4.1/15.2 family): body size, key counts, the size of error
answers, and the per-address limit on logout."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import FakeClock
from user_service.api.app import create_app
from user_service.api.middleware import MAX_OBJECT_KEYS
from user_service.config import Settings
from user_service.schemas import LoginRequest, LogoutRequest, PasswordChangeRequest, ProfilePatch, RegisterRequest
from user_service.validation import EXTRA_MAX_KEYS, EXTRA_VALUE_MAX, MAX_PROBLEMS

REQUEST_MODELS = [RegisterRequest, LoginRequest, LogoutRequest, PasswordChangeRequest, ProfilePatch]


def unknown_keys(count: int) -> bytes:
    return json.dumps({f"unknown-{index:07d}": index for index in range(count)}).encode()


def test_a_megabyte_of_unknown_keys_is_refused_before_validation(client: TestClient) -> None:
    """ASVS 5.0 2.4.1 (anti-automation, excessive calls): a 1 MB body of unknown keys to the unlimited logout
    route is refused by size, never answered with a multi-megabyte list of problems."""
    body = unknown_keys(40_000)
    assert len(body) > 1_000_000

    response = client.post("/auth/logout", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 413, response.text[:200]
    assert response.json()["code"] == "request_too_large"
    assert len(response.content) < 1000


def test_the_default_body_limit_fits_the_largest_real_request(make_settings: Callable[..., Settings]) -> None:
    """A profile patch with every `extra` key at its longest fits under the default REQUEST_MAX_BYTES, with room
    for JSON escapes, and the default is far below the old 1 MiB."""
    largest = {
        "email": "a" * 300 + "@example.com",
        "full_name": "n" * 200,
        "avatar_url": "https://example.com/" + "a" * 2000,
        "extra": {f"{index:064d}": "v" * EXTRA_VALUE_MAX for index in range(2 * EXTRA_MAX_KEYS)},
    }
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert len(json.dumps(largest).encode()) < settings.request_max_bytes <= 256 * 1024


def test_an_object_with_more_keys_than_any_model_is_refused_cheaply(client: TestClient) -> None:
    """ASVS 5.0 2.4.1: a body under the size limit holding an object with more keys than any request model has
    gets one short 422 with a stable code, before field validation."""
    response = client.post("/auth/logout", content=unknown_keys(MAX_OBJECT_KEYS + 1))

    assert response.status_code == 422, response.text[:200]
    assert response.json()["code"] == "too_many_keys"
    assert len(response.content) < 1000


def test_a_nested_object_with_too_many_keys_is_refused(client: TestClient) -> None:
    body = {"namespace": "app-x", "username": "alice", "password": "x" * 10}
    body["extra"] = {f"k{index}": "v" for index in range(MAX_OBJECT_KEYS + 1)}  # type: ignore[assignment]

    response = client.post("/auth/register", json=body)

    assert response.status_code == 422, response.text[:200]
    assert response.json()["code"] == "too_many_keys"


def test_no_request_model_takes_more_keys_than_the_limit() -> None:
    """The key limit refuses nothing a real request sends: every model, and the largest `extra` patch, fit."""
    assert all(len(model.model_fields) <= MAX_OBJECT_KEYS for model in REQUEST_MODELS)
    assert 2 * EXTRA_MAX_KEYS <= MAX_OBJECT_KEYS


def test_validation_errors_are_bounded_with_a_count(client: TestClient) -> None:
    """ASVS 5.0 16.5.1 (errors reveal little and cost little): a body with many problems gets the first few and a
    count of all."""
    problems = MAX_OBJECT_KEYS - 1
    body = {f"unknown-{index}": index for index in range(problems)}

    response = client.post("/auth/logout", json=body)

    assert response.status_code == 422, response.text[:200]
    answer = response.json()
    assert len(answer["detail"]) == MAX_PROBLEMS
    # Every unknown key (a missing refresh token is the route's to refuse: cookie mode takes the cookie's).
    assert answer["count"] == problems
    assert all(set(issue) == {"loc", "msg", "type"} for issue in answer["detail"])


def test_a_few_validation_errors_are_all_listed(client: TestClient) -> None:
    response = client.post("/auth/logout", json={"other": 1, "refresh_token": 2})

    assert response.status_code == 422, response.text
    assert response.json()["count"] == len(response.json()["detail"]) == 2


def test_a_valid_json_body_still_reaches_the_route(client: TestClient) -> None:
    response = client.post("/auth/logout", json={"refresh_token": "not-a-refresh-token"})

    assert response.status_code == 204, response.text


def test_a_body_streamed_without_a_length_is_still_limited(client: TestClient) -> None:
    chunks = [b'{"refresh_token": "', b"x" * 200_000, b"x" * 200_000, b'"}']

    response = client.post("/auth/logout", content=iter(chunks), headers={"Content-Type": "application/json"})

    assert response.status_code == 413, response.text[:200]
    assert response.json()["code"] == "request_too_large"


@pytest.fixture
def limited_app(make_settings: Callable[..., Settings], clock: FakeClock) -> FastAPI:
    return create_app(make_settings(rate_limit_enabled=True, rate_limit="3/minute"), clock=clock)


def test_logout_is_rate_limited_per_address(limited_app: FastAPI) -> None:
    """ASVS 5.0 2.4.1: logout, which takes any refresh token, is counted per client address like login."""
    address = f"127.0.{uuid.uuid4().int % 250}.9"
    with ExitStack() as stack:
        client = stack.enter_context(TestClient(limited_app, client=(address, 50000)))
        other = stack.enter_context(TestClient(limited_app, client=("127.0.255.1", 50000)))
        body: dict[str, Any] = {"refresh_token": "not-a-refresh-token"}
        for _ in range(3):
            assert client.post("/auth/logout", json=body).status_code == 204
        refused = client.post("/auth/logout", json=body)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited"
        assert other.post("/auth/logout", json=body).status_code == 204
