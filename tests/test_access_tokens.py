"""Access tokens on GET /users/me: claims, lifetime setting, malformed tokens and the account behind them.

Signatures, algorithms, expiry, type, issuer and audience are checked in tests/security/test_tokens.py.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, PROFILE_KEYS, START, Api, FakeClock, bearer
from tests.helpers import assert_unauthorized, claims_of, forge
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.service import UserService

ACCESS_TTL = 900
REQUIRED = ("sub", "ns", "username", "type", "iat", "exp", "jti")


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """HS256, whose tokens these tests forge by hand: the claim checks they prove are the same for every algorithm
    (tests/security/test_signing_keys.py proves them for the key store's algorithms)."""
    return functools.partial(make_settings, jwt_algorithm="HS256")


def test_me_with_an_access_token(api: Api, service: UserService) -> None:
    created = api.register(email="alice@example.com").json()
    token = api.login().json()["access_token"]

    response = api.me(token)

    assert response.status_code == 200, response.text
    assert response.json() == created
    assert set(response.json()) == PROFILE_KEYS
    assert "$2b$" not in response.text
    assert PASSWORD not in response.text


def test_me_with_a_refreshed_access_token(api: Api) -> None:
    pair = api.tokens()
    fresh = api.refresh(pair["refresh_token"]).json()

    assert api.me(fresh["access_token"]).json()["username"] == "alice"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ=="},
        {"Authorization": "Token abc.def.ghi"},
        {"Authorization": "Digest username=alice"},
    ],
    ids=["no-header", "empty", "bearer-without-token", "basic", "token-scheme", "digest"],
)
def test_not_authenticated(api: Api, headers: dict[str, str]) -> None:
    api.tokens()

    response = api.client.get("/users/me", headers=headers)

    assert_unauthorized(response, "not_authenticated")


def test_access_token_without_a_scheme_is_not_authenticated(api: Api) -> None:
    token = api.tokens()["access_token"]

    response = api.client.get("/users/me", headers={"Authorization": token})

    assert_unauthorized(response, "not_authenticated")


def test_hand_signed_copy_of_a_real_token_is_accepted(api: Api) -> None:
    """The forging helper produces tokens the service accepts, so the refusals below are about what they change."""
    claims = claims_of(api.tokens()["access_token"])

    response = api.me(forge({**claims, "jti": uuid.uuid4().hex}))

    assert response.status_code == 200, response.text


def _without(name: str) -> Callable[[dict[str, Any], str], str]:
    return lambda claims, _token: forge({key: value for key, value in claims.items() if key != name})


def _with(**changes: Any) -> Callable[[dict[str, Any], str], str]:
    return lambda claims, _token: forge({**claims, **changes})


BAD_TOKENS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "garbage": lambda _claims, _token: "garbage",
    "three-garbage-parts": lambda _claims, _token: "abc.def.ghi",
    "two-parts": lambda _claims, token: token.rsplit(".", 1)[0],
    **{f"missing-{name}": _without(name) for name in REQUIRED},
    "sub-not-a-uuid": _with(sub="alice"),
    "sub-of-nobody": _with(sub=str(uuid.UUID(int=1))),
    "other-namespace": _with(ns="app-y"),
    "exp-as-string": _with(exp="9999999999"),
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_invalid_token(api: Api, make_token: Callable[[dict[str, Any], str], str]) -> None:
    token = api.tokens()["access_token"]

    response = api.me(make_token(claims_of(token), token))

    assert_unauthorized(response, "invalid_token")


def test_claims(api: Api) -> None:
    profile = api.register().json()
    pair = api.login().json()

    claims = claims_of(pair["access_token"])

    assert claims["sub"] == profile["id"]
    assert claims["ns"] == "app-x"
    assert claims["username"] == "alice"
    assert claims["type"] == "access"
    assert claims["iat"] == int(START.timestamp())
    assert claims["exp"] - claims["iat"] == ACCESS_TTL == pair["expires_in"]
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims_of(api.login().json()["access_token"])["jti"] != claims["jti"]
    header = json.loads(base64.urlsafe_b64decode(pair["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "HS256"


def test_access_ttl_is_configurable(make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    with TestClient(create_app(make_settings(access_token_ttl_seconds=60), clock=clock)) as client:
        api = Api(client)
        pair = api.tokens()
        claims = claims_of(pair["access_token"])
        assert pair["expires_in"] == 60
        assert claims["exp"] - claims["iat"] == 60
        clock.advance(59)
        assert api.me(pair["access_token"]).status_code == 200
        clock.advance(1)
        assert_unauthorized(api.me(pair["access_token"]), "token_expired")


def test_disabled_user_token_stops_working_at_once(api: Api, service: UserService) -> None:
    token = api.tokens()["access_token"]
    assert api.me(token).status_code == 200

    service.set_active(namespace="app-x", username="alice", active=False)

    response = api.me(token)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "user_disabled"
    patch = api.client.patch("/users/me", json={"full_name": "Mallory"}, headers=bearer(token))
    assert patch.status_code == 403


def test_deleted_user_token_is_invalid(api: Api, service: UserService) -> None:
    token = api.tokens()["access_token"]

    service.delete_user(namespace="app-x", username="alice")

    assert_unauthorized(api.me(token), "invalid_token")


def test_token_of_a_deleted_then_recreated_user_is_invalid(api: Api, service: UserService) -> None:
    token = api.tokens()["access_token"]
    service.delete_user(namespace="app-x", username="alice")
    assert api.register().status_code == 201

    assert_unauthorized(api.me(token), "invalid_token")
