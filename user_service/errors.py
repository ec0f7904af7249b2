"""Domain errors and the one catalogue of error codes.

Every error the service answers with carries a `code` from `ErrorCode`: the codes are public API (clients branch on
them), and README.md's error table lists exactly this catalogue (a test compares the two).

    UserServiceError
    ├── ConfigurationError          configuration_error       (refuses to start; the CLI's one-line error)
    ├── InvalidInput                invalid_input, password_*, too_many_extra_keys   422
    ├── UsernameTaken               username_taken            409
    ├── EmailTaken                  email_taken               409
    ├── UserIdTaken                 user_id_taken             409
    ├── InvalidCredentials          invalid_credentials       401
    ├── NotAuthenticated            not_authenticated         401
    ├── InvalidToken                invalid_token             401
    ├── TokenExpired                token_expired             401
    ├── RefreshTokenReused          refresh_token_reused      401
    ├── SessionRevoked              session_revoked           401
    ├── UserDisabled                user_disabled             403
    ├── RegistrationClosed          registration_closed       403
    ├── OriginNotAllowed            origin_not_allowed        403
    ├── EmailNotVerified            email_not_verified        403
    ├── UserNotFound                user_not_found            404
    ├── NamespaceNotFound           namespace_not_found       404
    ├── AdminKeyNotFound            admin_key_not_found       404
    ├── AdminKeyNameTaken           admin_key_name_taken      409
    ├── OneTimeTokenInvalid         one_time_token_invalid    400
    ├── MfaCodeInvalid              mfa_code_invalid          401
    ├── MfaCodeReused               mfa_code_reused           401
    ├── MfaTokenInvalid             mfa_token_invalid         401
    ├── MfaRequired                 mfa_required              403
    ├── MfaEnrolmentRequired        mfa_enrolment_required    403 (enrolment_token, expires_in)
    ├── MfaNotEnrolled              mfa_not_enrolled          404
    ├── MfaAlreadyEnabled           mfa_already_enabled       409
    ├── SessionNotFound             session_not_found         404
    ├── TooManyAttempts             too_many_attempts         429 (retry_after seconds)
    │   └── RateLimited             rate_limited              429 (retry_after seconds)
    ├── FileTooLarge                file_too_large            413
    ├── UnsupportedMediaType        unsupported_media_type    415
    ├── DatabaseUnavailable         database_unavailable      503
    ├── DatabaseError               internal_error            500 (the database refused a statement: a fault)
    └── StorageUnavailable          storage_unavailable       503

The HTTP layer maps `status` to the response (and gives the HTTP-only codes of the catalogue: bad_request,
not_found, ...); the CLI prints `message` and exits 1.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every `code` an error body or a CLI error can carry."""

    # Input
    BAD_REQUEST = "bad_request"
    INVALID_INPUT = "invalid_input"
    PASSWORD_TOO_SHORT = "password_too_short"
    PASSWORD_TOO_LONG = "password_too_long"
    PASSWORD_TOO_COMMON = "password_too_common"
    PASSWORD_CONTAINS_USERNAME = "password_contains_username"
    PASSWORD_CONTAINS_EMAIL = "password_contains_email"
    PASSWORD_CONTAINS_NAMESPACE = "password_contains_namespace"
    PASSWORD_TOO_SIMPLE = "password_too_simple"
    PASSWORD_INVALID = "password_invalid"
    TOO_MANY_EXTRA_KEYS = "too_many_extra_keys"
    REQUEST_TOO_LARGE = "request_too_large"
    TOO_MANY_KEYS = "too_many_keys"
    HEADERS_TOO_LARGE = "headers_too_large"
    FILE_TOO_LARGE = "file_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    # Conflicts
    USERNAME_TAKEN = "username_taken"
    EMAIL_TAKEN = "email_taken"
    USER_ID_TAKEN = "user_id_taken"
    # Authentication
    INVALID_CREDENTIALS = "invalid_credentials"
    NOT_AUTHENTICATED = "not_authenticated"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    SESSION_REVOKED = "session_revoked"
    USER_DISABLED = "user_disabled"
    REGISTRATION_CLOSED = "registration_closed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    ONE_TIME_TOKEN_INVALID = "one_time_token_invalid"
    ADMIN_KEY_NAME_TAKEN = "admin_key_name_taken"
    # The second factor
    MFA_CODE_INVALID = "mfa_code_invalid"
    MFA_CODE_REUSED = "mfa_code_reused"
    MFA_TOKEN_INVALID = "mfa_token_invalid"
    MFA_REQUIRED = "mfa_required"
    MFA_ENROLMENT_REQUIRED = "mfa_enrolment_required"
    MFA_NOT_ENROLLED = "mfa_not_enrolled"
    MFA_ALREADY_ENABLED = "mfa_already_enabled"
    # Not found, wrong method
    NOT_FOUND = "not_found"
    USER_NOT_FOUND = "user_not_found"
    SESSION_NOT_FOUND = "session_not_found"
    NAMESPACE_NOT_FOUND = "namespace_not_found"
    ADMIN_KEY_NOT_FOUND = "admin_key_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # Throttling
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    RATE_LIMITED = "rate_limited"
    # The service itself
    DATABASE_UNAVAILABLE = "database_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    CONFIGURATION_ERROR = "configuration_error"
    INTERNAL_ERROR = "internal_error"
    HTTP_ERROR = "http_error"


class UserServiceError(Exception):
    """Base of every error the service raises on purpose."""

    code: ErrorCode = ErrorCode.INVALID_INPUT
    status: int = 400
    message: str = "The request could not be completed."
    # Fields an error body carries beside `detail` and `code` (most errors: none).
    fields: dict[str, object]

    def __init__(self, message: str | None = None, *, code: ErrorCode | None = None) -> None:
        self.message = message or type(self).message
        self.fields = {}
        if code is not None:
            self.code = code
        super().__init__(self.message)


class ConfigurationError(UserServiceError):
    code = ErrorCode.CONFIGURATION_ERROR
    status = 500
    message = "The service is not configured correctly."


class InvalidInput(UserServiceError):
    code = ErrorCode.INVALID_INPUT
    status = 422
    message = "The input is not valid."


class UsernameTaken(UserServiceError):
    code = ErrorCode.USERNAME_TAKEN
    status = 409
    message = "This username is already taken in this namespace."


class EmailTaken(UserServiceError):
    code = ErrorCode.EMAIL_TAKEN
    status = 409
    message = "This email address is already used in this namespace."


class UserIdTaken(UserServiceError):
    code = ErrorCode.USER_ID_TAKEN
    status = 409
    message = "This user id is already another user's."


class InvalidCredentials(UserServiceError):
    code = ErrorCode.INVALID_CREDENTIALS
    status = 401
    message = "Invalid namespace, username or password."


class NotAuthenticated(UserServiceError):
    code = ErrorCode.NOT_AUTHENTICATED
    status = 401
    message = "Authentication required: send an access token as `Authorization: Bearer <token>`."


class InvalidToken(UserServiceError):
    code = ErrorCode.INVALID_TOKEN
    status = 401
    message = "The token is invalid."


class TokenExpired(UserServiceError):
    code = ErrorCode.TOKEN_EXPIRED
    status = 401
    message = "The token has expired."


class RefreshTokenReused(UserServiceError):
    code = ErrorCode.REFRESH_TOKEN_REUSED
    status = 401
    message = "This refresh token was already used; the session has been revoked. Log in again."


class SessionRevoked(UserServiceError):
    """A token of a session that was revoked because one of its refresh tokens was presented twice."""

    code = ErrorCode.SESSION_REVOKED
    status = 401
    message = "This session was revoked because one of its refresh tokens was used twice. Log in again."


class UserDisabled(UserServiceError):
    code = ErrorCode.USER_DISABLED
    status = 403
    message = "This account is disabled."


class RegistrationClosed(UserServiceError):
    code = ErrorCode.REGISTRATION_CLOSED
    status = 403
    message = "Registration is closed in this namespace; ask an operator for an account."


class OriginNotAllowed(UserServiceError):
    """A refresh or logout authenticated by the refresh-token cookie, from an origin that may not use it (CSRF)."""

    code = ErrorCode.ORIGIN_NOT_ALLOWED
    status = 403
    message = "This origin may not use the refresh-token cookie; see CORS_ORIGINS."


class UserNotFound(UserServiceError):
    code = ErrorCode.USER_NOT_FOUND
    status = 404
    message = "No such user."


class SessionNotFound(UserServiceError):
    code = ErrorCode.SESSION_NOT_FOUND
    status = 404
    message = "No such session."


class TooManyAttempts(UserServiceError):
    """The account is locked after repeated failed logins."""

    code = ErrorCode.TOO_MANY_ATTEMPTS
    status = 429
    message = "Too many failed attempts; try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message)


class RateLimited(TooManyAttempts):
    """This client address sent too many requests to one endpoint."""

    code = ErrorCode.RATE_LIMITED
    message = "Too many requests from this address; try again later."


class FileTooLarge(UserServiceError):
    code = ErrorCode.FILE_TOO_LARGE
    status = 413
    message = "The file is too large."


class UnsupportedMediaType(UserServiceError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    status = 415
    message = "The file is not a JPEG, PNG or WebP image."


class DatabaseUnavailable(UserServiceError):
    code = ErrorCode.DATABASE_UNAVAILABLE
    status = 503
    message = "The database is unavailable; try again shortly."


class DatabaseError(UserServiceError):
    """The database refused a statement for a reason that is the service's fault, not the client's: logged by the
    driver error's class, answered 500 like any other fault."""

    code = ErrorCode.INTERNAL_ERROR
    status = 500
    message = "Internal server error."


class StorageUnavailable(UserServiceError):
    code = ErrorCode.STORAGE_UNAVAILABLE
    status = 503
    message = "The avatar storage is unavailable; try again shortly."


class EmailNotVerified(UserServiceError):
    code = ErrorCode.EMAIL_NOT_VERIFIED
    status = 403
    message = "This account's email address is not verified yet."


class NamespaceNotFound(UserServiceError):
    code = ErrorCode.NAMESPACE_NOT_FOUND
    status = 404
    message = "No such namespace."


class AdminKeyNotFound(UserServiceError):
    code = ErrorCode.ADMIN_KEY_NOT_FOUND
    status = 404
    message = "No such admin key."


class AdminKeyNameTaken(UserServiceError):
    code = ErrorCode.ADMIN_KEY_NAME_TAKEN
    status = 409
    message = "An admin key of this name already exists."


class OneTimeTokenInvalid(UserServiceError):
    """The same answer for an unknown, spent, expired or other-kind token, and one whose email has changed."""

    code = ErrorCode.ONE_TIME_TOKEN_INVALID
    status = 400
    message = "The token is invalid, expired or already used."


class MfaCodeInvalid(UserServiceError):
    """A second-factor code (TOTP or recovery code) that is wrong; counted like a wrong password."""

    code = ErrorCode.MFA_CODE_INVALID
    status = 401
    message = "The code is not valid."


class MfaCodeReused(UserServiceError):
    """A TOTP code of a time step already used, or a recovery code already spent."""

    code = ErrorCode.MFA_CODE_REUSED
    status = 401
    message = "This code was already used; wait for the next one."


class MfaTokenInvalid(UserServiceError):
    """The same answer for an unknown, spent or expired mfa_token."""

    code = ErrorCode.MFA_TOKEN_INVALID
    status = 401
    message = "The mfa_token is invalid, expired or already used; log in again."


class MfaRequired(UserServiceError):
    """A token of a session that did not pass the second factor, where one is required."""

    code = ErrorCode.MFA_REQUIRED
    status = 403
    message = "This requires a login with a second factor."


class MfaEnrolmentRequired(UserServiceError):
    """The namespace requires a second factor and the account has none yet. At login the body carries an
    `enrolment_token` that only the /users/me/mfa/totp endpoints accept; any other endpoint refuses that token."""

    code = ErrorCode.MFA_ENROLMENT_REQUIRED
    status = 403
    message = "This account must set up a second factor first."

    def __init__(self, enrolment_token: str | None = None, expires_in: int | None = None) -> None:
        super().__init__()
        if enrolment_token is not None:
            self.fields = {"enrolment_token": enrolment_token, "expires_in": expires_in}


class MfaNotEnrolled(UserServiceError):
    code = ErrorCode.MFA_NOT_ENROLLED
    status = 404
    message = "There is no second factor to confirm or remove."


class MfaAlreadyEnabled(UserServiceError):
    code = ErrorCode.MFA_ALREADY_ENABLED
    status = 409
    message = "A second factor is already set up; remove it first."
