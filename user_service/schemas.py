"""Request and response models (pydantic), shared by the HTTP API, the CLI and the core."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from user_service.validation import (
    EXAMPLE_BCRYPT_HASH,
    AvatarUrl,
    Email,
    Extra,
    ExtraPatch,
    FullName,
    Namespace,
    Password,
    PasswordHash,
    Username,
)

IMMUTABLE_FIELDS = ("id", "namespace", "username", "password", "password_hash")

# Values the examples in the OpenAPI schema share. Tokens are shortened (never a whole, real-looking secret); a
# test validates every example against its model, so they cannot drift from what the API takes and gives. FastAPI
# leaves nulls out when it writes the schema, so no example holds one: a field that may be null shows a value.
_USER_ID = "3f8e4c2a-9b1d-4e6f-8a7c-5d2b1e0f9a34"
_SESSION_ID = "b7a1d3e5-2c4f-4a6b-9d8e-0f1a2b3c4d5e"
_CREATED = "2030-01-02T09:30:00Z"
_UPDATED = "2030-01-05T16:45:00Z"
_NOW = "2030-01-06T08:00:00Z"
_SESSION_ENDS = "2030-02-01T09:30:00Z"
_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
_PASSWORD = "correct horse battery staple"  # noqa: S105 (an example, not a secret)
_NEW_PASSWORD = "purple monkey dishwasher"  # noqa: S105 (an example, not a secret)
_REFRESH_TOKEN = "Nq3rV9xk2T..."  # noqa: S105 (a shortened example, not a secret)
_ONE_TIME_TOKEN = "kP7wQ2zR..."  # noqa: S105 (a shortened example, not a secret)
_PROFILE = {
    "id": _USER_ID,
    "namespace": "acme",
    "username": "alice",
    "email": "alice@example.com",
    "email_verified": True,
    "full_name": "Alice Liddell",
    "avatar_url": "/uploads/5d0c9a7e41b2f3a8.webp",
    "extra": {"plan": "pro"},
    "created_at": _CREATED,
    "updated_at": _UPDATED,
}
_SUMMARY = {
    "id": _USER_ID,
    "namespace": "acme",
    "username": "alice",
    "email": "alice@example.com",
    "full_name": "Alice Liddell",
    "is_active": True,
    "created_at": _CREATED,
    "last_login_at": _NOW,
}
_SESSION = {
    "id": _SESSION_ID,
    "created_at": _CREATED,
    "last_used_at": _NOW,
    "expires_at": _SESSION_ENDS,
    "user_agent": _AGENT,
    "ip": "203.0.113.7",
}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    """The model's examples in its JSON schema: set on the model, so they show wherever the model is used."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Input):
    model_config = _examples(
        {
            "namespace": "acme",
            "username": "alice",
            "password": _PASSWORD,
            "email": "alice@example.com",
            "full_name": "Alice Liddell",
            "extra": {"plan": "pro"},
        }
    )

    namespace: Namespace
    username: Username
    password: Password
    email: Email | None = None
    full_name: FullName | None = None
    avatar_url: AvatarUrl | None = None
    extra: Extra | None = None


class ImportedUser(RegisterRequest):
    """A user brought from another system (a line of `user-service import`, or an operator's create with a hash):
    the registration fields and rules, with the password either as a bcrypt hash (kept: the user logs in with the
    password they had) or in plain (checked against the policy and hashed), and the id, times and state as given."""

    model_config = _examples(
        {"namespace": "acme", "username": "alice", "password_hash": EXAMPLE_BCRYPT_HASH, "email": "alice@example.com"}
    )

    password: Password | None = None  # type: ignore[assignment]
    password_hash: PasswordHash | None = None
    id: uuid.UUID | None = None
    is_active: StrictBool = True
    # Whether the email address was verified in the system the user comes from (only with an email).
    email_verified: StrictBool = False
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_password(self) -> ImportedUser:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password and password_hash")
        return self


class LoginRequest(_Input):
    model_config = _examples({"namespace": "acme", "username": "alice", "password": _PASSWORD})

    # Deliberately loose: a malformed namespace or username is just an unknown account (401), not a 422 hint.
    namespace: StrictStr = Field(examples=["acme"])
    username: StrictStr = Field(examples=["alice"])
    password: StrictStr


def _refresh_token_required(schema: dict[str, Any]) -> None:
    schema["properties"]["refresh_token"] = {"type": "string", "title": "Refresh Token"}
    schema["required"] = ["refresh_token"]
    schema["examples"] = [{"refresh_token": _REFRESH_TOKEN}]


class _RefreshTokenBody(_Input):
    # The model takes a body without the token (or with null): in cookie mode the cookie's token is used, otherwise
    # the route refuses it (422 invalid_input). Its schema is the default mode's, where the token is required; an app
    # in cookie mode marks it optional in the schema it serves.
    model_config = ConfigDict(json_schema_extra=_refresh_token_required)

    refresh_token: StrictStr | None = None


class RefreshRequest(_RefreshTokenBody):
    pass


class LogoutRequest(_RefreshTokenBody):
    pass


class PasswordChangeRequest(_Input):
    model_config = _examples({"current_password": _PASSWORD, "new_password": _NEW_PASSWORD})

    current_password: StrictStr
    new_password: Password


class ProfilePatch(_Input):
    """JSON Merge Patch (RFC 7396) of a profile: omitted fields stay, null clears."""

    model_config = _examples({"full_name": "Alice Liddell", "extra": {"plan": "team"}})

    email: Email | None = None
    full_name: FullName | None = None
    avatar_url: AvatarUrl | None = None
    extra: ExtraPatch | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_immutable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fixed = sorted(name for name in IMMUTABLE_FIELDS if name in data)
            if fixed:
                raise ValueError(f"{', '.join(fixed)} cannot be changed")
        return data


# A bcrypt hash as bcrypt writes it ($2a$, $2b$ or $2y$, cost 04-31, 53 characters of salt and digest).


class AdminUserCreate(_Input):
    """A new account made by an app's back end: the registration fields (the namespace is the path's), with a
    `password` (the policy applies) or a bcrypt `password_hash` carried over from another system."""

    model_config = _examples(
        {"username": "alice", "password": _PASSWORD, "email": "alice@example.com"},
        {"username": "bob", "password_hash": EXAMPLE_BCRYPT_HASH, "email": "bob@example.com", "email_verified": True},
    )

    username: Username
    password: Password | None = None
    password_hash: PasswordHash | None = None
    email: Email | None = None
    email_verified: StrictBool = False
    full_name: FullName | None = None
    avatar_url: AvatarUrl | None = None
    extra: Extra | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> AdminUserCreate:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password and password_hash")
        return self


class AdminUserPatch(ProfilePatch):
    """A merge patch of a profile by an app's back end, which may also enable or disable the account and mark its
    email verified. A changed email is unverified unless `email_verified` is given too."""

    model_config = _examples({"is_active": False}, {"email": "alice@example.org", "email_verified": True})

    is_active: StrictBool | None = None
    email_verified: StrictBool | None = None

    @model_validator(mode="after")
    def _no_null_flags(self) -> AdminUserPatch:
        for name in ("is_active", "email_verified"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} must be true or false")
        return self


class PasswordResetRequest(_Input):
    model_config = _examples({"token": _ONE_TIME_TOKEN, "new_password": _NEW_PASSWORD})

    token: StrictStr = Field(max_length=1024)
    new_password: Password


class VerifyEmailRequest(_Input):
    model_config = _examples({"token": _ONE_TIME_TOKEN})

    token: StrictStr = Field(max_length=1024)


class OneTimeTokenOut(BaseModel):
    """A one-time token for the app's back end to deliver to the user; shown once, stored only as a digest."""

    model_config = _examples({"token": _ONE_TIME_TOKEN, "expires_at": "2030-01-06T09:00:00Z"})

    token: str
    expires_at: datetime


class AdminSessionInfo(BaseModel):
    model_config = _examples(_SESSION)

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None


class Profile(BaseModel):
    model_config = _examples(_PROFILE)

    id: uuid.UUID
    namespace: str
    username: str
    email: str | None
    email_verified: bool = Field(description="Whether the user proved they receive mail at `email`.")
    full_name: str | None
    avatar_url: str | None
    extra: dict[str, str]
    created_at: datetime
    updated_at: datetime
    mfa_enabled: bool = Field(
        default=False, description="Whether the user has a confirmed second factor: logins then take a code too."
    )


class UserSummary(BaseModel):
    """A user as listed for operators and app back ends."""

    model_config = _examples(_SUMMARY)

    id: uuid.UUID
    namespace: str
    username: str
    email: str | None
    full_name: str | None
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UserPage(BaseModel):
    """One page of a listing; `next` is the opaque cursor of the following page, or null on the last."""

    model_config = _examples({"items": [_SUMMARY], "next": "eyJjcmVhdGVkIjoi..."})

    items: list[UserSummary]
    next: str | None


class UserDetail(Profile):
    """A profile with what operators need to see of the account's state (never the hash)."""

    model_config = _examples(
        {
            **_PROFILE,
            "is_active": True,
            "locked_until": "2030-01-06T08:15:00Z",
            "failed_login_count": 5,
            "last_login_at": _NOW,
            "live_sessions": 2,
        }
    )

    is_active: bool
    locked_until: datetime | None
    failed_login_count: int
    last_login_at: datetime | None
    live_sessions: int


class NamespaceCount(BaseModel):
    namespace: str
    users: int


class SessionInfo(BaseModel):
    model_config = _examples({**_SESSION, "current": True})

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime = Field(description="When the session last refreshed its tokens.")
    expires_at: datetime = Field(description="Absolute end of the session; refreshing never extends it.")
    user_agent: str | None
    ip: str | None
    current: bool = Field(description="Whether this is the session of the token making the request.")


class TokenPair(BaseModel):
    model_config = _examples(
        {
            "access_token": "eyJhbGciOi...",
            "refresh_token": _REFRESH_TOKEN,
            "token_type": "bearer",
            "expires_in": 900,
            "expires_at": "2030-01-06T08:15:00Z",
        }
    )

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a token type, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires.")
    expires_at: datetime = Field(description="When the access token expires (RFC 3339, UTC).")


class JsonWebKeySet(BaseModel):
    """The public keys that verify access tokens (RFC 7517): the next, current and recently retired ones; empty when
    tokens are signed with an HS* secret. Every member of a key is a string."""

    model_config = _examples(
        {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
                    "kid": "ZyxzOc--_0HqXc-VSbq5ZA",
                    "alg": "ES256",
                    "use": "sig",
                }
            ]
        }
    )

    keys: list[dict[str, str]]


# -- the second factor ----------------------------------------------------------------------------------------------

_CODE_DESCRIPTION = "A 6-digit code from the authenticator app, or one of the recovery codes."
# Both kinds of code are short: a TOTP code has 6 digits, a recovery code 11 characters.
_CODE_MAX = 32


class MfaChallenge(BaseModel):
    """A right password of an account with a second factor: no tokens yet; send `mfa_token` and a code to
    POST /auth/login/mfa within `expires_in` seconds."""

    model_config = _examples({"mfa_required": True, "mfa_token": "Zk3v…", "expires_in": 300})

    mfa_required: Literal[True] = True
    mfa_token: str = Field(description="Opaque and single use; good only at POST /auth/login/mfa.")
    expires_in: int = Field(description="Seconds until the mfa_token expires.")


class LoginMfaRequest(_Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"mfa_token": "Zk3v…", "code": "123456"}]}
    )

    mfa_token: StrictStr = Field(max_length=256)
    code: StrictStr = Field(max_length=_CODE_MAX, description=_CODE_DESCRIPTION)


class TotpEnrolment(BaseModel):
    """A new, pending TOTP secret: show the QR code (or the secret) to the user, then confirm with a code."""

    model_config = _examples(
        {
            "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            "uri": "otpauth://totp/user-service:acme%2Falice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=user-service",
            "qr_png": "iVBORw0KGgo…",
        }
    )

    secret: str = Field(description="The base32 secret, for typing into an app by hand.")
    uri: str = Field(description="The otpauth:// URI (SHA-1, 6 digits, 30 seconds).")
    qr_png: str = Field(description="The URI as a QR code: a PNG image, base64-encoded.")


class TotpConfirmRequest(_Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "123456"}]})

    code: StrictStr = Field(max_length=_CODE_MAX, description="A 6-digit code from the authenticator app.")


class RecoveryCodes(BaseModel):
    """Shown once: each code logs in once in place of a TOTP code. Only their digests are stored."""

    model_config = _examples({"recovery_codes": ["k3v9q-7xw2m", "p8d4r-2nh6t"]})

    recovery_codes: list[str]


class TotpRemoveRequest(_Input):
    """Proof for removing the second factor: a code (TOTP or recovery) or the password, exactly one."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"code": "123456"}, {"password": "correct horse battery"}]}
    )

    code: StrictStr | None = Field(default=None, max_length=_CODE_MAX, description=_CODE_DESCRIPTION)
    password: StrictStr | None = None

    @model_validator(mode="after")
    def _one_proof(self) -> TotpRemoveRequest:
        if (self.code is None) == (self.password is None):
            raise ValueError("give exactly one of code and password")
        return self


class MfaEnrolmentRequiredBody(BaseModel):
    """403 `mfa_enrolment_required` at login: the namespace requires a second factor the account does not have.
    `enrolment_token` is a bearer token that only the three /users/me/mfa/totp endpoints accept."""

    model_config = _examples(
        {
            "detail": "This account must set up a second factor first.",
            "code": "mfa_enrolment_required",
            "enrolment_token": "eyJ…",
            "expires_in": 300,
        }
    )

    detail: str
    code: Literal["mfa_enrolment_required"]
    enrolment_token: str
    expires_in: int


class ErrorBody(BaseModel):
    detail: str
    code: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class UnprocessableBody(BaseModel):
    """A 422: the first problems of a malformed request (with `count`, how many there were), or a sentence from the
    core; either way with the code of the rule that refused it."""

    detail: list[ValidationIssue] | str
    code: str
    count: int | None = None


class Health(BaseModel):
    model_config = _examples({"status": "ok", "database": "ok", "storage": "ok", "version": "1.0.0"})

    status: Literal["ok", "degraded", "unavailable"]
    database: Literal["ok", "unavailable"]
    storage: Literal["ok", "unavailable"]
    version: str
