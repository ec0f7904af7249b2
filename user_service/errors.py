"""Domain errors. Each carries a stable `code` (public API: clients branch on it) and an HTTP status hint.

    UserServiceError
    ├── ConfigurationError          configuration_error       (not an HTTP error: refuses to start)
    ├── InvalidInput                invalid_input / password_* 422
    ├── UsernameTaken               username_taken            409
    ├── EmailTaken                  email_taken               409
    ├── InvalidCredentials          invalid_credentials       401
    ├── NotAuthenticated            not_authenticated         401
    ├── InvalidToken                invalid_token             401
    ├── TokenExpired                token_expired             401
    ├── RefreshTokenReused          refresh_token_reused      401
    ├── UserDisabled                user_disabled             403
    ├── UserNotFound                user_not_found            404
    ├── SessionNotFound             session_not_found         404
    ├── TooManyAttempts             too_many_attempts         429 (retry_after seconds)
    ├── RateLimited                 rate_limited              429 (retry_after seconds)
    ├── FileTooLarge                file_too_large            413
    ├── UnsupportedMediaType        unsupported_media_type    415
    └── DatabaseUnavailable         database_unavailable      503

The HTTP layer maps `status` to the response; the CLI prints `message` and exits 1.
"""

from __future__ import annotations


class UserServiceError(Exception):
    """Base of every error the service raises on purpose."""

    code: str = "error"
    status: int = 400
    message: str = "The request could not be completed."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or type(self).message
        if code is not None:
            self.code = code
        super().__init__(self.message)


class ConfigurationError(UserServiceError):
    code = "configuration_error"
    status = 500
    message = "The service is not configured correctly."


class InvalidInput(UserServiceError):
    code = "invalid_input"
    status = 422
    message = "The input is not valid."


class UsernameTaken(UserServiceError):
    code = "username_taken"
    status = 409
    message = "This username is already taken in this namespace."


class EmailTaken(UserServiceError):
    code = "email_taken"
    status = 409
    message = "This email address is already used in this namespace."


class InvalidCredentials(UserServiceError):
    code = "invalid_credentials"
    status = 401
    message = "Invalid namespace, username or password."


class NotAuthenticated(UserServiceError):
    code = "not_authenticated"
    status = 401
    message = "Authentication required: send an access token as `Authorization: Bearer <token>`."


class InvalidToken(UserServiceError):
    code = "invalid_token"
    status = 401
    message = "The token is invalid."


class TokenExpired(UserServiceError):
    code = "token_expired"
    status = 401
    message = "The token has expired."


class RefreshTokenReused(UserServiceError):
    code = "refresh_token_reused"
    status = 401
    message = "This refresh token was already used; the session has been revoked. Log in again."


class UserDisabled(UserServiceError):
    code = "user_disabled"
    status = 403
    message = "This account is disabled."


class UserNotFound(UserServiceError):
    code = "user_not_found"
    status = 404
    message = "No such user."


class SessionNotFound(UserServiceError):
    code = "session_not_found"
    status = 404
    message = "No such session."


class TooManyAttempts(UserServiceError):
    """The account is locked after repeated failed logins."""

    code = "too_many_attempts"
    status = 429
    message = "Too many failed attempts; try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(message)


class RateLimited(TooManyAttempts):
    """This client address sent too many requests to one endpoint."""

    code = "rate_limited"
    message = "Too many requests from this address; try again later."


class FileTooLarge(UserServiceError):
    code = "file_too_large"
    status = 413
    message = "The file is too large."


class UnsupportedMediaType(UserServiceError):
    code = "unsupported_media_type"
    status = 415
    message = "The file is not a JPEG, PNG or WebP image."


class DatabaseUnavailable(UserServiceError):
    code = "database_unavailable"
    status = 503
    message = "The database is unavailable; try again shortly."
