"""Email addresses are checked by email-validator at every door; the service lets it remember the domains it has
checked (an import brings a few domains many times), and answers plain ASCII addresses without the library's parse
of the whole address, neither of which may change a single answer."""

from __future__ import annotations

import sys

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
    # Local parts at the edge of the plain form: dots, the characters it allows and those it leaves to the library.
    "first.last+tag@example.com",
    "a_b-c@example.com",
    ".leading@example.com",
    "trailing.@example.com",
    "double..dot@example.com",
    "o'brien@example.com",
    "x!#$%&*/=?^`{|}~@example.com",
    "two@at@example.com",
    "@example.com",
    "nobody@",
    "postmaster@example.com",
    "PostMaster@Example.com",
    "l" * 64 + "@example.com",
    "l" * 65 + "@example.com",
    "l" * 64 + "@" + ".".join(["d" * 60] * 3) + ".com",
    "l" * 60 + "@" + ".".join(["d" * 60] * 3) + ".com",
    "ünïcode@example.com",
    "a@example.com.",
    "a@EXAMPLE.com",
    "a@exa\u0338mple.com",
    "a@\u0338example.com",
    " spaced@example.com",
    "spaced@example.com ",
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


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="aZ09._+-'!\"@<> ü\u0338", max_size=12),
    st.sampled_from(["example.com", "EXAMPLE.org", "localhost", "münchen.de", "xn--mnchen-3ya.de", "ex..com", ""]),
)
@example("a.b", "example.com")
@example("a@b", "example.com")
def test_every_address_gets_email_validators_answer(local: str, domain: str) -> None:
    """Whatever the text before and after the @, the service answers as email-validator does."""
    address = f"{local}@{domain}"

    assert service_answer(address) == _validated(address)
