"""Sessions (ASVS 5.0 V7): new tokens at each login, logout, logout everywhere, password change, the caller's list of
sessions, the absolute lifetime and pruning."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import PASSWORD, START, Api, Cli, FakeClock, MakeApi, bearer
from tests.helpers import assert_unauthorized
from user_service.service import UserService

NEW_PASSWORD = "velvet quartz harbor"
SESSION_KEYS = {"id", "created_at", "last_used_at", "expires_at", "user_agent", "ip", "current"}
DEFAULT_LIFETIME = timedelta(days=90)


def sid(pair: dict[str, Any]) -> str:
    """The session an access token speaks for (its `sid` claim)."""
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return str(claims["sid"])


def sessions(api: Api, access_token: str) -> list[dict[str, Any]]:
    response = api.client.get("/users/me/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def logout(api: Api, refresh_token: str) -> Any:
    return api.client.post("/auth/logout", json={"refresh_token": refresh_token})


def end_session(api: Api, access_token: str, session_id: str) -> Any:
    return api.client.delete(f"/users/me/sessions/{session_id}", headers=bearer(access_token))


def assert_works(api: Api, pair: dict[str, Any]) -> dict[str, Any]:
    """The pair's access token is accepted and its refresh token rotates; returns the rotated pair."""
    assert api.me(pair["access_token"]).status_code == 200
    return rotate(api, pair)


def rotate(api: Api, pair: dict[str, Any]) -> dict[str, Any]:
    """Spend the pair's refresh token; the new pair's access token is accepted."""
    response = api.refresh(pair["refresh_token"])
    assert response.status_code == 200, response.text
    fresh: dict[str, Any] = response.json()
    assert api.me(fresh["access_token"]).status_code == 200
    return fresh


def assert_ended(api: Api, pair: dict[str, Any]) -> None:
    """Neither token of the pair is accepted any more."""
    assert_unauthorized(api.me(pair["access_token"]))
    assert api.refresh(pair["refresh_token"]).status_code == 401


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- 7.2.4 new session at each login ------------------------------------------------------------------------------


def test_each_login_starts_a_new_session(api: Api) -> None:
    """ASVS 5.0 7.2.4: every login issues new tokens in a session of its own."""
    assert api.register().status_code == 201

    first, second = api.login().json(), api.login().json()

    assert first["access_token"] != second["access_token"]
    assert first["refresh_token"] != second["refresh_token"]
    assert sid(first) != sid(second)
    assert {entry["id"] for entry in sessions(api, first["access_token"])} == {sid(first), sid(second)}


# -- 7.4.1 logout -------------------------------------------------------------------------------------------------


def test_logout_ends_that_session_at_once(api: Api) -> None:
    """ASVS 5.0 7.4.1: logout ends its session: the refresh token gives 401 and the access token fails at once,
    while the user's other sessions carry on."""
    pair = api.tokens()
    other = api.login().json()

    response = logout(api, pair["refresh_token"])

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_unauthorized(api.refresh(pair["refresh_token"]))
    assert_unauthorized(api.me(pair["access_token"]))
    assert_works(api, other)
    assert [entry["id"] for entry in sessions(api, other["access_token"])] == [sid(other)]


def test_logout_after_rotation_ends_the_whole_session(api: Api) -> None:
    """ASVS 5.0 7.4.1: logging out with the newest refresh token of a rotated chain ends every token of the
    chain."""
    first = api.tokens()
    second = api.refresh(first["refresh_token"]).json()
    third = api.refresh(second["refresh_token"]).json()

    assert logout(api, third["refresh_token"]).status_code == 204

    for pair in (first, second, third):
        assert_unauthorized(api.me(pair["access_token"]))
    assert api.refresh(third["refresh_token"]).status_code == 401


# -- logout everywhere --------------------------------------------------------------------------------------------


def test_logout_all_ends_every_session(api: Api) -> None:
    """ASVS 5.0 7.5.2 and 7.4.1: POST /auth/logout-all ends every session of the user and every access token issued
    before it fails at once; other users and later logins are unaffected."""
    first = api.tokens()
    first_rotated = api.refresh(first["refresh_token"]).json()
    second = api.login().json()
    third = api.login().json()
    bob = api.tokens(username="bob")

    response = api.client.post("/auth/logout-all", headers=bearer(second["access_token"]))

    assert response.status_code == 204, response.text
    assert response.content == b""
    for pair in (first_rotated, second, third):
        assert_ended(api, pair)
    assert_unauthorized(api.me(first["access_token"]))
    assert_works(api, bob)
    later = api.login().json()
    assert_works(api, later)
    assert [entry["id"] for entry in sessions(api, later["access_token"])] == [sid(later)]


@pytest.mark.parametrize("kind", ["none", "refresh-token", "garbage"])
def test_logout_all_needs_a_valid_access_token(api: Api, kind: str) -> None:
    """ASVS 5.0 7.5.2: only the user, with a live access token, can end all their sessions."""
    pair = api.tokens()
    headers = {"none": {}, "refresh-token": bearer(pair["refresh_token"]), "garbage": bearer("garbage")}[kind]

    response = api.client.post("/auth/logout-all", headers=headers)

    assert_unauthorized(response, "not_authenticated" if kind == "none" else "invalid_token")
    assert_works(api, pair)


# -- password change ----------------------------------------------------------------------------------------------


def test_password_change_ends_every_other_session(api: Api) -> None:
    """ASVS 5.0 7.4.3 and 6.2.3 (4.0.3 3.3.3 and 2.1.6): a password change returns a fresh pair that works, while
    every other session of the user, and every older access token, stops working at once."""
    caller = api.tokens()
    caller_rotated = api.refresh(caller["refresh_token"]).json()
    other = api.login().json()
    bob = api.tokens(username="bob")

    response = api.client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(caller_rotated["access_token"]),
    )

    assert response.status_code == 200, response.text
    fresh = response.json()
    assert response.headers["Cache-Control"] == "no-store"
    assert sid(fresh) not in {sid(caller), sid(other)}
    assert_ended(api, caller_rotated)
    assert_ended(api, other)
    assert_unauthorized(api.me(caller["access_token"]))
    fresh_rotated = assert_works(api, fresh)
    assert [entry["id"] for entry in sessions(api, fresh_rotated["access_token"])] == [sid(fresh)]
    assert_works(api, bob)


# -- 7.5.2 the list of sessions -----------------------------------------------------------------------------------


def test_sessions_list_records_agent_address_and_times(app: FastAPI, clock: FakeClock) -> None:
    """ASVS 5.0 7.5.2: GET /users/me/sessions lists each open session with its creation, last use, end, user agent
    and client address, and marks the caller's own."""
    with (
        TestClient(app, client=("203.0.113.7", 50000)) as laptop,
        TestClient(app, client=("198.51.100.23", 50000)) as phone,
    ):
        assert Api(laptop).register().status_code == 201
        body = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
        mine = laptop.post("/auth/login", json=body, headers={"User-Agent": "Firefox/140.0"}).json()
        clock.advance(60)
        theirs = phone.post("/auth/login", json=body, headers={"User-Agent": "AcmePhone/2.1"}).json()

        listed = {entry["id"]: entry for entry in sessions(Api(laptop), mine["access_token"])}

    assert set(listed) == {sid(mine), sid(theirs)}
    for entry in listed.values():
        assert set(entry) == SESSION_KEYS
    entry = listed[sid(mine)]
    assert (entry["user_agent"], entry["ip"], entry["current"]) == ("Firefox/140.0", "203.0.113.7", True)
    assert when(entry["created_at"]) == when(entry["last_used_at"]) == START
    assert when(entry["expires_at"]) == START + DEFAULT_LIFETIME
    assert listed[sid(theirs)]["user_agent"] == "AcmePhone/2.1"
    assert listed[sid(theirs)]["ip"] == "198.51.100.23"
    assert listed[sid(theirs)]["current"] is False
    assert when(listed[sid(theirs)]["created_at"]) == START + timedelta(seconds=60)


def test_sessions_list_shows_last_use_and_leaves_out_ended_sessions(api: Api, clock: FakeClock) -> None:
    """ASVS 5.0 7.5.2: a refresh moves the session's last use (never its end); ended sessions are not listed."""
    mine = api.tokens()
    other = api.login().json()
    ended = api.login().json()
    clock.advance(300)
    other = api.refresh(other["refresh_token"]).json()
    assert logout(api, ended["refresh_token"]).status_code == 204

    listed = {entry["id"]: entry for entry in sessions(api, mine["access_token"])}

    assert set(listed) == {sid(mine), sid(other)}
    assert when(listed[sid(other)]["last_used_at"]) == START + timedelta(seconds=300)
    assert when(listed[sid(other)]["created_at"]) == START
    assert when(listed[sid(other)]["expires_at"]) == START + DEFAULT_LIFETIME
    assert when(listed[sid(mine)]["last_used_at"]) == START


def test_ending_one_session(api: Api) -> None:
    """ASVS 5.0 7.5.2: DELETE /users/me/sessions/{id} ends that session at once and no other."""
    mine = api.tokens()
    other = api.login().json()

    response = end_session(api, mine["access_token"], sid(other))

    assert response.status_code == 204, response.text
    assert_ended(api, other)
    assert [entry["id"] for entry in sessions(api, mine["access_token"])] == [sid(mine)]
    again = end_session(api, mine["access_token"], sid(other))
    assert again.status_code == 404, again.text
    assert again.json()["code"] == "session_not_found"
    assert_works(api, mine)


def test_ending_the_callers_own_session(api: Api) -> None:
    """ASVS 5.0 7.5.2 and 7.4.1: a user may end the session they are calling from; its tokens stop at once."""
    mine = api.tokens()
    other = api.login().json()

    assert end_session(api, mine["access_token"], sid(mine)).status_code == 204

    assert_ended(api, mine)
    assert_works(api, other)


@pytest.mark.parametrize(
    "intruder", [{"username": "bob"}, {"namespace": "app-y"}], ids=["same-namespace", "same-name-other-namespace"]
)
def test_a_user_can_never_see_or_end_another_users_session(api: Api, intruder: dict[str, str]) -> None:
    """ASVS 5.0 8.2.2: another user's sessions are neither listed nor ended; trying answers 404 session_not_found,
    exactly as for a session that does not exist."""
    victim = api.tokens()
    attacker = api.tokens(**intruder)

    listed = sessions(api, attacker["access_token"])
    refused = end_session(api, attacker["access_token"], sid(victim))
    missing = end_session(api, attacker["access_token"], str(uuid.uuid4()))

    assert [entry["id"] for entry in listed] == [sid(attacker)]
    assert refused.status_code == 404, refused.text
    assert refused.json()["code"] == "session_not_found"
    assert refused.content == missing.content
    assert_works(api, victim)


# -- 10.4.8 absolute lifetime -------------------------------------------------------------------------------------


def test_rotation_never_extends_the_session_lifetime(make_api: MakeApi, clock: FakeClock) -> None:
    """ASVS 5.0 10.4.8: SESSION_MAX_LIFETIME_SECONDS is absolute: refreshing all along never moves the end, and at
    the end the refresh token is token_expired and the last access token fails too."""
    api = make_api(session_max_lifetime_seconds=3600)
    pair = api.tokens()
    session_id = sid(pair)

    for _ in range(5):
        clock.advance(600)
        pair = assert_works(api, pair)
    clock.advance(599)
    pair = assert_works(api, pair)
    assert when(sessions(api, pair["access_token"])[0]["expires_at"]) == START + timedelta(seconds=3600)
    assert sid(pair) == session_id

    clock.advance(1)

    expired = api.refresh(pair["refresh_token"])
    assert_unauthorized(expired, "token_expired")
    assert api.me(pair["access_token"]).status_code == 401
    assert_works(api, api.login().json())


# -- 14.2.7 pruning -----------------------------------------------------------------------------------------------


def rows(service: UserService) -> tuple[set[str], list[str]]:
    """The session ids, and the session id of each refresh token, stored now."""
    with service.engine.connect() as connection:
        session_ids = connection.execute(text("SELECT id FROM auth_sessions")).scalars()
        token_owners = connection.execute(text("SELECT session_id FROM refresh_tokens")).scalars()
        return {str(value) for value in session_ids}, [str(value) for value in token_owners]


def normalized(value: str) -> str:
    return str(uuid.UUID(value))


PRUNE_CASES = {
    "default-7-days": ([], {"ended-recently", "open"}),
    "keep-none": (["--keep-ended-days", "0"], {"open"}),
    "keep-30-days": (["--keep-ended-days", "30"], {"ended-long-ago", "ended-recently", "open"}),
}


@pytest.mark.parametrize(("options", "kept"), PRUNE_CASES.values(), ids=PRUNE_CASES.keys())
def test_prune_sessions_deletes_expired_and_long_ended_sessions(
    api: Api, service: UserService, cli: Cli, clock: FakeClock, options: list[str], kept: set[str]
) -> None:
    """ASVS 5.0 14.2.7: `prune-sessions` deletes sessions past their lifetime and sessions ended longer ago than
    --keep-ended-days (7 by default), with their refresh tokens, and keeps open sessions working."""
    # The CLI runs on the real clock, so the sessions are made at times relative to it.
    now = datetime.now(UTC) - timedelta(hours=1)
    clock.now = now - timedelta(days=100)
    pairs = {"expired": api.tokens()}
    clock.now = now - timedelta(days=30)
    for name in ("ended-long-ago", "ended-recently", "open"):
        pairs[name] = api.login().json()
    clock.now = now - timedelta(days=20)
    assert logout(api, pairs["ended-long-ago"]["refresh_token"]).status_code == 204
    clock.now = now - timedelta(days=1)
    assert logout(api, pairs["ended-recently"]["refresh_token"]).status_code == 204
    pairs["open"] = rotate(api, pairs["open"])
    ids = {name: sid(pair) for name, pair in pairs.items()}
    assert {normalized(value) for value in rows(service)[0]} == set(ids.values())

    result = cli("prune-sessions", *options)

    assert result.exit_code == 0, result.output
    assert f"deleted {len(ids) - len(kept)} sessions" in result.stdout
    session_ids, token_owners = rows(service)
    assert {normalized(value) for value in session_ids} == {ids[name] for name in kept}
    # Only the open session's current refresh token is still needed; spent and expired ones are gone.
    assert [normalized(value) for value in token_owners] == [ids["open"]]
    clock.now = now
    rotate(api, pairs["open"])
