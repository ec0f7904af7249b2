"""POST /auth/register: the profile it returns, identifier and field rules, uniqueness and the stored hash."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import bcrypt
import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, PROFILE_KEYS, START, Api, registration
from user_service.errors import EmailTaken, InvalidInput, UsernameTaken
from user_service.service import UserService
from user_service.validation import AVATAR_URL_MAX, FULL_NAME_MAX

KELVIN_SIGN = "\u212a"  # lowercases to ASCII "k": a classic way to smuggle a look-alike name past a check
RACERS = 8
RACE_TIMEOUT_SECONDS = 60


def user_rows(service: UserService) -> list[dict[str, Any]]:
    with service.engine.connect() as connection:
        rows = connection.execute(text("SELECT namespace, username, email, password_hash FROM users"))
        return [dict(row._mapping) for row in rows]


def stored_hash(service: UserService, namespace: str, username: str) -> str:
    with service.engine.connect() as connection:
        value = connection.execute(
            text("SELECT password_hash FROM users WHERE namespace = :ns AND username = :u"),
            {"ns": namespace, "u": username},
        ).scalar_one()
    return str(value)


def assert_unprocessable(response: Any, field: str) -> None:
    """A 422 that names the offending field, either in FastAPI's problem list or in the core's sentence."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):
        assert any(field in [str(part) for part in issue["loc"]] for issue in detail), detail
    else:
        assert field in detail


def test_register_returns_the_profile(api: Api, service: UserService) -> None:
    response = api.register(
        email="alice@example.com",
        full_name="Alice Liddell",
        avatar_url="https://example.com/alice.png",
        extra={"team": "red", "lang": "en"},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PROFILE_KEYS
    uuid.UUID(body["id"])
    assert body["namespace"] == "app-x"
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["full_name"] == "Alice Liddell"
    assert body["avatar_url"] == "https://example.com/alice.png"
    assert body["extra"] == {"team": "red", "lang": "en"}
    assert datetime.fromisoformat(body["created_at"]) == START
    assert datetime.fromisoformat(body["updated_at"]) == START


def test_register_with_only_the_required_fields(api: Api) -> None:
    response = api.register()

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PROFILE_KEYS
    assert body["email"] is None
    assert body["full_name"] is None
    assert body["avatar_url"] is None
    assert body["extra"] == {}


def test_register_response_never_contains_the_password_or_its_hash(api: Api, service: UserService) -> None:
    response = api.register(email="alice@example.com")

    assert response.status_code == 201
    password_hash = stored_hash(service, "app-x", "alice")
    assert PASSWORD not in response.text
    assert password_hash not in response.text
    assert "$2b$" not in response.text
    assert "password" not in response.text.lower()
    assert "hash" not in response.text.lower()


def test_stored_password_is_a_bcrypt_hash(api: Api, service: UserService) -> None:
    assert api.register().status_code == 201

    password_hash = stored_hash(service, "app-x", "alice")
    assert password_hash != PASSWORD
    assert PASSWORD not in password_hash
    assert password_hash.startswith("$2b$04$")
    assert len(password_hash) == 60
    assert bcrypt.checkpw(PASSWORD.encode(), password_hash.encode())
    assert not bcrypt.checkpw(b"another password", password_hash.encode())


def test_namespace_and_username_are_lowercased(api: Api, service: UserService) -> None:
    first = api.register(namespace="App-X", username="Alice")
    assert first.status_code == 201, first.text
    assert first.json()["namespace"] == "app-x"
    assert first.json()["username"] == "alice"

    for namespace, username in (("app-x", "alice"), ("APP-X", "ALICE"), ("app-x", "aLiCe")):
        again = api.register(namespace=namespace, username=username)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "username_taken"

    other = api.register(namespace="app-y", username="alice")
    assert other.status_code == 201, other.text
    assert other.json()["id"] != first.json()["id"]
    assert sorted((row["namespace"], row["username"]) for row in user_rows(service)) == [
        ("app-x", "alice"),
        ("app-y", "alice"),
    ]
    assert api.login(namespace="APP-X", username="ALICE").status_code == 200


def test_username_taken(api: Api, service: UserService) -> None:
    assert api.register().status_code == 201

    response = api.register(password="a different password", email="other@example.com")

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "username_taken"
    assert isinstance(body["detail"], str) and body["detail"]
    assert len(user_rows(service)) == 1


@pytest.mark.parametrize("second_email", ["alice@example.com", "ALICE@example.com", "Alice@EXAMPLE.COM"])
def test_email_taken_is_case_insensitive(api: Api, service: UserService, second_email: str) -> None:
    assert api.register(email="alice@example.com").status_code == 201

    response = api.register(username="bob", email=second_email)

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "email_taken"
    assert isinstance(response.json()["detail"], str)
    assert [row["username"] for row in user_rows(service)] == ["alice"]


def test_email_is_stored_lowercased(api: Api) -> None:
    response = api.register(email="Alice@Example.COM")

    assert response.status_code == 201
    assert response.json()["email"] == "alice@example.com"


def test_same_email_in_another_namespace_is_allowed(api: Api) -> None:
    assert api.register(email="alice@example.com").status_code == 201

    response = api.register(namespace="app-y", username="bob", email="alice@example.com")

    assert response.status_code == 201, response.text


def test_many_accounts_without_email(api: Api, service: UserService) -> None:
    for username in ("alice", "bob", "carol"):
        assert api.register(username=username).status_code == 201
    assert api.register(username="dave", email=None).status_code == 201

    assert len(user_rows(service)) == 4


@pytest.mark.parametrize(
    ("namespace", "stored"),
    [
        ("a", "a"),
        ("0", "0"),
        ("app-x", "app-x"),
        ("App-X-2", "app-x-2"),
        ("9-lives", "9-lives"),
        ("a-", "a-"),
        ("n" * 63, "n" * 63),
    ],
)
def test_valid_namespaces(api: Api, namespace: str, stored: str) -> None:
    response = api.register(namespace=namespace)

    assert response.status_code == 201, response.text
    assert response.json()["namespace"] == stored


@pytest.mark.parametrize(
    "namespace",
    [
        "",
        "n" * 64,
        "-app",
        "app_x",
        "app.x",
        "app x",
        " app",
        "app/x",
        "äpp",
        f"{KELVIN_SIGN}app",
        "app\x00",
        "ａｐｐ",  # noqa: RUF001 (fullwidth letters on purpose)
    ],
)
def test_invalid_namespaces(api: Api, service: UserService, namespace: str) -> None:
    assert_unprocessable(api.register(namespace=namespace), "namespace")
    assert user_rows(service) == []


@pytest.mark.parametrize(
    ("username", "stored"),
    [
        ("a", "a"),
        ("7", "7"),
        ("Alice", "alice"),
        ("a.b_c-d@e+f", "a.b_c-d@e+f"),
        ("alice@example.com", "alice@example.com"),
        ("_-.@+", "_-.@+"),
        ("U" * 64, "u" * 64),
    ],
)
def test_valid_usernames(api: Api, username: str, stored: str) -> None:
    response = api.register(username=username)

    assert response.status_code == 201, response.text
    assert response.json()["username"] == stored


@pytest.mark.parametrize(
    "username",
    [
        "",
        "u" * 65,
        "al ice",
        " alice",
        "alice!",
        "al/ice",
        "al:ice",
        "al#ice",
        "alice\x00",
        f"{KELVIN_SIGN}ate",
        "ali\u0307ce",
        "алиса",
        "ａlice",  # noqa: RUF001 (a fullwidth letter on purpose)
        "alice\u200b",
        "😀",
    ],
)
def test_invalid_usernames(api: Api, service: UserService, username: str) -> None:
    assert_unprocessable(api.register(username=username), "username")
    assert user_rows(service) == []


def test_kelvin_sign_does_not_reach_an_existing_ascii_account(api: Api) -> None:
    assert api.register(username="kate").status_code == 201

    response = api.register(username=f"{KELVIN_SIGN}ate", password="another password")

    assert_unprocessable(response, "username")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespace", 7),
        ("namespace", None),
        ("namespace", ["app-x"]),
        ("username", 42),
        ("username", True),
        ("username", None),
        ("password", 12345678),
        ("password", None),
        ("email", 1),
        ("full_name", 3.5),
        ("avatar_url", False),
    ],
)
def test_wrong_types_are_422(api: Api, service: UserService, field: str, value: Any) -> None:
    assert_unprocessable(api.register(**{field: value}), field)
    assert user_rows(service) == []


@pytest.mark.parametrize("missing", ["namespace", "username", "password"])
def test_missing_required_field_is_422(api: Api, missing: str) -> None:
    body = {"namespace": "app-x", "username": "alice", "password": PASSWORD}
    del body[missing]

    assert_unprocessable(api.client.post("/auth/register", json=body), missing)


def test_unknown_field_is_422(api: Api, service: UserService) -> None:
    response = api.register(is_admin=True)

    assert_unprocessable(response, "is_admin")
    assert user_rows(service) == []


@pytest.mark.parametrize(
    "password",
    [
        "q7x!mz0p",  # exactly the minimum length
        "ĉŝĝĥĵŭĉŝ",  # counted in characters, not bytes
        "q7x!mz0p" * 9,
        "ĉŝĝĥĵŭ" * 6,  # 72 bytes of UTF-8
        "€₩₹₽₺₴" * 4,  # 72 bytes of UTF-8
        "😀🦊🐙🦉🐝🦋" * 3,  # 72 bytes of UTF-8
    ],
)
def test_accepted_passwords_log_in(api: Api, password: str) -> None:
    assert api.register(password=password).status_code == 201

    assert api.login(password=password).status_code == 200


@pytest.mark.parametrize("password", ["", "1234567", "é" * 7, "😀" * 7])
def test_password_too_short(api: Api, service: UserService, password: str) -> None:
    response = api.register(password=password)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "password_too_short"
    assert "8" in response.json()["detail"]
    assert user_rows(service) == []


@pytest.mark.parametrize(
    "password",
    [
        "a" * 73,
        "é" * 36 + "a",  # 37 characters, 73 bytes
        "€" * 24 + "a",  # 25 characters, 73 bytes
        "😀" * 18 + "a",  # 19 characters, 73 bytes
        "é" * 1000,
    ],
)
def test_password_over_72_bytes(api: Api, service: UserService, password: str) -> None:
    response = api.register(password=password)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "password_too_long"
    assert "72 bytes" in body["detail"]
    assert user_rows(service) == []


def test_password_with_nul_is_422(api: Api, service: UserService) -> None:
    response = api.register(password="correct\x00horse battery")

    assert response.status_code == 422
    assert user_rows(service) == []


def test_extra_at_its_limits(api: Api) -> None:
    extra = {f"k{index:02d}": "v" for index in range(49)}
    extra["k" * 64] = "v" * 1024

    response = api.register(extra=extra)

    assert response.status_code == 201, response.text
    assert response.json()["extra"] == extra
    assert len(response.json()["extra"]) == 50


@pytest.mark.parametrize(
    "extra",
    [
        {f"k{index}": "v" for index in range(51)},
        {"": "v"},
        {"k" * 65: "v"},
        {"key": "v" * 1025},
        {"key": 1},
        {"key": 1.5},
        {"key": True},
        {"key": None},
        {"key": ["a"]},
        {"key": {"nested": "a"}},
        {"ok": "fine", "bad": 0},
        ["a", "b"],
        "key=value",
        7,
    ],
    ids=[
        "51-keys",
        "empty-key",
        "65-char-key",
        "1025-char-value",
        "int",
        "float",
        "bool",
        "null",
        "list",
        "object",
        "one-bad-value",
        "list-not-object",
        "string-not-object",
        "number-not-object",
    ],
)
def test_invalid_extra_is_422(api: Api, service: UserService, extra: Any) -> None:
    assert_unprocessable(api.register(extra=extra), "extra")
    assert user_rows(service) == []


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "alice@",
        "@example.com",
        "alice@@example.com",
        "alice@exa mple.com",
        "alice..b@example.com",
        "alice@localhost",
        "",
        "a" * 300 + "@example.com",
    ],
)
def test_invalid_email_is_422(api: Api, service: UserService, email: str) -> None:
    assert_unprocessable(api.register(email=email), "email")
    assert user_rows(service) == []


def test_full_name_at_its_limit(api: Api) -> None:
    response = api.register(full_name="N" * FULL_NAME_MAX)

    assert response.status_code == 201, response.text
    assert response.json()["full_name"] == "N" * FULL_NAME_MAX


@pytest.mark.parametrize("full_name", ["N" * (FULL_NAME_MAX + 1), "N" * 100_000, "Ali\x00ce"])
def test_invalid_full_name_is_422(api: Api, service: UserService, full_name: str) -> None:
    assert_unprocessable(api.register(full_name=full_name), "full_name")
    assert user_rows(service) == []


@pytest.mark.parametrize(
    "avatar_url",
    [
        "https://example.com/alice.png",
        "http://example.com/alice.png",
        "https://cdn.example.com:8443/a/b.webp?size=64#top",
        "https://example.com/" + "a" * (AVATAR_URL_MAX - len("https://example.com/")),
    ],
)
def test_valid_avatar_url(api: Api, avatar_url: str) -> None:
    response = api.register(avatar_url=avatar_url)

    assert response.status_code == 201, response.text
    assert response.json()["avatar_url"] == avatar_url


@pytest.mark.parametrize(
    "avatar_url",
    [
        "ftp://example.com/alice.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "file:///etc/passwd",
        "/uploads/alice.png",
        "example.com/alice.png",
        "https://",
        "https:///alice.png",
        "https://exa mple.com/a.png",
        "https://example.com/" + "a" * (AVATAR_URL_MAX - len("https://example.com/") + 1),
        "",
    ],
)
def test_invalid_avatar_url_is_422(api: Api, service: UserService, avatar_url: str) -> None:
    assert_unprocessable(api.register(avatar_url=avatar_url), "avatar_url")
    assert user_rows(service) == []


def _race(calls: int, action: Any) -> tuple[list[Any], list[BaseException]]:
    """Run `action` from `calls` threads released together; the results and the errors."""
    barrier = threading.Barrier(calls, timeout=RACE_TIMEOUT_SECONDS)

    def run(index: int) -> Any:
        barrier.wait()
        return action(index)

    successes: list[Any] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=calls) as pool:
        futures = [pool.submit(run, index) for index in range(calls)]
        for future in futures:
            error = future.exception(timeout=RACE_TIMEOUT_SECONDS)
            if error is None:
                successes.append(future.result())
            else:
                errors.append(error)
    return successes, errors


@pytest.mark.usefixtures("client")
def test_concurrent_registrations_of_one_username(service: UserService) -> None:
    successes, errors = _race(
        RACERS,
        lambda index: service.register(
            registration(namespace="app-x", username="Alice" if index % 2 else "alice", password=f"{PASSWORD} {index}")
        ),
    )

    assert len(successes) == 1
    assert len(errors) == RACERS - 1
    assert all(isinstance(error, UsernameTaken) for error in errors), errors
    assert [(row["namespace"], row["username"]) for row in user_rows(service)] == [("app-x", "alice")]


@pytest.mark.usefixtures("client")
def test_concurrent_registrations_of_one_email(service: UserService) -> None:
    successes, errors = _race(
        RACERS,
        lambda index: service.register(
            registration(namespace="app-x", username=f"user{index}", password=PASSWORD, email="Shared@Example.com")
        ),
    )

    assert len(successes) == 1
    assert all(isinstance(error, EmailTaken) for error in errors), errors
    assert len(errors) == RACERS - 1
    assert [row["email"] for row in user_rows(service)] == ["shared@example.com"]


@pytest.mark.usefixtures("client")
def test_registration_through_the_service_applies_the_same_rules(service: UserService) -> None:
    with pytest.raises(InvalidInput) as too_long:
        service.register(registration(namespace="app-x", username="alice", password="é" * 36 + "a"))
    assert too_long.value.code == "password_too_long"
    assert "72 bytes" in too_long.value.message

    with pytest.raises(InvalidInput) as bad_name:
        service.register(registration(namespace="app-x", username=f"{KELVIN_SIGN}ate", password=PASSWORD))
    assert "username" in bad_name.value.message

    assert user_rows(service) == []
