"""Field rules shared by the HTTP schemas and the core, so that every door applies the same ones.

Each rule is a plain function raising ValueError with a sentence a user can act on, wrapped in an Annotated type
that also documents the rule in the OpenAPI schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, StrictStr, WithJsonSchema

NAMESPACE_MAX = 63
USERNAME_MAX = 64
EMAIL_MAX = 320
FULL_NAME_MAX = 200
AVATAR_URL_MAX = 2048
EXTRA_MAX_KEYS = 50
EXTRA_KEY_MAX = 64
EXTRA_VALUE_MAX = 1024
PASSWORD_MAX_BYTES = 72

NAMESPACE_PATTERN = "^[a-z0-9][a-z0-9-]*$"
USERNAME_PATTERN = "^[a-z0-9._@+-]+$"
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_USERNAME_RE = re.compile(r"[A-Za-z0-9._@+-]+")


def require_str(value: Any) -> Any:
    """Refuse numbers, booleans and other non-strings instead of coercing them."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def clean_text(value: str) -> str:
    """Refuse text that no database can store faithfully: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def normalize_namespace(value: str) -> str:
    if not 1 <= len(value) <= NAMESPACE_MAX or not _NAMESPACE_RE.fullmatch(value):
        raise ValueError(
            f"namespace must be 1-{NAMESPACE_MAX} characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return value.lower()


def normalize_username(value: str) -> str:
    if not 1 <= len(value) <= USERNAME_MAX or not _USERNAME_RE.fullmatch(value):
        raise ValueError(f"username must be 1-{USERNAME_MAX} characters of ASCII letters, digits and . _ - @ +")
    return value.lower()


def normalize_email(value: str) -> str:
    if len(value) > EMAIL_MAX:
        raise ValueError(f"email must be at most {EMAIL_MAX} characters")
    try:
        result = validate_email(clean_text(value), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"email is not valid: {exc}") from None
    # Addresses are compared case-insensitively: two accounts must not differ by case alone.
    return result.normalized.lower()


def check_full_name(value: str) -> str:
    if len(value) > FULL_NAME_MAX:
        raise ValueError(f"full_name must be at most {FULL_NAME_MAX} characters")
    return clean_text(value)


def check_avatar_url(value: str) -> str:
    if len(value) > AVATAR_URL_MAX:
        raise ValueError(f"avatar_url must be at most {AVATAR_URL_MAX} characters")
    clean_text(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("avatar_url must be an http or https URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("avatar_url must be an http or https URL")
    return value


def check_extra_key(value: str) -> str:
    if not 1 <= len(value) <= EXTRA_KEY_MAX:
        raise ValueError(f"extra keys must be 1-{EXTRA_KEY_MAX} characters")
    return clean_text(value)


def check_extra_value(value: str) -> str:
    if len(value) > EXTRA_VALUE_MAX:
        raise ValueError(f"extra values must be at most {EXTRA_VALUE_MAX} characters")
    return clean_text(value)


def check_extra_size(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > EXTRA_MAX_KEYS:
        raise ValueError(f"extra may hold at most {EXTRA_MAX_KEYS} keys")
    return value


def _string(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


Namespace = Annotated[
    str,
    BeforeValidator(require_str),
    AfterValidator(normalize_namespace),
    _string(
        minLength=1,
        maxLength=NAMESPACE_MAX,
        pattern=NAMESPACE_PATTERN,
        description="Tenant namespace; lowercased.",
        examples=["my-app"],
    ),
]
Username = Annotated[
    str,
    BeforeValidator(require_str),
    AfterValidator(normalize_username),
    _string(
        minLength=1,
        maxLength=USERNAME_MAX,
        pattern=USERNAME_PATTERN,
        description="Unique within its namespace; lowercased.",
        examples=["alice"],
    ),
]
Email = Annotated[
    str,
    BeforeValidator(require_str),
    AfterValidator(normalize_email),
    _string(format="email", maxLength=EMAIL_MAX, examples=["alice@example.com"]),
]
FullName = Annotated[
    str, BeforeValidator(require_str), AfterValidator(check_full_name), _string(maxLength=FULL_NAME_MAX)
]
AvatarUrl = Annotated[
    str,
    BeforeValidator(require_str),
    AfterValidator(check_avatar_url),
    _string(format="uri", maxLength=AVATAR_URL_MAX, description="An http(s) URL."),
]
ExtraKey = Annotated[StrictStr, AfterValidator(check_extra_key), Field(max_length=EXTRA_KEY_MAX)]
ExtraValue = Annotated[StrictStr, AfterValidator(check_extra_value), Field(max_length=EXTRA_VALUE_MAX)]
Extra = Annotated[
    dict[ExtraKey, ExtraValue],
    AfterValidator(check_extra_size),
    Field(max_length=EXTRA_MAX_KEYS, description="String-to-string map, at most 50 keys."),
]
# A merge patch of `extra`: a key set to null is removed. Twice the key limit lets one patch remove every key
# and set as many new ones; the merged result is checked against the limit again.
ExtraPatch = Annotated[
    dict[ExtraKey, ExtraValue | None],
    Field(max_length=2 * EXTRA_MAX_KEYS, description="Keys set to null are removed; others are set."),
]
Password = Annotated[StrictStr, Field(description="At least 8 characters and at most 72 bytes of UTF-8.")]
