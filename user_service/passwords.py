"""The password policy, in one place for every door (HTTP, CLI) and every path (register, change, reset).

NIST SP 800-63B and OWASP ASVS: a minimum length, bcrypt's 72-byte maximum, no composition rules, no common
passwords, and nothing built from the account's own names.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from user_service.errors import ErrorCode, InvalidInput
from user_service.validation import PASSWORD_MAX_BYTES

COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "data" / "common-passwords.txt.gz"
# Names shorter than this are too likely to occur by chance inside a good password.
MIN_NAME_TO_CHECK = 3


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())


def check_password_policy(
    password: str, *, min_length: int, username: str | None = None, email: str | None = None
) -> None:
    """Raise InvalidInput, with a code naming the rule, when the password breaks the policy."""
    if not isinstance(password, str):
        raise InvalidInput("password must be a string", code=ErrorCode.INVALID_INPUT)
    if "\x00" in password:
        raise InvalidInput("password must not contain NUL characters", code=ErrorCode.PASSWORD_INVALID)
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("password must be valid Unicode text", code=ErrorCode.PASSWORD_INVALID) from None
    if len(password) < min_length:
        raise InvalidInput(f"password must be at least {min_length} characters", code=ErrorCode.PASSWORD_TOO_SHORT)
    if size > PASSWORD_MAX_BYTES:
        # bcrypt reads only 72 bytes; silently ignoring the rest would let a longer password match a shorter one.
        raise InvalidInput(
            f"password must be at most {PASSWORD_MAX_BYTES} bytes of UTF-8 (this one is {size})",
            code=ErrorCode.PASSWORD_TOO_LONG,
        )
    lowered = password.lower()
    if lowered in common_passwords():
        raise InvalidInput(
            "password is too common: it is on a list of passwords attackers try first",
            code=ErrorCode.PASSWORD_TOO_COMMON,
        )
    names = [
        ("username", username, ErrorCode.PASSWORD_CONTAINS_USERNAME),
        ("email address", email.partition("@")[0] if email else None, ErrorCode.PASSWORD_CONTAINS_EMAIL),
    ]
    for label, name, code in names:
        if name and len(name) >= MIN_NAME_TO_CHECK and name.lower() in lowered:
            raise InvalidInput(f"password must not contain the {label}", code=code)
