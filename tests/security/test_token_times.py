"""Access tokens whose times the service would never write: issued in the future, or living longer than the longest
token the service issues, are refused as invalid_token even with a valid signature."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.conftest import START, TEST_SECRET, Api, bearer
from user_service import security
from user_service.config import Settings
from user_service.errors import InvalidToken

LEEWAY = 30
LONGEST = 86_400


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """HS256, whose tokens these tests forge by hand: the claim checks they prove are the same for every algorithm
    (tests/security/test_signing_keys.py proves them for the key store's algorithms)."""
    return functools.partial(make_settings, jwt_algorithm="HS256")


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def me_with(api: Api, **changes: int) -> Any:
    claims = claims_of(api.tokens()["access_token"])
    return api.client.get("/users/me", headers=bearer(signed({**claims, **changes})))


@pytest.mark.parametrize(("ahead", "status"), [(LEEWAY + 1, 401), (3600, 401), (LEEWAY, 200), (5, 200)])
def test_a_token_issued_in_the_future_is_refused_beyond_the_leeway(api: Api, ahead: int, status: int) -> None:
    now = int(START.timestamp())

    response = me_with(api, iat=now + ahead, exp=now + ahead + 900)

    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["code"] == "invalid_token"


@pytest.mark.parametrize(
    ("lifetime", "status"),
    [(LONGEST + LEEWAY + 1, 401), (10 * 365 * 86_400, 401), (LONGEST + LEEWAY, 200), (LONGEST, 200)],
)
def test_a_token_living_longer_than_any_the_service_issues_is_refused(api: Api, lifetime: int, status: int) -> None:
    now = int(START.timestamp())

    response = me_with(api, iat=now, exp=now + lifetime)

    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["code"] == "invalid_token"


def test_a_token_expiring_before_it_was_issued_is_refused(api: Api) -> None:
    now = int(START.timestamp())

    response = me_with(api, iat=now + 10, exp=now + 5)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_the_longest_lifetime_is_the_callers_to_choose(api: Api) -> None:
    token = api.tokens()["access_token"]
    claims = claims_of(token)
    options: dict[str, Any] = {
        "key": TEST_SECRET,
        "algorithm": "HS256",
        "issuer": "user-service",
        "audience": "user-service",
        "now": START,
    }

    assert security.decode_access_token(token, **options, max_lifetime_seconds=900).issued_at == claims["iat"]
    with pytest.raises(InvalidToken):
        security.decode_access_token(token, **options, max_lifetime_seconds=900 - LEEWAY - 1)
