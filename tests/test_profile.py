"""The caller's profile: GET /users/me and PATCH /users/me as a JSON Merge Patch (RFC 7396).

The HTTP tests run on SQLite and PostgreSQL through the `client` fixture; the property-based tests check the pure
merge and validation functions that every door (HTTP, CLI) goes through.
"""

from __future__ import annotations

import json
import string
import uuid
from datetime import datetime
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, PROFILE_KEYS, Api, FakeClock, bearer, registration
from user_service.errors import InvalidInput
from user_service.models import User
from user_service.service import UserService, merge_extra
from user_service.validation import (
    EXTRA_MAX_KEYS,
    NAMESPACE_MAX,
    USERNAME_MAX,
    clean_text,
    normalize_email,
    normalize_namespace,
    normalize_username,
)

FILLED_IN = {
    "email": "alice@example.com",
    "full_name": "Alice Liddell",
    "avatar_url": "https://img.example.com/alice.png",
    "extra": {"team": "red", "lang": "en", "tz": "UTC"},
}


def sign_up(
    service: UserService, *, namespace: str = "app-x", username: str = "alice", **fields: Any
) -> dict[str, str]:
    """Create an account through the core (quicker than HTTP) and return its Authorization headers."""
    service.register(registration(namespace=namespace, username=username, password=PASSWORD, **fields))
    return bearer(service.issue_tokens(namespace=namespace, username=username).access_token)


@pytest.fixture
def alice(service: UserService) -> dict[str, str]:
    """Authorization headers of an account with every optional field filled in."""
    return sign_up(service, **FILLED_IN)


def patch(api: Api, headers: dict[str, str], body: Any) -> httpx.Response:
    return api.client.patch("/users/me", json=body, headers=headers)


def stored(service: UserService, user_id: str) -> User:
    """The user's row as the database holds it, read outside the API."""
    with Session(service.engine) as session:
        user = session.get(User, uuid.UUID(user_id))
    assert user is not None
    return user


def assert_unchanged(api: Api, headers: dict[str, str], before: dict[str, Any]) -> None:
    after = api.client.get("/users/me", headers=headers).json()
    assert after == before


def problems(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail
    return detail


# -- GET /users/me ------------------------------------------------------------------------------------------------


def test_get_me_returns_the_profile(api: Api, clock: FakeClock) -> None:
    pair = api.tokens(**FILLED_IN)

    response = api.me(pair["access_token"])

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PROFILE_KEYS
    assert body["namespace"] == "app-x"
    assert body["username"] == "alice"
    assert {key: body[key] for key in FILLED_IN} == FILLED_IN
    uuid.UUID(body["id"])
    assert datetime.fromisoformat(body["created_at"]) == clock.now
    assert datetime.fromisoformat(body["updated_at"]) == clock.now
    assert "$2b$" not in response.text
    assert PASSWORD not in response.text


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_me_without_a_token_is_401(api: Api, method: str) -> None:
    response = api.client.request(method, "/users/me", json={} if method == "PATCH" else None)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- PATCH: merge semantics ---------------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_it_names(api: Api, alice: dict[str, str]) -> None:
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {"full_name": "Alice P. Liddell"})

    assert response.status_code == 200, response.text
    after = response.json()
    assert after["full_name"] == "Alice P. Liddell"
    untouched = PROFILE_KEYS - {"full_name", "updated_at"}
    assert {key: after[key] for key in untouched} == {key: before[key] for key in untouched}


def test_empty_patch_changes_nothing(api: Api, alice: dict[str, str]) -> None:
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {})

    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


@pytest.mark.parametrize("field", ["email", "full_name", "avatar_url"])
def test_null_clears_a_field(api: Api, alice: dict[str, str], service: UserService, field: str) -> None:
    response = patch(api, alice, {field: None})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body[field] is None
    for other in set(FILLED_IN) - {field}:
        assert body[other] == FILLED_IN[other]
    assert getattr(stored(service, body["id"]), field) is None


def test_extra_null_clears_the_whole_map(api: Api, alice: dict[str, str], service: UserService) -> None:
    response = patch(api, alice, {"extra": None})

    assert response.status_code == 200, response.text
    assert response.json()["extra"] == {}
    assert stored(service, response.json()["id"]).extra == {}


@pytest.mark.parametrize(
    ("extra_patch", "expected"),
    [
        pytest.param({"team": None}, {"lang": "en", "tz": "UTC"}, id="null-removes-a-key"),
        pytest.param({"team": "blue"}, {"team": "blue", "lang": "en", "tz": "UTC"}, id="replaces-a-key"),
        pytest.param({"city": "Oxford"}, {"team": "red", "lang": "en", "tz": "UTC", "city": "Oxford"}, id="adds"),
        pytest.param({"nothing": None}, {"team": "red", "lang": "en", "tz": "UTC"}, id="removing-a-missing-key"),
        pytest.param({}, {"team": "red", "lang": "en", "tz": "UTC"}, id="empty-object-keeps-all"),
        pytest.param(
            {"team": None, "lang": "fr", "city": "Oxford"},
            {"lang": "fr", "tz": "UTC", "city": "Oxford"},
            id="remove-replace-add-at-once",
        ),
        pytest.param({"team": ""}, {"team": "", "lang": "en", "tz": "UTC"}, id="empty-string-is-a-value"),
    ],
)
def test_extra_is_merged_key_by_key(
    api: Api, alice: dict[str, str], service: UserService, extra_patch: dict[str, str | None], expected: dict[str, str]
) -> None:
    response = patch(api, alice, {"extra": extra_patch})

    assert response.status_code == 200, response.text
    assert response.json()["extra"] == expected
    assert stored(service, response.json()["id"]).extra == expected


def test_patch_moves_updated_at_but_not_created_at(api: Api, alice: dict[str, str], clock: FakeClock) -> None:
    created = api.client.get("/users/me", headers=alice).json()["created_at"]
    clock.advance(90)

    response = patch(api, alice, {"full_name": "Later Alice"})

    assert response.status_code == 200
    assert datetime.fromisoformat(response.json()["updated_at"]) == clock.now
    assert response.json()["created_at"] == created


def test_stored_row_matches_the_response(api: Api, alice: dict[str, str], service: UserService) -> None:
    response = patch(
        api,
        alice,
        {
            "email": "Alice.New@Example.ORG",
            "full_name": "Ålice 😀 Liddell",
            "avatar_url": "https://cdn.example.net/a/b.webp?size=64",
            "extra": {"team": None, "lang": "de", "emoji": "🦄"},
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    row = stored(service, body["id"])
    assert body["email"] == "alice.new@example.org"
    assert (row.email, row.full_name, row.avatar_url, row.extra) == (
        body["email"],
        body["full_name"],
        body["avatar_url"],
        body["extra"],
    )
    assert body["extra"] == {"lang": "de", "tz": "UTC", "emoji": "🦄"}
    assert row.updated_at == datetime.fromisoformat(body["updated_at"])
    assert (row.namespace, row.username) == ("app-x", "alice")


def test_merge_patch_media_type_is_accepted(api: Api, alice: dict[str, str]) -> None:
    response = api.client.patch(
        "/users/me",
        content=json.dumps({"full_name": "Typed Alice", "extra": {"tz": None}}).encode(),
        headers={**alice, "Content-Type": "application/merge-patch+json"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Typed Alice"
    assert response.json()["extra"] == {"team": "red", "lang": "en"}


# -- PATCH: email uniqueness --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["bob@example.com", "BOB@EXAMPLE.COM", "Bob@Example.Com"])
def test_email_of_another_user_in_the_namespace_is_409(
    api: Api, service: UserService, alice: dict[str, str], spelling: str
) -> None:
    sign_up(service, username="bob", email="Bob@example.com")
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {"email": spelling})

    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"
    assert_unchanged(api, alice, before)


def test_same_email_in_another_namespace_is_fine(api: Api, service: UserService) -> None:
    sign_up(service, username="bob", email="bob@example.com")
    carol = sign_up(service, namespace="app-y", username="carol")

    response = patch(api, carol, {"email": "Bob@Example.com"})

    assert response.status_code == 200, response.text
    assert response.json()["email"] == "bob@example.com"


def test_setting_ones_own_email_again_is_fine(api: Api, alice: dict[str, str]) -> None:
    response = patch(api, alice, {"email": "ALICE@example.com"})

    assert response.status_code == 200, response.text
    assert response.json()["email"] == "alice@example.com"


def test_a_cleared_email_can_be_taken_by_another_user(api: Api, service: UserService, alice: dict[str, str]) -> None:
    assert patch(api, alice, {"email": None}).status_code == 200
    bob = sign_up(service, username="bob")

    response = patch(api, bob, {"email": "alice@example.com"})

    assert response.status_code == 200, response.text


# -- PATCH: refused input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["nickname", "is_active", "avatar_key", "Email"])
def test_unknown_field_is_422(api: Api, alice: dict[str, str], field: str) -> None:
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {field: "x", "full_name": "Should not apply"})

    assert any(problem["loc"] == ["body", field] for problem in problems(response))
    assert_unchanged(api, alice, before)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", str(uuid.uuid4())),
        ("namespace", "app-y"),
        ("username", "mallory"),
        ("password", "a brand new password"),
        ("password_hash", "$2b$04$" + "a" * 53),
        ("username", None),
    ],
)
def test_immutable_field_is_422_naming_it(
    api: Api, alice: dict[str, str], service: UserService, field: str, value: str | None
) -> None:
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {field: value, "full_name": "Should not apply"})

    assert any(field in problem["msg"] for problem in problems(response)), response.text
    assert_unchanged(api, alice, before)
    row = stored(service, before["id"])
    assert (row.namespace, row.username) == ("app-x", "alice")
    assert api.login().status_code == 200


@pytest.mark.parametrize("value", [1, 1.5, True, ["x"], {"nested": "x"}])
def test_non_string_extra_value_is_422(api: Api, alice: dict[str, str], value: Any) -> None:
    before = api.client.get("/users/me", headers=alice).json()

    response = patch(api, alice, {"extra": {"team": value}})

    assert any(problem["loc"][:3] == ["body", "extra", "team"] for problem in problems(response)), response.text
    assert_unchanged(api, alice, before)


@pytest.mark.parametrize("value", ["a string", 7, ["team"]])
def test_extra_that_is_not_an_object_is_422(api: Api, alice: dict[str, str], value: Any) -> None:
    response = patch(api, alice, {"extra": value})

    assert any(problem["loc"][:2] == ["body", "extra"] for problem in problems(response))


@pytest.mark.parametrize(
    "extra",
    [{"": "empty key"}, {"k" * 65: "long key"}, {"k": "v" * 1025}],
    ids=["empty-key", "key-over-64", "value-over-1024"],
)
def test_extra_key_and_value_lengths_are_checked(api: Api, alice: dict[str, str], extra: dict[str, str]) -> None:
    response = patch(api, alice, {"extra": extra})

    assert any(problem["loc"][:2] == ["body", "extra"] for problem in problems(response))


def test_extra_key_and_value_at_their_limits_are_accepted(api: Api, alice: dict[str, str]) -> None:
    response = patch(api, alice, {"extra": {"k" * 64: "v" * 1024}})

    assert response.status_code == 200, response.text
    assert response.json()["extra"]["k" * 64] == "v" * 1024


def keys(prefix: str, count: int) -> dict[str, str]:
    return {f"{prefix}{index}": str(index) for index in range(count)}


def test_more_than_50_keys_after_merging_is_422(api: Api, service: UserService) -> None:
    headers = sign_up(service, extra=keys("old", 30))
    before = api.client.get("/users/me", headers=headers).json()

    response = patch(api, headers, {"extra": keys("new", EXTRA_MAX_KEYS - 30 + 1)})

    assert response.status_code == 422
    assert response.json()["code"] == "too_many_extra_keys"
    assert_unchanged(api, headers, before)
    assert stored(service, before["id"]).extra == keys("old", 30)


def test_exactly_50_keys_after_merging_is_accepted(api: Api, service: UserService) -> None:
    headers = sign_up(service, extra=keys("old", 30))

    response = patch(api, headers, {"extra": keys("new", EXTRA_MAX_KEYS - 30)})

    assert response.status_code == 200, response.text
    assert len(response.json()["extra"]) == EXTRA_MAX_KEYS


def test_removals_count_before_the_limit_is_checked(api: Api, service: UserService) -> None:
    headers = sign_up(service, extra=keys("old", EXTRA_MAX_KEYS))
    swap: dict[str, str | None] = {f"old{index}": None for index in range(10)}
    swap.update(keys("new", 10))

    response = patch(api, headers, {"extra": swap})

    assert response.status_code == 200, response.text
    merged = response.json()["extra"]
    assert len(merged) == EXTRA_MAX_KEYS
    assert "old0" not in merged
    assert merged["new9"] == "9"


@pytest.mark.parametrize("email", ["not-an-email", "alice@", "alice example@example.com", "a" * 321])
def test_bad_email_is_422(api: Api, alice: dict[str, str], email: str) -> None:
    response = patch(api, alice, {"email": email})

    assert any(problem["loc"] == ["body", "email"] for problem in problems(response))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "/uploads/0123456789abcdef0123456789abcdef.png",
        "https://",
        "https://exa mple.com/a.png",
    ],
)
def test_non_http_avatar_url_is_422(api: Api, alice: dict[str, str], url: str) -> None:
    response = patch(api, alice, {"avatar_url": url})

    assert any(problem["loc"] == ["body", "avatar_url"] for problem in problems(response))


def test_full_name_over_its_limit_is_422(api: Api, alice: dict[str, str]) -> None:
    response = patch(api, alice, {"full_name": "x" * 201})

    assert any(problem["loc"] == ["body", "full_name"] for problem in problems(response))


# -- merge_extra is RFC 7396 on a flat map -----------------------------------------------------------------------


def rfc7396(target: Any, patch: Any) -> Any:
    """MergePatch(Target, Patch) exactly as RFC 7396 section 2 writes it."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = rfc7396(result.get(name), value)
        return result
    return patch


# A small key space, so that generated maps collide and often cross the 50-key limit.
EXTRA_KEYS = st.text(alphabet="abcdefgh", min_size=1, max_size=2)
EXTRA_VALUES = st.text(max_size=6)
FULL_50 = {f"k{index}": "v" for index in range(EXTRA_MAX_KEYS)}


@settings(max_examples=100, deadline=None)
@given(
    current=st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=EXTRA_MAX_KEYS),
    extra_patch=st.dictionaries(EXTRA_KEYS, st.none() | EXTRA_VALUES, max_size=60),
)
@example(current=FULL_50, extra_patch={"new": "x"})
@example(current=FULL_50, extra_patch={"k0": None, "new": "x"})
@example(current=FULL_50, extra_patch={"k0": "replaced"})
def test_merge_extra_is_rfc7396_on_a_flat_map(current: dict[str, str], extra_patch: dict[str, str | None]) -> None:
    snapshot = dict(current)
    expected = rfc7396(current, extra_patch)

    if len(expected) > EXTRA_MAX_KEYS:
        with pytest.raises(InvalidInput) as raised:
            merge_extra(current, extra_patch)
        assert raised.value.code == "too_many_extra_keys"
    else:
        assert merge_extra(current, extra_patch) == expected
    assert current == snapshot


@settings(max_examples=50, deadline=None)
@given(current=st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=EXTRA_MAX_KEYS))
def test_merge_extra_with_null_clears_everything(current: dict[str, str]) -> None:
    assert merge_extra(current, None) == {}


# -- field validators ---------------------------------------------------------------------------------------------

USERNAME_ALPHABET = string.ascii_letters + string.digits + "._-@+"
NAMESPACE_ALPHANUMERIC = string.ascii_letters + string.digits
# Characters that look like allowed ones or that change under case mapping (the Kelvin sign lowercases to "k").
LOOKALIKES = "\u212a\u017f\u0131\u0130\u00e9\u00c5\uff20\uff0e\uff0d\u00a0\u200b\u0301 \t\n\r\x00/\\:;#%'\"<>`"
NON_ASCII = st.characters(min_codepoint=0x80) | st.sampled_from(LOOKALIKES[:9]) | st.characters(categories=["Cs"])
FOREIGN_TO_USERNAME = (
    NON_ASCII
    | st.sampled_from(LOOKALIKES)
    | st.characters(max_codepoint=0x7F).filter(lambda char: char not in USERNAME_ALPHABET)
)


def with_inserted(base: str, char: str, position: int) -> str:
    position = position % (len(base) + 1)
    return base[:position] + char + base[position:]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=USERNAME_ALPHABET, min_size=1, max_size=USERNAME_MAX))
def test_username_of_the_allowed_alphabet_is_accepted_and_lowercased(value: str) -> None:
    result = normalize_username(value)

    assert result == value.lower()
    assert result.isascii()
    assert normalize_username(result) == result


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=USERNAME_ALPHABET, max_size=USERNAME_MAX - 1),
    FOREIGN_TO_USERNAME,
    st.integers(min_value=0, max_value=USERNAME_MAX),
)
def test_username_with_any_other_character_is_refused(base: str, char: str, position: int) -> None:
    with pytest.raises(ValueError, match="username"):
        normalize_username(with_inserted(base, char, position))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=USERNAME_MAX).filter(lambda text: not text.isascii()))
def test_username_is_never_non_ascii(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_username(value)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=USERNAME_ALPHABET, min_size=USERNAME_MAX + 1, max_size=USERNAME_MAX + 40))
def test_username_over_64_characters_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_username(value)


def test_empty_username_is_refused() -> None:
    with pytest.raises(ValueError):
        normalize_username("")


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(NAMESPACE_ALPHANUMERIC),
    st.text(alphabet=NAMESPACE_ALPHANUMERIC + "-", max_size=NAMESPACE_MAX - 1),
)
def test_namespace_of_the_allowed_alphabet_is_accepted_and_lowercased(first: str, rest: str) -> None:
    value = first + rest

    result = normalize_namespace(value)

    assert result == value.lower()
    assert result.isascii()


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=NAMESPACE_ALPHANUMERIC + "-", max_size=NAMESPACE_MAX - 1),
    NON_ASCII | st.sampled_from(LOOKALIKES + "._@+"),
    st.integers(min_value=0, max_value=NAMESPACE_MAX),
)
def test_namespace_with_any_other_character_is_refused(base: str, char: str, position: int) -> None:
    with pytest.raises(ValueError, match="namespace"):
        normalize_namespace(with_inserted(base, char, position))


@pytest.mark.parametrize("value", ["", "-app", "-", "a" * (NAMESPACE_MAX + 1)])
def test_namespace_shape_is_checked(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_namespace(value)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_clean_text_keeps_storable_text_unchanged(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(ValueError):
            clean_text(value)
    else:
        assert clean_text(value) == value


@settings(max_examples=50, deadline=None)
@given(st.text(), st.sampled_from(["\x00", "\ud800", "\udfff"]), st.integers(min_value=0, max_value=50))
def test_clean_text_refuses_nul_and_lone_surrogates(base: str, char: str, position: int) -> None:
    with pytest.raises(ValueError):
        clean_text(with_inserted(base, char, position))


@settings(max_examples=50, deadline=None)
@given(st.emails())
def test_normalized_email_is_lowercase_and_stable(value: str) -> None:
    result = normalize_email(value)

    assert result == result.lower()
    assert normalize_email(result) == result
    assert normalize_email(value.upper()) == result
