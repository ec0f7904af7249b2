"""The password policy, in one place for every door (HTTP, CLI) and every path (register, change, reset).

NIST SP 800-63B and OWASP ASVS: passwords are compared in Unicode normal form NFKC (so one typed in another form
still matches), a minimum length, bcrypt's 72-byte maximum, no composition rules, no common passwords, no trivial
shapes (only spaces, one or two characters repeated, a run such as `abcdefgh` or `98765432`, a short unit repeated),
and nothing built from the account's own names.
"""

from __future__ import annotations

import gzip
import unicodedata
from functools import cache
from itertools import pairwise
from pathlib import Path

from user_service.errors import ErrorCode, InvalidInput
from user_service.validation import PASSWORD_MAX_BYTES

COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "data" / "common-passwords.txt.gz"
# Names shorter than this are too likely to occur by chance inside a good password.
MIN_NAME_TO_CHECK = 3
# A password made of one unit repeated, with a unit this short or shorter, is a keyboard pattern, not a secret.
MAX_REPEATED_UNIT = 4


def normalize_password(password: str) -> str:
    """The form passwords are checked and hashed in (NIST SP 800-63B 5.1.1.2: NFKC)."""
    return unicodedata.normalize("NFKC", password)


def _trivial_shape(password: str) -> str | None:
    """Why the password's shape makes it guessable whatever its length, or None."""
    if not password.strip():
        return "password must not be only spaces"
    lowered = password.lower()
    if len(set(lowered)) <= 2:
        return "password must use more than two different characters"
    steps = {ord(b) - ord(a) for a, b in pairwise(lowered)}
    if steps in ({1}, {-1}):
        return "password must not be a run of consecutive characters such as abcdefgh or 98765432"
    for size in range(1, MAX_REPEATED_UNIT + 1):
        if len(lowered) % size == 0 and lowered == lowered[:size] * (len(lowered) // size):
            return "password must not be a few characters repeated"
    return None


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())


def check_password_policy(
    password: str,
    *,
    min_length: int,
    username: str | None = None,
    email: str | None = None,
    namespace: str | None = None,
) -> None:
    """Raise InvalidInput, with a code naming the rule, when the password (in NFKC) breaks the policy."""
    if not isinstance(password, str):
        raise InvalidInput("password must be a string", code=ErrorCode.INVALID_INPUT)
    if "\x00" in password:
        raise InvalidInput("password must not contain NUL characters", code=ErrorCode.PASSWORD_INVALID)
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("password must be valid Unicode text", code=ErrorCode.PASSWORD_INVALID) from None
    password = normalize_password(password)
    size = len(password.encode("utf-8"))
    if len(password) < min_length:
        raise InvalidInput(f"password must be at least {min_length} characters", code=ErrorCode.PASSWORD_TOO_SHORT)
    if size > PASSWORD_MAX_BYTES:
        # bcrypt reads only 72 bytes; silently ignoring the rest would let a longer password match a shorter one.
        raise InvalidInput(
            f"password must be at most {PASSWORD_MAX_BYTES} bytes of UTF-8 (this one is {size})",
            code=ErrorCode.PASSWORD_TOO_LONG,
        )
    shape = _trivial_shape(password)
    if shape is not None:
        raise InvalidInput(shape, code=ErrorCode.PASSWORD_TOO_SIMPLE)
    lowered = password.lower()
    if lowered in common_passwords():
        raise InvalidInput(
            "password is too common: it is on a list of passwords attackers try first",
            code=ErrorCode.PASSWORD_TOO_COMMON,
        )
    names = [
        ("username", username, ErrorCode.PASSWORD_CONTAINS_USERNAME),
        ("email address", email.partition("@")[0] if email else None, ErrorCode.PASSWORD_CONTAINS_EMAIL),
        ("namespace", namespace, ErrorCode.PASSWORD_CONTAINS_NAMESPACE),
    ]
    for label, name, code in names:
        if name and len(name) >= MIN_NAME_TO_CHECK and name.lower() in lowered:
            raise InvalidInput(f"password must not contain the {label}", code=code)
