"""Every duration and count setting has an upper bound: values beyond it are refused when the settings are read
(and `serve` refuses to start, in one line), and values at it work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest
from pydantic import ValidationError

from tests.conftest import Cli, FakeClock, MakeApi
from user_service.cli import _server
from user_service.config import Settings

TEN_YEARS = 10 * 365 * 86_400
ONE_YEAR = 365 * 86_400
ONE_DAY = 86_400

# Each setting with the largest value accepted.
BOUNDS = {
    "ACCESS_TOKEN_TTL_SECONDS": ONE_DAY,
    "REFRESH_TOKEN_TTL_SECONDS": TEN_YEARS,
    "SESSION_MAX_LIFETIME_SECONDS": TEN_YEARS,
    "LOGIN_LOCKOUT_SECONDS": ONE_DAY,
    "LOGIN_LOCKOUT_MAX_SECONDS": ONE_YEAR,
    "LOGIN_MAX_FAILURES": 100,
    "DB_POOL_SIZE": 1000,
    "DB_MAX_OVERFLOW": 1000,
    "DB_POOL_TIMEOUT_SECONDS": 300,
    "DB_POOL_RECYCLE_SECONDS": ONE_DAY,
    "DB_CONNECT_TIMEOUT_SECONDS": 300,
    "DB_LOCK_TIMEOUT_SECONDS": 300,
    "DB_STATEMENT_TIMEOUT_SECONDS": 3600,
    "DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": 3600,
    "BCRYPT_ROUNDS": 20,
    "PASSWORD_MIN_LENGTH": 72,
    "AVATAR_MAX_BYTES": 64 * 1024 * 1024,
    "AVATAR_MAX_PIXELS": 200_000_000,
    "REQUEST_MAX_BYTES": 64 * 1024 * 1024,
}


def test_every_numeric_setting_has_an_upper_bound() -> None:
    unbounded = [
        name
        for name, field in Settings.model_fields.items()
        if field.annotation in (int, float)
        and not any(getattr(rule, "le", None) is not None for rule in field.metadata)
    ]

    assert unbounded == []


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_a_value_beyond_the_bound_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every setting at its bound is accepted together (the lock cap at its bound covers the first lock's).
    for each, bound in BOUNDS.items():
        monkeypatch.setenv(each, str(bound))
    assert Settings(_env_file=None)  # type: ignore[call-arg]

    monkeypatch.setenv(name, str(BOUNDS[name] + 1))
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(_server, "run_server", lambda settings, **options: calls.append(options))
    with patch.dict(os.environ):
        yield calls


@pytest.mark.parametrize(
    ("name", "value"),
    [("SESSION_MAX_LIFETIME_SECONDS", "999999999999"), ("LOGIN_LOCKOUT_SECONDS", "99999999999999")],
)
def test_serve_refuses_an_out_of_range_duration_in_one_line(
    cli: Cli, uvicorn_calls: list[dict[str, Any]], name: str, value: str
) -> None:
    cli.env[name] = value

    result = cli("serve")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert name in message
    assert "\n" not in message
    assert value not in message
    assert uvicorn_calls == []


def test_sessions_at_the_longest_lifetimes_log_in_and_refresh(make_api: MakeApi) -> None:
    api = make_api(session_max_lifetime_seconds=TEN_YEARS, refresh_token_ttl_seconds=TEN_YEARS)

    pair = api.tokens()

    assert api.me(pair["access_token"]).status_code == 200
    assert api.refresh(pair["refresh_token"]).status_code == 200


def test_the_longest_lock_engages(make_api: MakeApi, clock: FakeClock) -> None:
    api = make_api(login_max_failures=1, login_lockout_seconds=ONE_DAY, login_lockout_max_seconds=ONE_YEAR)
    api.tokens()

    assert api.login(password="not the password").status_code == 401
    locked = api.login()

    assert locked.status_code == 429, locked.text
    assert locked.json()["code"] == "too_many_attempts"
    clock.advance(ONE_DAY - 1)
    assert api.login().status_code == 429
    clock.advance(1)
    assert api.login().status_code == 200
