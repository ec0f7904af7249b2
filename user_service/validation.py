"""Field rules shared by the HTTP schemas and the core, so that every door applies the same ones, and the one way
validation errors become the project's error.

Each rule is a plain function raising ValueError with a sentence a user can act on (or, for a rule with a code of its
own, a PydanticCustomError whose type is that code), wrapped in an Annotated type that also documents the rule in the
OpenAPI schema. `parse_input` turns a model's validation errors into `InvalidInput`, and `describe_errors` words
them, for the HTTP door, the CLI and the settings alike.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import email_validator
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StrictStr, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from user_service.errors import ErrorCode, InvalidInput

ModelT = TypeVar("ModelT", bound=BaseModel)

NAMESPACE_MAX = 63
USERNAME_MAX = 64
EMAIL_MAX = 320
FULL_NAME_MAX = 200
AVATAR_URL_MAX = 2048
EXTRA_MAX_KEYS = 50
EXTRA_KEY_MAX = 64
EXTRA_VALUE_MAX = 1024
PASSWORD_MAX_BYTES = 72

# bcrypt hashes as other systems write them: `$2a$` (passlib, Spring, Go's x/crypto), `$2b$` (this service, OpenBSD
# since 2014) and `$2y$` (PHP's password_hash, Keycloak's bcrypt plugin); cost 04 to 31, then 22 characters of salt
# and 31 of checksum in bcrypt's base64 alphabet.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_FORMATS = "bcrypt ($2a$, $2b$ or $2y$, cost 04 to 31)"
# In the form of a bcrypt hash, so the API takes it, and plainly no hash of anything.
EXAMPLE_BCRYPT_HASH = "$2b$12$ExampleSaltExampleSaltExampleDigestExampleDigestExamp"
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_USERNAME_RE = re.compile(r"[A-Za-z0-9._@+-]+")
# What the schema documents is what the server accepts (it lowercases "Alice"), from the same expressions.
NAMESPACE_PATTERN = f"^{_NAMESPACE_RE.pattern}$"
USERNAME_PATTERN = f"^{_USERNAME_RE.pattern}$"


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


# The module whose name for the domain check validate_email calls (and the service, through it, remembers).
_EMAIL_MODULE: Any = importlib.import_module("email_validator.validate_email")


def _remember_domain_checks() -> None:
    """Let email-validator remember the domains it has checked. Checking a domain (IDNA and UTS #46, character by
    character) is most of the time of checking an address, and an import of a million users brings a few domains a
    million times. The check is a pure function of its arguments, so remembering it changes no answer; it is
    wrapped once, in the module that calls it, and hands out a copy of what it remembers."""
    module = _EMAIL_MODULE
    check = getattr(module, "validate_email_domain_name")  # noqa: B009 (mypy does not see the module's names)
    if getattr(check, "__wrapped__", None) is not None:
        return
    remembered = functools.lru_cache(maxsize=4096)(check)

    @functools.wraps(check)
    def checked_domain(domain: str, **options: Any) -> dict[str, Any]:
        return dict(remembered(domain, **options))

    setattr(module, "validate_email_domain_name", checked_domain)  # noqa: B010 (an attribute of another module)


_remember_domain_checks()


# The local part most addresses have: ASCII letters, digits and _ + - in dot-separated runs, which email-validator
# accepts as it is (a dot-atom, no quoting, nothing for Unicode normalization to change).
_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_LOCAL_PART_MAX = 64
_ADDRESS_MAX = 254


def _plain_address(value: str) -> str | None:
    """The normalized form email-validator gives an ASCII address with a plain local part, found without its
    character-by-character parse of the whole address (most of the time of checking one, and an import checks a
    million): the domain gets the library's own (remembered) check. None for anything else, and for any address the
    library would refuse, so that the library itself answers those, with its own reasons."""
    local, at, domain = value.partition("@")
    if not (at and value.isascii() and len(value) <= _ADDRESS_MAX and len(local) <= _LOCAL_PART_MAX):
        return None
    if "@" in domain or not _PLAIN_LOCAL_PART.fullmatch(local):
        return None
    try:
        checked = _EMAIL_MODULE.validate_email_domain_name(
            domain,
            test_environment=email_validator.TEST_ENVIRONMENT,
            globally_deliverable=email_validator.GLOBALLY_DELIVERABLE,
        )
    except EmailNotValidError:
        return None
    normalized = f"{local}@{checked['domain']}"
    if max(len(normalized.encode()), len(local) + 1 + len(checked["ascii_domain"])) > _ADDRESS_MAX:
        return None
    return normalized


def normalize_email(value: str) -> str:
    if len(value) > EMAIL_MAX:
        raise ValueError(f"email must be at most {EMAIL_MAX} characters")
    normalized = _plain_address(value)
    if normalized is None:
        try:
            normalized = validate_email(clean_text(value), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"email is not valid: {exc}") from None
    # Addresses are compared case-insensitively: two accounts must not differ by case alone.
    return normalized.lower()


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


def check_password_hash(value: str) -> str:
    """A password hash brought from another system: bcrypt only, the one scheme this service checks."""
    if not BCRYPT_HASH.fullmatch(value):
        raise ValueError(f"password_hash must be a {BCRYPT_FORMATS} hash; other schemes are not accepted")
    return value


def check_extra_size(value: dict[str, Any], limit: int = EXTRA_MAX_KEYS) -> dict[str, Any]:
    """The `extra` key limit, with its own code through every door (registration, merge patch, CLI)."""
    if len(value) > limit:
        raise PydanticCustomError(
            ErrorCode.TOO_MANY_EXTRA_KEYS.value, "extra may hold at most {limit} keys", {"limit": limit}
        )
    return value


def check_extra_patch_size(value: dict[str, Any]) -> dict[str, Any]:
    # Twice the key limit lets one patch remove every key and set as many new ones; the merged result is checked
    # against the limit itself.
    return check_extra_size(value, 2 * EXTRA_MAX_KEYS)


# -- validation errors, worded once --------------------------------------------------------------------------------

MAX_PROBLEMS = 10
_CODES = frozenset(ErrorCode)


def error_message(error: ErrorDetails) -> str:
    """One problem as a sentence: pydantic's message without the prefix it adds to a rule's ValueError."""
    return str(error["msg"]).removeprefix("Value error, ")


def error_code(errors: Sequence[ErrorDetails]) -> ErrorCode:
    """The code of the first problem raised by a rule that has one of its own, else `invalid_input`."""
    for error in errors:
        if error["type"] in _CODES:
            return ErrorCode(error["type"])
    return ErrorCode.INVALID_INPUT


def _dotted(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"])


def describe_errors(
    errors: Sequence[ErrorDetails], *, where: Callable[[ErrorDetails], str] = _dotted, limit: int = MAX_PROBLEMS
) -> str:
    """The problems as one line (`field: problem; ...`), at most `limit` of them and a count of the rest."""
    parts = []
    for error in errors[:limit]:
        place, message = where(error), error_message(error)
        parts.append(f"{place}: {message}" if place and not message.startswith(place) else message)
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more problems")
    return "; ".join(parts)


def parse_input(model: type[ModelT], data: Any) -> ModelT:
    """Validate input with the model every door uses; its errors become one InvalidInput with the rule's code."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise InvalidInput(describe_errors(errors), code=error_code(errors)) from None


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
        examples=["acme"],
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
    Field(
        description=f"String-to-string map, at most {EXTRA_MAX_KEYS} keys.",
        json_schema_extra={"maxProperties": EXTRA_MAX_KEYS},
    ),
]
# A merge patch of `extra`: a key set to null is removed.
ExtraPatch = Annotated[
    dict[ExtraKey, ExtraValue | None],
    AfterValidator(check_extra_patch_size),
    Field(
        description="Keys set to null are removed; others are set.",
        json_schema_extra={"maxProperties": 2 * EXTRA_MAX_KEYS},
    ),
]
Password = Annotated[StrictStr, Field(description="At least 8 characters and at most 72 bytes of UTF-8.")]
PasswordHash = Annotated[
    StrictStr,
    AfterValidator(check_password_hash),
    Field(description="A bcrypt hash: $2a$, $2b$ or $2y$, cost 04 to 31.", examples=[EXAMPLE_BCRYPT_HASH]),
]
