"""No account enumeration (ASVS 5.0 6.3.8): every failed login, and every logout, looks the same from outside."""

from __future__ import annotations

from typing import Any

import bcrypt
import pytest

from tests.conftest import PASSWORD, WRONG, Api, MakeApi, assert_invalid_credentials
from user_service import security

FAILED_LOGINS = {
    "unknown-namespace": {"namespace": "app-z"},
    "unknown-user": {"username": "mallory"},
    "wrong-password": {"password": WRONG},
    "password-over-72-bytes": {"password": PASSWORD + "é" * 40},
    "password-73-bytes-multibyte": {"password": "é" * 36 + "a"},
    "malformed-username": {"username": "al ice!"},
    "username-too-long": {"username": "a" * 65},
    "empty-username": {"username": ""},
    "non-ascii-username": {"username": "ålice"},
    "malformed-namespace": {"namespace": "app_x"},
    "empty-password": {"password": ""},
}


def fixed_headers(response: Any) -> dict[str, str]:
    """The response's headers but its request id, which is random for each request and tells nothing."""
    return {name: value for name, value in response.headers.items() if name != "x-request-id"}


def test_failed_logins_are_indistinguishable(api: Api) -> None:
    """ASVS 5.0 6.3.8: unknown namespace, unknown user and wrong password (and malformed input) get the same
    status, body and headers."""
    assert api.register().status_code == 201
    assert api.register(username="bob").status_code == 201

    responses = {name: api.login(**fields) for name, fields in FAILED_LOGINS.items()}

    reference = responses["wrong-password"]
    assert_invalid_credentials(reference)
    assert reference.headers["WWW-Authenticate"].startswith("Bearer")
    for name, response in responses.items():
        assert response.status_code == reference.status_code, name
        assert response.content == reference.content, name
        assert fixed_headers(response) == fixed_headers(reference), name


@pytest.mark.parametrize(
    "fields",
    [
        {"namespace": "app-z"},
        {"username": "mallory"},
        {"username": "al ice!"},
        {"password": WRONG},
        {"password": "é" * 36 + "a"},
    ],
    ids=["unknown-namespace", "unknown-user", "malformed-username", "wrong-password", "over-long-password"],
)
def test_every_failed_login_costs_one_password_check(
    api: Api, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str]
) -> None:
    """ASVS 5.0 6.3.8: every failed login runs exactly one password check against a hash of the configured cost,
    a stand-in hash for unknown accounts, so timing does not tell them apart."""
    assert api.register().status_code == 201
    checks: list[tuple[str, str]] = []
    original = security.check_password

    def counting(password: str, password_hash: str) -> bool:
        checks.append((password, password_hash))
        return original(password, password_hash)

    monkeypatch.setattr(security, "check_password", counting)

    assert_invalid_credentials(api.login(**fields))

    assert len(checks) == 1
    assert checks[0][0] == fields.get("password", PASSWORD)
    # The stand-in hash has the configured cost, so a miss takes as long as a wrong password.
    assert security.hash_rounds(checks[0][1]) == 4


@pytest.mark.parametrize(
    "fields", [{"namespace": "app-z"}, {"username": "mallory"}, {"password": WRONG}], ids=["ns", "user", "password"]
)
def test_unknown_accounts_run_a_real_bcrypt_check(
    api: Api, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str]
) -> None:
    """ASVS 5.0 6.3.8: the stand-in check for an unknown account is a real bcrypt computation, not a shortcut."""
    assert api.register().status_code == 201
    assert api.login(namespace="app-z").status_code == 401  # the stand-in hash is made once, on the first miss
    hashes: list[bytes] = []
    original = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        hashes.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)

    assert_invalid_credentials(api.login(**fields))

    assert len(hashes) == 1
    assert hashes[0].startswith(b"$2b$04$")


@pytest.mark.parametrize("rounds", [5, 6])
def test_stand_in_hash_follows_the_configured_cost(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, rounds: int
) -> None:
    """ASVS 5.0 6.3.8: with BCRYPT_ROUNDS raised, an unknown account costs the same bcrypt work as a real one."""
    api = make_api(bcrypt_rounds=rounds)
    assert api.register().status_code == 201
    costs: list[int | None] = []
    original = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        costs.append(security.hash_rounds(hashed.decode()))
        return original(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)

    assert_invalid_credentials(api.login(username="mallory"))
    assert_invalid_credentials(api.login(password=WRONG))

    assert costs == [rounds, rounds]


def test_logout_with_an_unknown_token_answers_like_a_known_one(api: Api) -> None:
    """ASVS 5.0 6.3.8: logout answers the same 204 for a live, an already ended and an unknown refresh token, so it
    cannot be used to test which tokens exist."""
    pair = api.tokens()

    known = api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    ended = api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    unknown = api.client.post("/auth/logout", json={"refresh_token": "x" * 43})
    garbage = api.client.post("/auth/logout", json={"refresh_token": ""})

    assert known.status_code == 204, known.text
    assert known.content == b""
    assert api.refresh(pair["refresh_token"]).status_code == 401
    for response in (ended, unknown, garbage):
        assert response.status_code == known.status_code
        assert response.content == known.content
        assert fixed_headers(response) == fixed_headers(known)
