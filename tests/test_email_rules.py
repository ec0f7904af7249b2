"""Email addresses are checked by email-validator at every door; the service lets it remember the domains it has
checked (an import brings a few domains many times), which must not change a single answer."""

from __future__ import annotations

import sys

import pytest
from email_validator import EmailNotValidError, validate_email

from user_service.validation import normalize_email

ADDRESSES = [
    "Alice@Example.COM",
    "bob@example.com",
    "carol@münchen.de",
    "dave@MÜNCHEN.DE",
    "eve@xn--mnchen-3ya.de",
    "frank@localhost",
    "grace@example.invalid",
    "heidi@-bad-.com",
    "ivan@example",
    "judy@sub.example.co.uk",
    '"quoted"@example.com',
    "Name <mallory@example.com>",
    "oscar@[127.0.0.1]",
    "peggy@exa_mple.com",
    "trent@" + "a" * 64 + ".com",
]


def library_answer(address: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """email-validator's answer without the remembered domains."""
    module = sys.modules["email_validator.validate_email"]
    with monkeypatch.context() as patched:
        patched.setattr(module, "validate_email_domain_name", module.validate_email_domain_name.__wrapped__)
        return _validated(address)


def _validated(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return f"refused: {exc}"


def service_answer(address: str) -> str:
    try:
        return normalize_email(address)
    except ValueError as exc:
        return f"refused: {str(exc).removeprefix('email is not valid: ')}"


@pytest.mark.parametrize("rounds", [1, 3])
def test_remembered_domains_give_email_validators_own_answers(rounds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked again and again (the second time from what was remembered), each address gets the answer
    email-validator gives it, valid or refused."""
    expected = {address: library_answer(address, monkeypatch) for address in ADDRESSES}

    for _ in range(rounds):
        assert {address: service_answer(address) for address in ADDRESSES} == expected
    assert sum(answer.startswith("refused") for answer in expected.values()) >= 6


def test_a_remembered_domain_answer_is_a_copy_the_caller_cannot_spoil() -> None:
    check = sys.modules["email_validator.validate_email"].validate_email_domain_name
    first = check("example.org", test_environment=False, globally_deliverable=True)
    first["domain"] = "spoiled.example"

    assert check("example.org", test_environment=False, globally_deliverable=True)["domain"] == "example.org"
    assert normalize_email("zoe@example.org") == "zoe@example.org"
