"""REFRESH_REUSE_INTERVAL_SECONDS (two tabs, a lost response), `expires_at` in token pairs, and the code a session
revoked for reuse answers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import Api, FakeClock, MakeApi
from tests.helpers import assert_refused
from user_service.errors import UserServiceError
from user_service.schemas import TokenPair
from user_service.service import UserService

INTERVAL = 10
RACERS = 8
RACE_TIMEOUT_SECONDS = 60


def open_sessions(service: UserService) -> int:
    with service.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NULL")).scalar_one())


def test_token_pairs_carry_an_absolute_expiry(api: Api, clock: FakeClock) -> None:
    login = api.tokens()
    clock.advance(30)
    fresh = api.refresh(login["refresh_token"]).json()

    for pair, issued in ((login, clock.now - timedelta(seconds=30)), (fresh, clock.now)):
        expires_at = datetime.fromisoformat(pair["expires_at"])
        assert expires_at.utcoffset() == timedelta(0)
        assert expires_at == issued + timedelta(seconds=pair["expires_in"])


def test_strict_by_default_a_second_presentation_revokes(api: Api) -> None:
    token = api.tokens()["refresh_token"]
    winner = api.refresh(token).json()

    assert_refused(api.refresh(token), 401, "refresh_token_reused")
    assert_refused(api.refresh(winner["refresh_token"]), 401, "session_revoked")


def test_within_the_interval_a_retry_gets_a_working_pair_in_the_same_session(
    make_api: MakeApi, service_of: Callable[[Api], UserService], clock: FakeClock
) -> None:
    api = make_api(refresh_reuse_interval_seconds=INTERVAL)
    token = api.tokens()["refresh_token"]
    lost = api.refresh(token).json()  # the response a dropped connection never delivered

    clock.advance(INTERVAL)
    retry = api.refresh(token)

    assert retry.status_code == 200, retry.text
    pair = retry.json()
    assert pair["refresh_token"] not in (token, lost["refresh_token"])
    assert api.me(pair["access_token"]).status_code == 200
    assert api.me(lost["access_token"]).status_code == 200
    assert open_sessions(service_of(api)) == 1
    # Both new refresh tokens keep working: the session was never ended.
    assert api.refresh(lost["refresh_token"]).status_code == 200
    assert api.refresh(pair["refresh_token"]).status_code == 200


def test_after_the_interval_it_is_reuse(
    make_api: MakeApi, service_of: Callable[[Api], UserService], clock: FakeClock
) -> None:
    api = make_api(refresh_reuse_interval_seconds=INTERVAL)
    token = api.tokens()["refresh_token"]
    winner = api.refresh(token).json()

    clock.advance(INTERVAL + 1)

    assert_refused(api.refresh(token), 401, "refresh_token_reused")
    assert_refused(api.refresh(winner["refresh_token"]), 401, "session_revoked")
    assert open_sessions(service_of(api)) == 0


def test_the_interval_never_revives_an_ended_session(make_api: MakeApi) -> None:
    api = make_api(refresh_reuse_interval_seconds=INTERVAL)
    token = api.tokens()["refresh_token"]
    api.refresh(token)
    api.client.post("/auth/logout", json={"refresh_token": token})

    assert_refused(api.refresh(token), 401, "invalid_token")


def test_the_security_events_tell_the_cases_apart(
    make_api: MakeApi, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(refresh_reuse_interval_seconds=INTERVAL)
    token = api.tokens()["refresh_token"]
    api.refresh(token)
    with caplog.at_level(logging.INFO, logger="user_service.security"):
        api.refresh(token)
        clock.advance(INTERVAL + 1)
        api.refresh(token)

    events = [record.getMessage() for record in caplog.records if record.name == "user_service.security"]
    assert events == ["refresh_reuse_allowed", "refresh_reuse"]
    levels = [record.levelno for record in caplog.records if record.name == "user_service.security"]
    assert levels == [logging.INFO, logging.WARNING]


def test_access_tokens_of_a_session_revoked_for_reuse_say_so(api: Api) -> None:
    first = api.tokens()
    api.refresh(first["refresh_token"])
    api.refresh(first["refresh_token"])

    response = api.me(first["access_token"])

    assert_refused(response, 401, "session_revoked")
    assert "session_revoked" in response.headers["WWW-Authenticate"]


def test_a_session_ended_by_logout_stays_invalid_token(api: Api) -> None:
    pair = api.tokens()
    api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert_refused(api.me(pair["access_token"]), 401, "invalid_token")
    assert_refused(api.refresh(pair["refresh_token"]), 401, "invalid_token")


@pytest.fixture
def service_of() -> Callable[[Api], UserService]:
    def get(api: Api) -> UserService:
        service: UserService = api.client.app.state.service  # type: ignore[attr-defined]
        return service

    return get


def test_concurrent_refreshes_within_the_interval_all_succeed_in_one_session(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(refresh_reuse_interval_seconds=INTERVAL)
    api = Api(client)
    service: UserService = client.app.state.service  # type: ignore[attr-defined]
    token = api.tokens()["refresh_token"]
    barrier = threading.Barrier(RACERS, timeout=RACE_TIMEOUT_SECONDS)

    def spend(_index: int) -> TokenPair:
        barrier.wait()
        return service.refresh(token)

    pairs: list[TokenPair] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        for future in [pool.submit(spend, index) for index in range(RACERS)]:
            error = future.exception(timeout=RACE_TIMEOUT_SECONDS)
            if error is None:
                pairs.append(future.result())
            else:
                errors.append(error)

    assert [repr(error) for error in errors if not isinstance(error, UserServiceError)] == []
    assert errors == []
    assert len({pair.refresh_token for pair in pairs}) == RACERS
    assert open_sessions(service) == 1
    for pair in pairs:
        assert api.me(pair.access_token).status_code == 200
