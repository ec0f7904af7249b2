"""The password policy, in one place for every door (HTTP, CLI): length in characters and in bcrypt's bytes."""

from __future__ import annotations

from user_service.errors import InvalidInput
from user_service.validation import PASSWORD_MAX_BYTES


def check_password_policy(password: str, *, min_length: int) -> None:
    """Raise InvalidInput (with a code naming the rule) when the password breaks the policy."""
    if not isinstance(password, str):
        raise InvalidInput("password must be a string", code="invalid_input")
    if "\x00" in password:
        raise InvalidInput("password must not contain NUL characters", code="password_invalid")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("password must be valid Unicode text", code="password_invalid") from None
    if len(password) < min_length:
        raise InvalidInput(f"password must be at least {min_length} characters", code="password_too_short")
    if size > PASSWORD_MAX_BYTES:
        # bcrypt reads only 72 bytes; silently ignoring the rest would let a longer password match a shorter one.
        raise InvalidInput(
            f"password must be at most {PASSWORD_MAX_BYTES} bytes of UTF-8 (this one is {size})",
            code="password_too_long",
        )
