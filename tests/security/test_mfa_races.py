"""Races of the second factor, with real threads through the app: two confirmations of one enrolment, and two second
steps with one mfa_token and a valid code. Exactly one wins each time; the other gets a stable code and the account
is as the winner left it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyotp

from tests.conftest import Api, FakeClock, bearer
from tests.helpers import service_of

RACERS = 2
TIMEOUT_SECONDS = 60


def race(call: Callable[[], Any]) -> list[Any]:
    """`call` run by RACERS threads released at once; their responses."""
    start = threading.Barrier(RACERS)

    def run(_index: int) -> Any:
        start.wait(timeout=TIMEOUT_SECONDS)
        return call()

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(run, range(RACERS), timeout=TIMEOUT_SECONDS))


def test_two_confirmations_racing_one_wins_and_the_other_is_a_conflict(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]
    secret = api.client.post("/users/me/mfa/totp", headers=bearer(token)).json()["secret"]
    code = pyotp.TOTP(secret).at(clock.now)

    responses = race(lambda: api.client.post("/users/me/mfa/totp/confirm", json={"code": code}, headers=bearer(token)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 409], [response.text for response in responses]
    loser = next(response for response in responses if response.status_code == 409)
    assert loser.json()["code"] == "mfa_already_enabled"
    winner = next(response for response in responses if response.status_code == 200)
    recovery = winner.json()["recovery_codes"]
    with service_of(api).engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT count(*) FROM mfa_recovery_codes").scalar()
    assert stored == 10
    mfa_token = api.login().json()["mfa_token"]
    second = api.client.post("/auth/login/mfa", json={"mfa_token": mfa_token, "code": recovery[0]})
    assert second.status_code == 200, second.text


def test_two_second_steps_racing_with_one_mfa_token_give_one_token_pair(api: Api, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]
    secret = api.client.post("/users/me/mfa/totp", headers=bearer(token)).json()["secret"]
    confirmed = api.client.post(
        "/users/me/mfa/totp/confirm", json={"code": pyotp.TOTP(secret).at(clock.now)}, headers=bearer(token)
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(30)
    mfa_token = api.login().json()["mfa_token"]
    code = pyotp.TOTP(secret).at(clock.now)
    sessions_before = service_of(api).user_detail(namespace="app-x", username="alice").live_sessions

    responses = race(lambda: api.client.post("/auth/login/mfa", json={"mfa_token": mfa_token, "code": code}))

    winners = [response for response in responses if response.status_code == 200]
    losers = [response for response in responses if response.status_code != 200]
    assert len(winners) == 1, [response.text for response in responses]
    assert [(response.status_code, response.json()["code"]) for response in losers] in (
        [(401, "mfa_token_invalid")],
        [(401, "mfa_code_reused")],
    )
    assert "access_token" not in losers[0].text
    assert service_of(api).user_detail(namespace="app-x", username="alice").live_sessions == sessions_before + 1
