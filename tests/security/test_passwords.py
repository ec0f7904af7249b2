"""Password rules (ASVS 5.0 V6.2, NIST SP 800-63B 5.1.1.2) at every door that sets a password, and hash upgrades."""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, WRONG, Api, Cli, MakeApi, assert_invalid_credentials, bearer, user_row
from tests.helpers import assert_error, one_line_error
from user_service.passwords import COMMON_PASSWORDS_FILE
from user_service.service import UserService

NEW_PASSWORD = "velvet quartz harbor"
USERNAME = "margarethe"
EMAIL = "kestrel.flight@example.com"
ACCOUNT = {"username": USERNAME, "email": EMAIL}

# One password per rule, each breaking only that rule for ACCOUNT: (password, code, words the message must hold).
RULES = {
    "too-short": ("zq7-vkw", "password_too_short", "at least 8 characters"),
    "over-72-bytes": ("é" * 36 + "x", "password_too_long", "at most 72 bytes"),
    "common": ("ILoveYou", "password_too_common", "too common"),
    "contains-username": ("Margarethe-1984", "password_contains_username", "must not contain the username"),
    "contains-email-local-part": (
        "my kestrel.flight pw",
        "password_contains_email",
        "must not contain the email address",
    ),
    "contains-namespace": ("my app-x secret 42", "password_contains_namespace", "must not contain the namespace"),
    "trivial-shape": ("abcdefghijk", "password_too_simple", "run of consecutive characters"),
}


def assert_rule_broken(response: Any, code: str, phrase: str) -> str:
    """A 422 naming the broken rule by its code and in words; returns the sentence."""
    body = assert_error(response, 422, code)
    assert phrase in body["detail"]
    detail: str = body["detail"]
    return detail


def change_password(api: Api, access_token: str, current: str, new: str) -> Any:
    return api.client.post(
        "/users/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


def shipped_common_passwords() -> list[str]:
    """The shipped list, read straight from the package data rather than through the code under test."""
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def common_samples() -> list[str]:
    """A fixed sample of listed passwords that break no other rule, so only the list can refuse them."""
    eligible = sorted(
        word
        for word in shipped_common_passwords()
        if len(word) >= 8 and len(word.encode()) <= 72 and word.lower() != word.upper() and "alice" not in word
    )
    return random.Random(6240).sample(eligible, 6)


# -- 6.2.1 minimum length -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "accepted"),
    [("zq7-vkw", False), ("zq7-vkw-h", True), ("ĉŝĝĥĵŭĉ", False), ("ĉŝĝĥĵŭĉŝ", True)],
    ids=["7-ascii", "8-ascii", "7-two-byte", "8-two-byte"],
)
def test_minimum_length_is_eight_characters(api: Api, password: str, accepted: bool) -> None:
    """ASVS 5.0 6.2.1 (NIST SP 800-63B 5.1.1.2): at least 8 characters, each Unicode code point counting as one."""
    response = api.register(password=password)

    if accepted:
        assert response.status_code == 201, response.text
        assert api.login(password=password).status_code == 200
    else:
        assert_rule_broken(response, "password_too_short", "at least 8 characters")
        assert_invalid_credentials(api.login(password=password))


def test_minimum_length_setting_is_honoured(make_api: MakeApi, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """ASVS 5.0 6.2.1: PASSWORD_MIN_LENGTH raises the minimum at the HTTP API and in the CLI alike."""
    monkeypatch.setenv("PASSWORD_MIN_LENGTH", "12")  # the CLI runs in this process and reads it too
    api = make_api()
    eleven, twelve = "fjord-lantn", "fjord-lantrn"

    assert_rule_broken(api.register(password=eleven), "password_too_short", "at least 12 characters")
    result = cli("create-user", "app-x", "bob", "--password-stdin", input=eleven + "\n")
    assert "at least 12 characters" in one_line_error(result)
    assert result.stdout == ""

    assert api.register(password=twelve).status_code == 201
    assert cli("create-user", "app-x", "bob", "--password-stdin", input=twelve + "\n").exit_code == 0
    assert api.login(username="bob", password=twelve).status_code == 200


# -- 6.2.8 / 6.2.9 maximum length ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [("mauve otter meadow " * 4)[:64], ("fjord lantern nine " * 4)[:72], "ĉŝĝĥĵŭ" * 6, "🦊🐙🦉🐝🦋🐢" * 3],
    ids=["64-chars", "72-ascii-bytes", "72-bytes-two-byte", "72-bytes-four-byte"],
)
def test_passwords_up_to_72_bytes_are_accepted(api: Api, password: str) -> None:
    """ASVS 5.0 6.2.9: passwords of at least 64 characters are permitted (here: anything up to bcrypt's 72 bytes)."""
    assert api.register(password=password).status_code == 201

    assert api.login(password=password).status_code == 200


@pytest.mark.parametrize(
    "password",
    [("fjord lantern nine " * 4)[:73], "é" * 36 + "x", "🦊" * 18 + "x", "mauve otter meadow " * 10],
    ids=["73-ascii-bytes", "73-bytes-two-byte", "73-bytes-four-byte", "190-bytes"],
)
def test_passwords_over_72_bytes_are_refused_not_truncated(api: Api, password: str) -> None:
    """ASVS 5.0 6.2.8: a password over bcrypt's 72 bytes is refused, never silently cut to its first 72 bytes."""
    detail = assert_rule_broken(api.register(password=password), "password_too_long", "at most 72 bytes")

    assert str(len(password.encode())) in detail
    truncated = password.encode()[:72].decode(errors="ignore")
    assert_invalid_credentials(api.login(password=truncated))
    assert_invalid_credentials(api.login(password=password))


@pytest.mark.parametrize(
    "variant",
    [PASSWORD.upper(), PASSWORD.title(), PASSWORD + " ", " " + PASSWORD, PASSWORD[:-1], PASSWORD.replace(" ", "")],
    ids=["upper", "title", "trailing-space", "leading-space", "last-char-cut", "spaces-removed"],
)
def test_password_is_checked_exactly_as_given(api: Api, variant: str) -> None:
    """ASVS 5.0 6.2.8: the password is verified exactly as received: no case folding, trimming or truncation."""
    assert api.register().status_code == 201

    assert_invalid_credentials(api.login(password=variant))
    assert api.login().status_code == 200


@pytest.mark.parametrize(
    ("password", "phrase"),
    [
        (" " * 12, "only spaces"),
        ("\u3000\t " * 4, "only spaces"),
        ("zzzzzzzzzzzz", "more than two different characters"),
        ("abababababab", "more than two different characters"),
        ("abcdefghijklmn", "run of consecutive characters"),
        ("98765432", "run of consecutive characters"),
        ("abc1abc1abc1", "a few characters repeated"),
    ],
    ids=["spaces", "unicode-spaces", "one-character", "two-characters", "run-up", "run-down", "repeated-unit"],
)
def test_trivial_shapes_are_refused(api: Api, password: str, phrase: str) -> None:
    """ASVS 5.0 6.2.4 and NIST SP 800-63B 5.1.1.2 (repetitive or sequential characters): a shape no length saves."""
    assert_rule_broken(api.register(password=password), "password_too_simple", phrase)


COMPOSED, DECOMPOSED = "caf\u00e9 au lait s\u00fbr", "cafe\u0301 au lait su\u0302r"


@pytest.mark.parametrize(
    ("registered", "typed"),
    [(COMPOSED, DECOMPOSED), (DECOMPOSED, COMPOSED), ("\uff50\uff41\uff53\uff53 word 42!", "pass word 42!")],
    ids=["nfc-then-nfd", "nfd-then-nfc", "full-width"],
)
def test_a_password_typed_in_another_unicode_form_matches(api: Api, registered: str, typed: str) -> None:
    """NIST SP 800-63B 5.1.1.2: passwords are normalized (NFKC) before hashing and checking."""
    assert api.register(password=registered).status_code == 201

    assert api.login(password=typed).status_code == 200
    assert api.login(password=registered).status_code == 200


def test_a_hash_made_before_normalization_still_matches_and_is_replaced(api: Api, service: UserService) -> None:
    """An account whose hash was made of the password as typed (before passwords were normalized) logs in with it,
    and the login stores the hash of the normal form, so the other forms match from then on."""
    assert api.register(password=COMPOSED).status_code == 201
    legacy = bcrypt.hashpw(DECOMPOSED.encode(), bcrypt.gensalt(4)).decode()
    with service.engine.begin() as connection:
        connection.execute(text("UPDATE users SET password_hash = :h WHERE username = 'alice'"), {"h": legacy})

    assert api.login(password=DECOMPOSED).status_code == 200

    assert user_row(service)["password_hash"] != legacy
    assert api.login(password=COMPOSED).status_code == 200
    assert api.login(password=DECOMPOSED).status_code == 200


# -- 6.2.5 no composition rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "purple monkey dishwasher lamp",
        "mauvelanternquartzharbor",
        "80629157341098",
        "pässwörter für alle",
        "fox in socks 🧦🦊",
        "   fox  in  socks   ",
    ],
    ids=["lowercase-passphrase", "lowercase-no-spaces", "digits-only", "accents", "emoji", "mostly-spaces"],
)
def test_no_composition_rules(api: Api, password: str) -> None:
    """ASVS 5.0 6.2.5 (4.0.3 2.1.9): any composition is accepted; no upper case, digit or symbol is demanded."""
    assert api.register(password=password).status_code == 201

    assert api.login(password=password).status_code == 200


# -- 6.2.4 common passwords ---------------------------------------------------------------------------------------


def test_the_shipped_list_holds_at_least_ten_thousand_passwords() -> None:
    """ASVS 5.0 6.2.4: the list checked against holds at least the top 3000 (here: the 10,000 the contract asks)."""
    words = shipped_common_passwords()

    assert len(set(words)) >= 10_000
    assert {"password", "123456789", "iloveyou", "qwertyuiop"} <= {word.lower() for word in words}


@pytest.mark.parametrize("case", [str, str.upper, str.swapcase], ids=["as-listed", "upper", "swapped"])
def test_common_passwords_are_refused_whatever_their_case(api: Api, case: Callable[[str], str]) -> None:
    """ASVS 5.0 6.2.4: a password on the shipped common-passwords list is refused, compared case-insensitively."""
    for word in common_samples():
        password = case(word)

        response = api.register(password=password)

        assert response.status_code == 422, f"{password!r} was accepted"
        assert_rule_broken(response, "password_too_common", "too common")
    assert api.register(password=NEW_PASSWORD).status_code == 201


# -- 6.2.11 context-specific words --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "phrase"),
    [
        ("margarethe", "the username"),
        ("MARGARETHE", "the username"),
        ("ilovemargarethe!", "the username"),
        ("kestrel.flight", "the email address"),
        ("KESTREL.FLIGHT rules", "the email address"),
    ],
    ids=["equals-username", "username-other-case", "contains-username", "equals-local-part", "contains-local-part"],
)
def test_password_built_from_the_account_names_is_refused(api: Api, password: str, phrase: str) -> None:
    """ASVS 5.0 6.2.11: a password equal to or containing the username or the email's local part is refused."""
    response = api.register(**ACCOUNT, password=password)

    code = "password_contains_email" if phrase == "the email address" else "password_contains_username"
    assert_rule_broken(response, code, f"must not contain {phrase}")
    assert_invalid_credentials(api.login(username=USERNAME, password=password))


def test_names_of_other_accounts_are_not_refused(api: Api) -> None:
    """ASVS 5.0 6.2.11: the check is about this account's own names, not every name in the namespace."""
    assert api.register(**ACCOUNT).status_code == 201

    response = api.register(username="bob", password="margarethe kestrel.flight")

    assert response.status_code == 201, response.text


# -- the same rules at every door ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "code", "phrase"), RULES.values(), ids=RULES.keys())
def test_rules_apply_at_register(api: Api, password: str, code: str, phrase: str) -> None:
    """ASVS 5.0 6.2.1, 6.2.4, 6.2.8, 6.2.11: registration refuses each broken rule with its code and message."""
    assert_rule_broken(api.register(**ACCOUNT, password=password), code, phrase)

    assert_invalid_credentials(api.login(username=USERNAME, password=password))


@pytest.mark.parametrize(("password", "code", "phrase"), RULES.values(), ids=RULES.keys())
def test_rules_apply_at_password_change(api: Api, password: str, code: str, phrase: str) -> None:
    """ASVS 5.0 6.2.1, 6.2.4, 6.2.8, 6.2.11: POST /users/me/password refuses each broken rule; nothing changes."""
    pair = api.tokens(**ACCOUNT)

    assert_rule_broken(change_password(api, pair["access_token"], PASSWORD, password), code, phrase)

    assert api.me(pair["access_token"]).status_code == 200
    assert_invalid_credentials(api.login(username=USERNAME, password=password))
    assert api.login(username=USERNAME).status_code == 200


@pytest.mark.parametrize(("password", "code", "phrase"), RULES.values(), ids=RULES.keys())
def test_rules_apply_at_cli_create_user_with_the_http_message(
    api: Api, cli: Cli, password: str, code: str, phrase: str
) -> None:
    """ASVS 5.0 6.2.1, 6.2.4, 6.2.8, 6.2.11: `create-user` exits 1 with the very message the HTTP API gives."""
    detail = assert_rule_broken(api.register(**ACCOUNT, password=password), code, phrase)

    result = cli("create-user", "app-x", USERNAME, "--email", EMAIL, "--password-stdin", input=password + "\n")

    assert one_line_error(result) == f"error: {detail}"
    assert result.stdout == ""
    assert_invalid_credentials(api.login(username=USERNAME, password=password))


@pytest.mark.parametrize(("password", "code", "phrase"), RULES.values(), ids=RULES.keys())
def test_rules_apply_at_cli_set_password_with_the_http_message(
    api: Api, cli: Cli, password: str, code: str, phrase: str
) -> None:
    """ASVS 5.0 6.2.1, 6.2.4, 6.2.8, 6.2.11: `set-password` exits 1 with the HTTP message; the password stays."""
    pair = api.tokens(**ACCOUNT)
    detail = assert_rule_broken(change_password(api, pair["access_token"], PASSWORD, password), code, phrase)

    result = cli("set-password", "app-x", USERNAME, "--password-stdin", input=password + "\n")

    assert one_line_error(result) == f"error: {detail}"
    assert result.stdout == ""
    assert_invalid_credentials(api.login(username=USERNAME, password=password))
    assert api.login(username=USERNAME).status_code == 200
    assert api.me(pair["access_token"]).status_code == 200


def test_cli_set_password_with_a_good_password(api: Api, cli: Cli) -> None:
    """ASVS 5.0 7.4.3: an operator's `set-password` sets the new password and ends every session of the user."""
    pair = api.tokens(**ACCOUNT)

    result = cli("set-password", "app-x", USERNAME, "--password-stdin", input=NEW_PASSWORD + "\n")

    assert result.exit_code == 0, result.output
    assert api.login(username=USERNAME, password=NEW_PASSWORD).status_code == 200
    assert_invalid_credentials(api.login(username=USERNAME))
    assert api.me(pair["access_token"]).status_code == 401
    assert api.refresh(pair["refresh_token"]).status_code == 401


# -- 6.2.2 / 6.2.3 changing the password --------------------------------------------------------------------------


def test_password_change_requires_the_current_password(api: Api) -> None:
    """ASVS 5.0 6.2.3 (4.0.3 2.1.6): changing the password needs the current one; a wrong one is 401 and changes
    nothing."""
    token = api.tokens()["access_token"]

    wrong = change_password(api, token, WRONG, NEW_PASSWORD)
    missing = api.client.post("/users/me/password", json={"new_password": NEW_PASSWORD}, headers=bearer(token))

    assert_invalid_credentials(wrong)
    assert missing.status_code == 422, missing.text
    assert api.login().status_code == 200
    assert_invalid_credentials(api.login(password=NEW_PASSWORD))


def test_password_change_with_the_current_password(api: Api) -> None:
    """ASVS 5.0 6.2.2: a user can change their password; the new one logs in and the old one no longer does."""
    token = api.tokens()["access_token"]

    response = change_password(api, token, PASSWORD, NEW_PASSWORD)

    assert response.status_code == 200, response.text
    assert set(response.json()) == {"access_token", "refresh_token", "token_type", "expires_in", "expires_at"}
    assert response.headers["Cache-Control"] == "no-store"
    assert api.login(password=NEW_PASSWORD).status_code == 200
    assert_invalid_credentials(api.login())


# -- 11.4.2 hash cost ---------------------------------------------------------------------------------------------


def test_login_rehashes_with_the_configured_cost(api: Api, make_api: MakeApi, service: UserService) -> None:
    """ASVS 5.0 11.4.2 (4.0.3 2.4.4): when BCRYPT_ROUNDS is raised, the hash is upgraded at the next successful
    login, and only then."""
    assert api.register().status_code == 201
    assert user_row(service)["password_hash"].startswith("$2b$04$")
    stronger = make_api(bcrypt_rounds=5)

    assert_invalid_credentials(stronger.login(password=WRONG))
    assert user_row(service)["password_hash"].startswith("$2b$04$")

    assert stronger.login().status_code == 200
    upgraded = user_row(service)["password_hash"]
    assert upgraded.startswith("$2b$05$")
    assert bcrypt.checkpw(PASSWORD.encode(), upgraded.encode())

    assert stronger.login().status_code == 200
    assert user_row(service)["password_hash"] == upgraded
    assert api.login().status_code == 200


@pytest.mark.usefixtures("client")
def test_password_change_hashes_at_the_configured_cost(make_api: MakeApi, service: UserService) -> None:
    """ASVS 5.0 11.4.2: a changed password is stored with the configured bcrypt cost."""
    api = make_api(bcrypt_rounds=5)
    token = api.tokens()["access_token"]

    assert change_password(api, token, PASSWORD, NEW_PASSWORD).status_code == 200

    stored = user_row(service)["password_hash"]
    assert stored.startswith("$2b$05$")
    assert bcrypt.checkpw(NEW_PASSWORD.encode(), stored.encode())
