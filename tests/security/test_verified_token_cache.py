"""The memory of verified access tokens: a repeat of the very same token skips the signature check, and nothing
else changes: expiry, the session and the account are checked on every request, and the memory is bounded."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, FakeClock
from tests.helpers import assert_unauthorized
from user_service import security
from user_service.service import UserService
from user_service.service.context import VerifiedTokens


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens that went through the full check (signature and claims)."""
    seen: list[str] = []
    decode = security.decode_access_token

    def counting(token: str, **options: Any) -> security.AccessClaims:
        seen.append(token)
        return decode(token, **options)

    monkeypatch.setattr(security, "decode_access_token", counting)
    return seen


def test_a_repeated_token_is_fully_checked_once(api: Api, full_checks: list[str]) -> None:
    token = api.tokens()["access_token"]

    for _ in range(3):
        assert api.me(token).status_code == 200

    assert full_checks.count(token) == 1


def test_a_remembered_token_still_expires(api: Api, clock: FakeClock) -> None:
    pair = api.tokens()
    assert api.me(pair["access_token"]).status_code == 200

    clock.advance(pair["expires_in"])

    assert_unauthorized(api.me(pair["access_token"]), "token_expired")


def test_a_remembered_token_of_an_ended_session_is_refused(api: Api) -> None:
    pair = api.tokens()
    assert api.me(pair["access_token"]).status_code == 200

    api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert_unauthorized(api.me(pair["access_token"]))


def test_a_token_differing_in_one_character_is_checked_in_full(api: Api, full_checks: list[str]) -> None:
    token = api.tokens()["access_token"]
    assert api.me(token).status_code == 200
    head, body, signature = token.split(".")
    changed = f"{head}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"

    assert_unauthorized(api.me(changed))
    assert changed in full_checks


def test_the_memory_is_bounded_and_drops_the_oldest_first(api: Api, service: UserService) -> None:
    remembered = VerifiedTokens(2)
    claims = [security.AccessClaims(*fields) for fields in _fake_claims(3)]

    for index, item in enumerate(claims):
        remembered.put(f"token-{index}", item)

    assert len(remembered) == 2
    assert remembered.get("token-0", 0) is None
    assert remembered.get("token-2", 0) is claims[2]
    assert remembered.get("token-2", claims[2].expires_at) is None
    assert len(remembered) == 1


def _fake_claims(count: int) -> list[tuple[Any, ...]]:
    import uuid

    return [(uuid.uuid4(), "app-x", "alice", uuid.uuid4(), 0, 100 + n, f"jti-{n}") for n in range(count)]
