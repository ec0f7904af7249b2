"""Races around the password check, with real threads and, where timing decides, bcrypt at its production cost.

ASVS 5.0 6.3.1 (brute force): guesses sent at once, to one instance or several, never get more checks than the
lockout allows. ASVS 5.0 7.4.3 (sessions end with the credentials): a login in flight with the old password never
leaves a working session after a password change, a reset or a disable has answered; a deletion in flight gives a
clean refusal, never a 500 or a false security alarm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt
import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, WRONG, FakeClock, TemplateDatabase, registration
from user_service import security
from user_service.config import Settings
from user_service.errors import (
    InvalidCredentials,
    InvalidToken,
    TokenExpired,
    TooManyAttempts,
    UserDisabled,
    UserServiceError,
)
from user_service.schemas import TokenPair
from user_service.service import Principal, UserService

PRODUCTION_COST = 12
NEW_PASSWORD = "velvet quartz harbor"
ATTACKER = "203.0.113.7"
OWNER = "198.51.100.20"
RACE_TIMEOUT_SECONDS = 120
BLOCK_TIMEOUT_SECONDS = 30


def outcome(call: Callable[[], Any]) -> str:
    """What a client would see: 'ok', or the error code."""
    try:
        call()
    except UserServiceError as error:
        return str(error.code)
    return "ok"


@pytest.fixture
def make_service(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[Callable[..., UserService]]:
    """Services on this test's database: each one is an instance of its own (its own pools), sharing the database."""
    opened: list[UserService] = []

    def build(**overrides: Any) -> UserService:
        opened.append(UserService(make_settings(**overrides), clock=clock))
        return opened[-1]

    yield build
    for service in opened:
        service.close()


def test_a_burst_of_wrong_guesses_across_two_instances_is_checked_no_more_than_the_limit(
    make_service: Callable[..., UserService], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attempts queue on the user's row lock: on a loaded machine the queue may outlast the default lock timeout.
    first = make_service(bcrypt_rounds=PRODUCTION_COST, db_lock_timeout_seconds=60)
    second = make_service(bcrypt_rounds=PRODUCTION_COST, db_lock_timeout_seconds=60)
    first.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    checks: list[str] = []
    original = security.check_password

    def counting(password: str, password_hash: str) -> bool:
        checks.append(password)
        return original(password, password_hash)

    monkeypatch.setattr(security, "check_password", counting)
    guesses = 30
    start = threading.Barrier(guesses)

    def guess(index: int) -> str:
        start.wait(timeout=RACE_TIMEOUT_SECONDS)
        service = first if index % 2 else second
        return outcome(
            lambda: service.login(namespace="app-x", username="alice", password=f"{WRONG} {index}", ip=ATTACKER)
        )

    with ThreadPoolExecutor(guesses) as pool:
        outcomes = list(pool.map(guess, range(guesses), timeout=RACE_TIMEOUT_SECONDS))

    assert len(checks) == 10
    assert sorted(outcomes) == ["invalid_credentials"] * 10 + ["too_many_attempts"] * 20
    with pytest.raises(TooManyAttempts):
        first.login(namespace="app-x", username="alice", password=PASSWORD, ip=ATTACKER)
    assert len(checks) == 10


@pytest.fixture
def service(make_service: Callable[..., UserService]) -> UserService:
    built = make_service(login_max_failures=3, login_account_max_failures=5)
    built.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    return built


def login_from(service: UserService, address: str | None, password: str = WRONG) -> str:
    return outcome(lambda: service.login(namespace="app-x", username="alice", password=password, ip=address))


def test_an_attacker_locks_only_their_own_address_out(service: UserService) -> None:
    assert [login_from(service, ATTACKER) for _ in range(4)] == ["invalid_credentials"] * 3 + ["too_many_attempts"]

    assert login_from(service, OWNER, PASSWORD) == "ok"
    assert login_from(service, ATTACKER, PASSWORD) == "too_many_attempts"


def test_the_account_locks_for_everyone_once_failures_from_all_addresses_reach_the_backstop(
    service: UserService, clock: FakeClock
) -> None:
    attackers = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]

    answers = [login_from(service, address) for address in attackers for _ in range(2)]

    assert answers == ["invalid_credentials"] * 5 + ["too_many_attempts"]
    assert login_from(service, OWNER, PASSWORD) == "too_many_attempts"
    clock.advance(service.settings.login_lockout_seconds)
    assert login_from(service, OWNER, PASSWORD) == "ok"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),
        ("192.0.2.10", "::ffff:192.0.2.10"),
        (None, ""),
    ],
    ids=["one-ipv6-64", "ipv4-mapped", "no-address"],
)
def test_forms_of_one_client_share_one_count(service: UserService, first: str | None, second: str | None) -> None:
    assert [login_from(service, first) for _ in range(2)] == ["invalid_credentials"] * 2

    assert login_from(service, second) == "invalid_credentials"
    assert login_from(service, first) == "too_many_attempts"
    assert login_from(service, "2001:db8:1:3::1") == "invalid_credentials"


def test_the_owners_correct_login_clears_only_their_own_count(service: UserService) -> None:
    assert [login_from(service, ATTACKER) for _ in range(2)] == ["invalid_credentials"] * 2
    assert login_from(service, OWNER) == "invalid_credentials"
    assert login_from(service, OWNER, PASSWORD) == "ok"

    assert login_from(service, ATTACKER) == "invalid_credentials"
    assert login_from(service, ATTACKER) == "too_many_attempts"


def test_an_operator_reset_lifts_every_lock(service: UserService) -> None:
    for _ in range(3):
        login_from(service, ATTACKER)
    assert login_from(service, ATTACKER, PASSWORD) == "too_many_attempts"

    service.reset_password(namespace="app-x", username="alice", new_password=NEW_PASSWORD)

    assert login_from(service, ATTACKER, NEW_PASSWORD) == "ok"


# -- a login in flight when the account changes ---------------------------------------------------------------------


class PausedCheck:
    """Holds the password check of threads named 'paused' until the test lets it go, after it has run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        original = security.check_password

        def check(password: str, password_hash: str) -> bool:
            result = original(password, password_hash)
            if threading.current_thread().name == "paused":
                self.reached.set()
                assert self.go.wait(BLOCK_TIMEOUT_SECONDS)
            return result

        monkeypatch.setattr(security, "check_password", check)

    def run(self, call: Callable[[], Any], meanwhile: Callable[[], Any]) -> str:
        """Start `call` in a paused thread; once its password check has passed, run `meanwhile`; then let it go."""
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(outcome(call)), name="paused", daemon=True)
        thread.start()
        assert self.reached.wait(BLOCK_TIMEOUT_SECONDS)
        meanwhile()
        self.go.set()
        thread.join(BLOCK_TIMEOUT_SECONDS)
        assert not thread.is_alive()
        return result[0]


def signed_in(service: UserService) -> Principal:
    pair = service.login(namespace="app-x", username="alice", password=PASSWORD, ip=OWNER)
    return service.authenticate(pair.access_token)


CHANGES: dict[str, Callable[[UserService], Any]] = {
    "password change": lambda service: service.change_password(
        signed_in(service), current_password=PASSWORD, new_password=NEW_PASSWORD
    ),
    "operator reset": lambda service: service.reset_password(
        namespace="app-x", username="alice", new_password=NEW_PASSWORD
    ),
    "disable": lambda service: service.set_active(namespace="app-x", username="alice", active=False),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_login_in_flight_loses_to_a_change_of_the_account(
    service: UserService, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    paused = PausedCheck(monkeypatch)
    pairs: list[TokenPair] = []

    def old_login() -> None:
        pairs.append(service.login(namespace="app-x", username="alice", password=PASSWORD, ip=ATTACKER))

    answer = paused.run(old_login, lambda: CHANGES[change](service))

    assert answer == "invalid_credentials"
    assert pairs == []


def test_logins_with_the_old_password_racing_a_change_keep_no_session(
    make_service: Callable[..., UserService],
) -> None:
    """Three clients log in with the old password while the owner changes it, at the production cost."""
    service = make_service(bcrypt_rounds=PRODUCTION_COST)
    service.register(registration(namespace="app-x", username="alice", password=PASSWORD))
    owner = signed_in(service)
    racers = 4
    start = threading.Barrier(racers)
    pairs: list[TokenPair] = []

    def race(index: int) -> str:
        start.wait(timeout=RACE_TIMEOUT_SECONDS)
        if index == 0:
            return outcome(lambda: service.change_password(owner, current_password=PASSWORD, new_password=NEW_PASSWORD))
        return outcome(
            lambda: pairs.append(
                service.login(namespace="app-x", username="alice", password=PASSWORD, ip=f"192.0.2.{index}")
            )
        )

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers), timeout=RACE_TIMEOUT_SECONDS))

    assert outcomes[0] == "ok"
    assert set(outcomes[1:]) <= {"ok", "invalid_credentials"}
    for pair in pairs:
        with pytest.raises(InvalidToken):
            service.authenticate(pair.access_token)
        with pytest.raises((InvalidToken, TokenExpired, UserDisabled)):
            service.refresh(pair.refresh_token)


# -- a deletion in flight -----------------------------------------------------------------------------------------


def delete_alice(service: UserService) -> None:
    service.delete_user(namespace="app-x", username="alice")


def test_a_login_in_flight_when_the_user_is_deleted_is_refused_cleanly(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = PausedCheck(monkeypatch)

    answer = paused.run(
        lambda: service.login(namespace="app-x", username="alice", password=PASSWORD, ip=OWNER),
        lambda: delete_alice(service),
    )

    assert answer == "invalid_credentials"


def test_a_password_change_in_flight_when_the_user_is_deleted_is_refused_cleanly(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = signed_in(service)
    paused = PausedCheck(monkeypatch)

    answer = paused.run(
        lambda: service.change_password(owner, current_password=PASSWORD, new_password=NEW_PASSWORD),
        lambda: delete_alice(service),
    )

    assert answer == "invalid_token"


def test_a_refresh_in_flight_when_the_user_is_deleted_raises_no_reuse_alarm(
    database: TemplateDatabase, service: UserService, caplog: pytest.LogCaptureFixture
) -> None:
    """On PostgreSQL the refresh reads its token, then waits on the token's row while the deletion commits; SQLite
    runs one writer at a time, so there the deletion simply lands first. Either way: a clean invalid_token."""
    pair = service.login(namespace="app-x", username="alice", password=PASSWORD, ip=OWNER)
    caplog.set_level(logging.INFO, logger="user_service.security")
    result: list[str] = []

    def refresh() -> None:
        result.append(outcome(lambda: service.refresh(pair.refresh_token)))

    if database.kind == "postgresql":
        with service.engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("DELETE FROM users WHERE username = 'alice'"))
            thread = threading.Thread(target=refresh)
            thread.start()
            deadline = time.monotonic() + BLOCK_TIMEOUT_SECONDS
            while time.monotonic() < deadline and not _waiting_on_a_lock(connection):
                time.sleep(0.01)
            assert _waiting_on_a_lock(connection)
            transaction.commit()
            thread.join(BLOCK_TIMEOUT_SECONDS)
    else:
        delete_alice(service)
        refresh()

    assert result == ["invalid_token"]
    assert "refresh_reuse" not in [record.getMessage() for record in caplog.records]


def _waiting_on_a_lock(connection: Any) -> bool:
    # Within a transaction PostgreSQL keeps showing the activity it read first: drop that snapshot each time.
    connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    waiting = connection.execute(
        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
    ).scalar_one()
    return bool(waiting)


def test_refused_logins_cost_the_same_bcrypt_work_and_writes(
    service: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASVS 5.0 6.3.8: an unknown account, a wrong password and an overlong one each cost one bcrypt check and one
    write transaction, so neither timing nor load tells them apart."""
    costs: list[str] = []
    original_check, original_write = bcrypt.checkpw, service.db.write

    def checkpw(password: bytes, hashed: bytes) -> bool:
        costs.append("bcrypt")
        return original_check(password, hashed)

    def write() -> Any:
        costs.append("write")
        return original_write()

    # The stand-in hash of unknown accounts is made once, at the first miss.
    assert outcome(lambda: service.login(namespace="app-x", username="nobody", password=WRONG)) == (
        "invalid_credentials"
    )
    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    monkeypatch.setattr(service.db, "write", write)
    spent = []
    for username, password in [("mallory", WRONG), ("alice", WRONG), ("mallory", "x" * 100), ("alice", "x" * 100)]:
        costs.clear()
        with pytest.raises(InvalidCredentials):
            service.login(namespace="app-x", username=username, password=password)
        spent.append(sorted(costs))

    assert spent == [["bcrypt", "write"]] * 4
