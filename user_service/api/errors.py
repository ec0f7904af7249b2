"""The one place where errors become HTTP responses: domain errors by their status and code, and every stock
FastAPI/Starlette error re-rendered so that no client input, however malformed, can turn into a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from user_service.errors import ErrorCode, TooManyAttempts, UserServiceError
from user_service.schemas import UnprocessableBody
from user_service.validation import MAX_PROBLEMS, error_code, error_message

log = logging.getLogger("user_service.api")

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Answers that the metrics count apart (the rate limit's refusals, the database being unreachable).
_COUNTED_REFUSALS = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.DATABASE_UNAVAILABLE})
_TOKEN_ERRORS = {ErrorCode.INVALID_TOKEN, ErrorCode.TOKEN_EXPIRED, ErrorCode.SESSION_REVOKED}
_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.NOT_AUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


# The most problems a 422 describes; its `count` says how many there were.


class RequestTooLarge(StarletteHTTPException):
    """Raised while reading a body that outgrew its limit; FastAPI lets HTTPException through its body parser."""

    def __init__(self, code: ErrorCode, limit: int) -> None:
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")
        self.code = code


def error_response(
    status: int, detail: str, code: str, headers: dict[str, str] | None = None, fields: dict[str, object] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **(fields or {})}, status_code=status, headers=headers)


def domain_error_headers(exc: UserServiceError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.status == 401:
        # RFC 6750: tell the client which scheme to use, and why a presented token failed.
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{exc.code}"' if exc.code in _TOKEN_ERRORS else "Bearer"
        )
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    return headers


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserServiceError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and exc.code in _COUNTED_REFUSALS:
        route = getattr(request.scope.get("route"), "path_format", "unmatched")
        metrics.refused(exc.code, route)
    return error_response(exc.status, exc.message, exc.code, domain_error_headers(exc), exc.fields)


def _clean_loc(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # The stock handler echoes the input back, which fails on bytes that are not UTF-8 and on NaN. Only the first
    # few problems are described, with the count of all: the answer to a hostile body stays small.
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    issues = [
        {"loc": _clean_loc(error.get("loc", ())), "msg": error_message(error), "type": str(error.get("type", ""))}
        for error in errors[:MAX_PROBLEMS]
    ]
    # The first problems and how many there were; and the code of the rule that refused the input, as the core and
    # the CLI give it for the same rule.
    return JSONResponse({"detail": issues, "count": len(errors), "code": error_code(errors)}, status_code=422)


def _allowed_methods(request: Request) -> str:
    """Every method some route answers at this path: Starlette names only the first matching route's."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    detail = exc.detail if isinstance(exc.detail, str) else "The request could not be completed."
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, detail, code, headers)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    # Rendered by Starlette's outermost error middleware, outside RequestGuard: set its header here.
    return error_response(
        500, "Internal server error.", ErrorCode.INTERNAL_ERROR, {"X-Content-Type-Options": "nosniff"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(UserServiceError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


# Response headers some errors carry, documented where they can appear.
_ERROR_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'RFC 6750: `Bearer`, or `Bearer error="invalid_token", error_description="<code>"`.',
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}},
}


def error_content(codes: list[str]) -> dict[str, Any]:
    """The error body of a response, with `code` an enum of exactly the codes that response can carry."""
    schema = {
        "type": "object",
        "required": ["detail", "code"],
        "properties": {
            "detail": {"type": "string", "description": "A sentence for people."},
            "code": {"type": "string", "enum": codes, "description": "Stable; branch on it."},
        },
    }
    return {"application/json": {"schema": schema, "example": {"detail": "...", "code": codes[0]}}}


def responses(*errors: type[UserServiceError], validation: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: each status with the codes it can carry (as an enum) and its headers."""
    by_status: dict[int, list[str]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(str(error.code))
    if validation:
        by_status.setdefault(400, []).append(ErrorCode.BAD_REQUEST)
        by_status.setdefault(413, []).append(ErrorCode.REQUEST_TOO_LARGE)
    documented: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted(by_status.items()):
        unique = list(dict.fromkeys(str(code) for code in codes))
        documented[status] = {
            "description": "code: " + ", ".join(f"`{c}`" for c in unique),
            "content": error_content(unique),
        }
        if status in _ERROR_HEADERS:
            documented[status]["headers"] = _ERROR_HEADERS[status]
    if validation:
        # (A route's own 400 codes are documented beside `bad_request`, a body that cannot be decoded.)
        documented[422] = {
            "model": UnprocessableBody,
            "description": (
                f"Malformed request (the first {MAX_PROBLEMS} problems and `count`, how many there were), or input the "
                "core refused (a sentence and a code: `too_many_keys` for a JSON object with more keys than any "
                "request takes)."
            ),
        }
    return documented
