"""POST /auth/refresh: rotation, expiry, hashed storage and races.

Reuse detection and token types are checked in tests/security/test_tokens.py.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import Api, FakeClock
from tests.helpers import assert_refused
from user_service.api.app import create_app
from user_service.config import Settings
from user_service.errors import UserServiceError
from user_service.schemas import TokenPair
from user_service.service import UserService

REFRESH_TTL = 2_592_000
RACERS = 8
RACE_TIMEOUT_SECONDS = 60


def stored_digests(service: UserService) -> list[str]:
    with service.engine.connect() as connection:
        return [str(value) for value in connection.execute(text("SELECT token_hash FROM refresh_tokens")).scalars()]


def test_refresh_returns_a_new_pair(api: Api) -> None:
    pair = api.tokens()

    response = api.refresh(pair["refresh_token"])

    assert response.status_code == 200, response.text
    fresh = response.json()
    assert set(fresh) == {"access_token", "refresh_token", "token_type", "expires_in", "expires_at"}
    assert fresh["token_type"] == "bearer"
    assert fresh["expires_in"] == 900
    assert fresh["access_token"] != pair["access_token"]
    assert fresh["refresh_token"] != pair["refresh_token"]
    assert response.headers["Cache-Control"] == "no-store"
    assert api.me(fresh["access_token"]).json()["username"] == "alice"


def test_a_chain_of_refreshes(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["refresh_token"]
    seen = {token}

    for _ in range(5):
        clock.advance(60)
        response = api.refresh(token)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
        assert token not in seen
        seen.add(token)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "x" * 43,
        "",
        "eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",
        "é" * 200,
    ],
    ids=["word", "token-shaped", "empty", "jwt", "non-ascii"],
)
def test_unknown_refresh_token(api: Api, token: str) -> None:
    api.tokens()

    response = api.refresh(token)

    assert_refused(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_refresh_token_with_a_lone_surrogate_is_refused_without_a_server_error(api: Api) -> None:
    response = api.client.post(
        "/auth/refresh", content=b'{"refresh_token": "\\ud800"}', headers={"Content-Type": "application/json"}
    )

    assert_refused(response, 401, "invalid_token")


@pytest.mark.parametrize("body", [{}, {"refresh_token": None}, {"refresh_token": 1}, {"token": "x"}, ["x"]])
def test_malformed_refresh_body_is_422(api: Api, body: Any) -> None:
    response = api.client.post("/auth/refresh", json=body)

    assert response.status_code == 422, response.text


def test_refresh_token_expires(api: Api, clock: FakeClock) -> None:
    pair = api.tokens()

    clock.advance(REFRESH_TTL)

    assert_refused(api.refresh(pair["refresh_token"]), 401, "token_expired")


def test_refresh_token_is_good_until_its_ttl(api: Api, clock: FakeClock) -> None:
    pair = api.tokens()

    clock.advance(REFRESH_TTL - 1)
    response = api.refresh(pair["refresh_token"])

    assert response.status_code == 200, response.text
    clock.advance(REFRESH_TTL - 1)
    assert api.refresh(response.json()["refresh_token"]).status_code == 200


def test_refresh_ttl_is_configurable(make_settings: Callable[..., Settings], clock: FakeClock) -> None:
    with TestClient(create_app(make_settings(refresh_token_ttl_seconds=3600), clock=clock)) as client:
        api = Api(client)
        pair = api.tokens()
        clock.advance(3599)
        fresh = api.refresh(pair["refresh_token"])
        assert fresh.status_code == 200, fresh.text
        clock.advance(3600)
        assert_refused(api.refresh(fresh.json()["refresh_token"]), 401, "token_expired")


def test_only_digests_are_stored(api: Api, service: UserService) -> None:
    first = api.tokens()["refresh_token"]
    second = api.refresh(first).json()["refresh_token"]

    digests = stored_digests(service)

    assert len(digests) == 2
    for token in (first, second):
        assert token not in digests
        assert not any(token in digest for digest in digests)
        assert hashlib.sha256(token.encode()).hexdigest() in digests


@pytest.mark.usefixtures("client")
def test_concurrent_refreshes_with_one_token(api: Api, service: UserService) -> None:
    token = api.tokens()["refresh_token"]
    barrier = threading.Barrier(RACERS, timeout=RACE_TIMEOUT_SECONDS)

    def spend(_index: int) -> TokenPair:
        barrier.wait()
        return service.refresh(token)

    successes: list[TokenPair] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        for future in [pool.submit(spend, index) for index in range(RACERS)]:
            error = future.exception(timeout=RACE_TIMEOUT_SECONDS)
            if error is None:
                successes.append(future.result())
            else:
                errors.append(error)

    assert len(successes) == 1
    assert len(errors) == RACERS - 1
    for error in errors:
        assert isinstance(error, UserServiceError), repr(error)
        assert error.status == 401
        # Every loser presented a token already spent (the claim is one atomic statement), whatever it read first.
        assert error.code == "refresh_token_reused"
    # A spent token presented again ends its session: the winner's new pair dies with it.
    (winner,) = successes
    assert_refused(api.refresh(winner.refresh_token), 401, "session_revoked")
    assert_refused(api.me(winner.access_token), 401, "session_revoked")
    with service.engine.connect() as connection:
        ended = connection.execute(text("SELECT revoked_at IS NOT NULL FROM auth_sessions")).scalars().all()
    assert ended == [True]


def test_disabled_user_cannot_refresh(api: Api, service: UserService) -> None:
    pair = api.tokens()
    service.set_active(namespace="app-x", username="alice", active=False)

    assert_refused(api.refresh(pair["refresh_token"]), 403, "user_disabled")

    service.set_active(namespace="app-x", username="alice", active=True)
    # Disabling ended the session (ASVS 5.0 7.4.2); enabling again does not revive it.
    assert_refused(api.refresh(pair["refresh_token"]), 401, "invalid_token")


def test_deleted_user_cannot_refresh(api: Api, service: UserService) -> None:
    pair = api.tokens()
    service.delete_user(namespace="app-x", username="alice")

    assert_refused(api.refresh(pair["refresh_token"]), 401, "invalid_token")
    assert stored_digests(service) == []
