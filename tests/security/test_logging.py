"""Security events are logged as one structured line each, naming who and where (ASVS 5.0 16.2.1, 16.3.1), and no
log line ever holds a password, a token or a hash (ASVS 5.0 16.2.5; 4.0.3 7.1.1 and 7.1.2).

Every event is checked field by field on the "user_service.security" logger's record, and through the formatter
that LOG_FORMAT selects for `serve`: one JSON object a line, or one text line.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, TEST_SECRET, Api, FakeClock, MakeApi, bearer
from tests.helpers import service_of
from user_service.events import JsonFormatter, TextFormatter, logging_config
from user_service.service import UserService

SECURITY_LOGGER = "user_service.security"
PEER = "198.51.100.23"
PROXY = "10.0.0.5"
FORWARDED_CLIENT = "203.0.113.77"
WRONG_PASSWORD = "not the password at all"
NEW_PASSWORD = "a brand new passphrase"
RESET_PASSWORD = "an operator chose this one"
MAX_FAILURES = 3
LOCKOUT_SECONDS = 30
# Attributes every LogRecord has; anything else on a record is a field the event added.
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
JSON_ENVELOPE = {"time", "level", "logger", "message"}


@pytest.fixture
def make_api(make_api: MakeApi) -> MakeApi:
    """The shared make_api, its requests coming from PEER unless a test names another peer."""
    return functools.partial(make_api, peer=PEER)


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    """The default Api, its requests coming from PEER so that the logged address is a known one."""
    return make_api()


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=SECURITY_LOGGER)
    return caplog


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The security events logged since the last call, which forgets them."""
    records = [record for record in caplog.records if record.name == SECURITY_LOGGER]
    caplog.clear()
    return records


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in STANDARD_ATTRIBUTES}


def assert_event(record: logging.LogRecord, event: str, level: int, **expected: object) -> None:
    """The record is `event` at `level` with exactly these fields (as strings), and renders as one JSON line
    holding the same fields and one text line."""
    wanted = {"event": event, **{key: str(value) for key, value in expected.items()}}
    assert record.name == SECURITY_LOGGER
    assert record.getMessage() == event
    assert record.levelno == level, logging.getLevelName(record.levelno)
    assert fields_of(record) == wanted
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = json.loads(line)
    assert {key: value for key, value in body.items() if key not in JSON_ENVELOPE} == wanted
    assert body["message"] == event
    assert body["logger"] == SECURITY_LOGGER
    assert body["level"] == logging.getLevelName(level)
    assert "\n" not in TextFormatter().format(record)


def current_session(api: Api, access_token: str) -> str:
    response = api.client.get("/users/me/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    (session,) = [item for item in response.json() if item["current"]]
    return str(session["id"])


# -- each event, field by field -------------------------------------------------------------------------------


def test_register_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3 and 16.2.1: a new account is logged with its namespace, username, id and client address."""
    profile = api.created(email="alice@example.com", extra={"plan": "pro"})

    (record,) = events(security_log)
    assert_event(record, "register", logging.INFO, namespace="app-x", username="alice", user_id=profile["id"], ip=PEER)


def test_login_success_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.1 and 16.2.1: a successful login names the user, the session it opened and the client."""
    profile = api.created()
    events(security_log)

    pair = api.logged_in()

    (record,) = events(security_log)
    session_id = current_session(api, pair["access_token"])
    assert_event(
        record,
        "login",
        logging.INFO,
        namespace="app-x",
        username="alice",
        user_id=profile["id"],
        session_id=session_id,
        ip=PEER,
    )


def test_login_failure_for_an_unknown_user_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.1: a failed login for an account that does not exist names what was tried, and where from."""
    api.created()
    events(security_log)

    response = api.login(username="Mallory")

    assert response.status_code == 401
    (record,) = events(security_log)
    assert_event(record, "login_failed", logging.INFO, namespace="app-x", username="mallory", ip=PEER)


def test_login_failure_for_a_wrong_password_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.1: a wrong password is logged against the account, with the counts of failures so far (from
    this client, and from every client)."""
    profile = api.created()
    events(security_log)

    first = api.login(password=WRONG_PASSWORD)
    second = api.login(password=WRONG_PASSWORD)

    assert (first.status_code, second.status_code) == (401, 401)
    records = events(security_log)
    assert len(records) == 2
    who = {"namespace": "app-x", "username": "alice", "user_id": profile["id"], "ip": PEER}
    assert_event(records[0], "login_failed", logging.INFO, failures=1, account_failures=1, **who)
    assert_event(records[1], "login_failed", logging.INFO, failures=2, account_failures=2, **who)


def test_lockout_is_logged(make_api: MakeApi, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3 (anti-automation): the failure that locks the account logs a warning with the wait, and a
    login refused during the lock is a warning too."""
    api = make_api(login_max_failures=MAX_FAILURES, login_lockout_seconds=LOCKOUT_SECONDS)
    profile = api.created()
    events(security_log)

    for _ in range(MAX_FAILURES):
        assert api.login(password=WRONG_PASSWORD).status_code == 401
    locking = events(security_log)
    refused = api.login()

    assert refused.status_code == 429
    who = {"namespace": "app-x", "username": "alice", "user_id": profile["id"], "ip": PEER}
    assert [record.getMessage() for record in locking] == ["login_failed"] * MAX_FAILURES + ["lockout"]
    assert_event(locking[-2], "login_failed", logging.INFO, failures=MAX_FAILURES, account_failures=MAX_FAILURES, **who)
    assert_event(locking[-1], "lockout", logging.WARNING, seconds=LOCKOUT_SECONDS, scope="client", **who)
    (record,) = events(security_log)
    assert_event(record, "login_refused_locked", logging.WARNING, **who)


def test_refresh_token_reuse_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3: a spent refresh token presented again is a warning naming the session it revoked."""
    profile = api.created()
    pair = api.logged_in()
    session_id = current_session(api, pair["access_token"])
    assert api.refresh(pair["refresh_token"]).status_code == 200
    events(security_log)

    reused = api.refresh(pair["refresh_token"])

    assert reused.status_code == 401
    assert reused.json()["code"] == "refresh_token_reused"
    (record,) = events(security_log)
    assert_event(
        record,
        "refresh_reuse",
        logging.WARNING,
        namespace="app-x",
        user_id=profile["id"],
        session_id=session_id,
        ip=PEER,
    )


def test_logout_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.1 and 16.2.1: a logout names the user, the session it ended and the client."""
    profile = api.created()
    pair = api.logged_in()
    session_id = current_session(api, pair["access_token"])
    events(security_log)

    response = api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert response.status_code == 204
    (record,) = events(security_log)
    assert_event(
        record, "logout", logging.INFO, namespace="app-x", user_id=profile["id"], session_id=session_id, ip=PEER
    )


def test_logout_all_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.1 and 16.2.1: logging out everywhere names the user, the calling session, how many sessions
    ended and the client."""
    profile = api.created()
    api.logged_in()
    pair = api.logged_in()
    session_id = current_session(api, pair["access_token"])
    events(security_log)

    response = api.client.post("/auth/logout-all", headers=bearer(pair["access_token"]))

    assert response.status_code == 204
    (record,) = events(security_log)
    assert_event(
        record,
        "logout_all",
        logging.INFO,
        namespace="app-x",
        user_id=profile["id"],
        session_id=session_id,
        sessions=2,
        ip=PEER,
    )


def test_password_change_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3 and 16.2.1: a password change names the user, the new session it opened and the client."""
    profile = api.created()
    pair = api.logged_in()
    events(security_log)

    response = api.client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )

    assert response.status_code == 200, response.text
    (record,) = events(security_log)
    session_id = current_session(api, response.json()["access_token"])
    assert_event(
        record,
        "password_changed",
        logging.INFO,
        namespace="app-x",
        user_id=profile["id"],
        session_id=session_id,
        ip=PEER,
    )


def test_session_ended_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3 and 16.2.1: ending one session names the user, the session ended and the client."""
    profile = api.created()
    other = api.logged_in()
    other_id = current_session(api, other["access_token"])
    pair = api.logged_in()
    events(security_log)

    response = api.client.delete(f"/users/me/sessions/{other_id}", headers=bearer(pair["access_token"]))

    assert response.status_code == 204
    (record,) = events(security_log)
    assert_event(
        record, "session_ended", logging.INFO, namespace="app-x", user_id=profile["id"], session_id=other_id, ip=PEER
    )


def test_password_reset_is_logged(api: Api, security_log: pytest.LogCaptureFixture) -> None:
    """ASVS 5.0 16.3.3: an operator's password reset (no client address: it does not come over HTTP) names the
    user."""
    profile = api.created()
    events(security_log)

    service_of(api).reset_password(namespace="app-x", username="alice", new_password=RESET_PASSWORD)

    (record,) = events(security_log)
    assert_event(record, "password_reset", logging.INFO, namespace="app-x", user_id=profile["id"])


def test_the_client_address_behind_a_trusted_proxy_is_logged(
    make_api: MakeApi, security_log: pytest.LogCaptureFixture
) -> None:
    """ASVS 5.0 16.2.1: behind a trusted proxy the event names the client the proxy forwarded for, not the proxy."""
    api = make_api(peer=PROXY, trusted_proxies="10.0.0.0/8")

    response = api.client.post(
        "/auth/register",
        json={"namespace": "app-x", "username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": f"192.0.2.1, {FORWARDED_CLIENT}"},
    )

    assert response.status_code == 201, response.text
    (record,) = events(security_log)
    assert_event(
        record,
        "register",
        logging.INFO,
        namespace="app-x",
        username="alice",
        user_id=response.json()["id"],
        ip=FORWARDED_CLIENT,
    )


# -- one line each, whatever the input ------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_each_event_is_one_line_in_the_configured_format(
    api: Api, caplog: pytest.LogCaptureFixture, log_format: str
) -> None:
    """ASVS 5.0 16.2.4 and 16.4.1: through the formatter LOG_FORMAT selects, every event is exactly one line, and a
    hostile username cannot add a line of its own."""
    config = logging_config(log_format, "INFO")
    formatter_name = config["handlers"]["default"]["formatter"]
    formatter: logging.Formatter = config["formatters"][formatter_name]["()"]()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(SECURITY_LOGGER)
    logger.addHandler(handler)
    try:
        caplog.set_level(logging.INFO, logger=SECURITY_LOGGER)
        api.created()
        api.logged_in()
        api.login(password=WRONG_PASSWORD)
        api.login(username='alice\n{"event": "login", "username": "admin"}\nlevel=INFO')
        api.login(username="mallory\r\nforged line")
    finally:
        logger.removeHandler(handler)

    lines = stream.getvalue().splitlines()
    expected = ["register", "login", "login_failed", "login_failed", "login_failed"]
    assert len(lines) == len(expected), lines
    if log_format == "json":
        bodies = [json.loads(line) for line in lines]
        assert [body["event"] for body in bodies] == expected
        assert all(body["ip"] == PEER for body in bodies)
        assert all(body.get("username") != "admin" for body in bodies)
    else:
        for line, event in zip(lines, expected, strict=True):
            assert f" {SECURITY_LOGGER} {event} " in line
            assert f"ip={PEER}" in line


# -- no secrets, anywhere in the log --------------------------------------------------------------------------


def stored_secrets(service: UserService, caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The password hashes and refresh token digests in the database now, each with what it is (read quietly:
    the scan is of what the service logs, not of this test's own queries)."""
    with caplog.at_level(logging.WARNING, logger="sqlalchemy"), service.engine.connect() as connection:
        hashes = connection.execute(text("SELECT password_hash FROM users")).scalars().all()
        digests = connection.execute(text("SELECT token_hash FROM refresh_tokens")).scalars().all()
    return {str(value): "password hash" for value in hashes} | {str(value): "refresh token digest" for value in digests}


def rendered(record: logging.LogRecord) -> str:
    """The record as every formatter writes it: JSON, text, and the bare message."""
    return "\n".join((JsonFormatter().format(record), TextFormatter().format(record), record.getMessage()))


def test_a_session_of_activity_logs_no_secret(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """ASVS 4.0.3 7.1.1 and 7.1.2 (5.0 16.2.5): after registering, logging in, failing to a lockout, refreshing,
    reusing a refresh token, changing the password, editing the profile, ending sessions, logging out and out
    everywhere, and an operator's reset, no log line of any logger at DEBUG, in either format, holds a password,
    an access or refresh token, a password hash or a refresh token digest."""
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy pins its own loggers to WARNING; an operator who turns SQL logging on gets no secret either.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    api = make_api(login_max_failures=MAX_FAILURES, login_lockout_seconds=LOCKOUT_SECONDS)
    service = service_of(api)
    secrets = {
        PASSWORD: "password",
        WRONG_PASSWORD: "wrong password",
        NEW_PASSWORD: "new password",
        RESET_PASSWORD: "reset password",
        TEST_SECRET: "signing key",
    }
    pairs: list[dict[str, Any]] = []

    def issued(response: Any) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        pairs.append(pair)
        return pair

    api.created(email="alice@example.com", full_name="Alice Liddell", extra={"plan": "pro", "team": "red"})
    secrets |= stored_secrets(service, caplog)
    first = issued(api.login())
    for _ in range(MAX_FAILURES):
        assert api.login(password=WRONG_PASSWORD).status_code == 401
    assert api.login().status_code == 429
    clock.advance(LOCKOUT_SECONDS + 1)
    issued(api.refresh(first["refresh_token"]))
    assert api.refresh(first["refresh_token"]).json()["code"] == "refresh_token_reused"
    second = issued(api.login())
    changed = issued(
        api.client.post(
            "/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(second["access_token"]),
        )
    )
    patched = api.client.patch(
        "/users/me",
        json={"full_name": "Alice L.", "extra": {"team": None, "city": "Oxford"}},
        headers=bearer(changed["access_token"]),
    )
    assert patched.status_code == 200, patched.text
    third = issued(api.login(password=NEW_PASSWORD))
    fourth = issued(api.login(password=NEW_PASSWORD))
    ended = api.client.delete(
        f"/users/me/sessions/{current_session(api, fourth['access_token'])}", headers=bearer(changed["access_token"])
    )
    assert ended.status_code == 204
    assert api.client.post("/auth/logout", json={"refresh_token": third["refresh_token"]}).status_code == 204
    assert api.client.post("/auth/logout-all", headers=bearer(changed["access_token"])).status_code == 204
    secrets |= stored_secrets(service, caplog)
    service.reset_password(namespace="app-x", username="alice", new_password=RESET_PASSWORD)
    secrets |= stored_secrets(service, caplog)
    for number, pair in enumerate(pairs):
        secrets[pair["access_token"]] = f"access token {number}"
        secrets[pair["access_token"].rsplit(".", 1)[1]] = f"access token {number} signature"
        secrets[pair["refresh_token"]] = f"refresh token {number}"
        secrets[hashlib.sha256(pair["refresh_token"].encode()).hexdigest()] = f"refresh token {number} digest"

    assert len(pairs) == 6
    assert sorted(secrets.values()).count("password hash") == 3
    logged = {record.getMessage() for record in caplog.records if record.name == SECURITY_LOGGER}
    assert logged >= {"register", "login", "login_failed", "lockout", "login_refused_locked", "refresh_reuse"}
    assert logged >= {"password_changed", "session_ended", "logout", "logout_all", "password_reset"}
    output = "\n".join([caplog.text, *(rendered(record) for record in caplog.records)])
    leaks = sorted(
        f"{what} in {sorted({record.name for record in caplog.records if secret in rendered(record)})}"
        for secret, what in secrets.items()
        if secret in output
    )
    assert leaks == []


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_server_lines_carry_no_terminal_colour_codes(formatter: logging.Formatter) -> None:
    """uvicorn attaches a coloured copy of its messages; log files and collectors get the plain one only."""
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (7,), None)
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"

    line = formatter.format(record)

    assert "\x1b" not in line
    assert "Started server process [7]" in line
