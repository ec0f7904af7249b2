"""What a host app uses to protect its own routes with user-service's bearer tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from user_service.api.deps import BearerCredentials
from user_service.api.errors import domain_error_headers, error_response
from user_service.api.metrics import CONTENT_TYPE_LATEST, Metrics
from user_service.errors import InvalidToken, MfaRequired, NotAuthenticated, UserServiceError
from user_service.schemas import Profile
from user_service.security import AAL2
from user_service.service import UserService
from user_service.validation import normalize_namespace


class HostAuthError(HTTPException):
    """A refusal of `require_user`: an HTTPException (status, sentence, headers) that also carries the code."""

    def __init__(self, error: UserServiceError) -> None:
        super().__init__(error.status, error.message, headers=domain_error_headers(error) or None)
        self.code = error.code


async def _render(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HostAuthError)
    return error_response(exc.status_code, str(exc.detail), exc.code, dict(exc.headers or {}))


def _answer_like_the_service(request: Request) -> None:
    """Make the host render HostAuthError as the service's own body {detail, code}, without the host installing a
    handler: the host's exception middleware hands its handlers to each route through the scope, and a handler for
    this subclass takes precedence over the host's HTTPException handler. Without that (another framework in
    front), HostAuthError still renders as an HTTPException with the right status and headers."""
    handlers = request.scope.get("starlette.exception_handlers")
    if isinstance(handlers, tuple) and handlers and isinstance(handlers[0], dict):
        handlers[0].setdefault(HostAuthError, _render)


def require_user(
    accounts: FastAPI, namespace: str | Iterable[str] | None = None, *, require_mfa: bool = False
) -> Callable[..., Profile]:
    """A dependency giving the caller's Profile, for routes of a host app that mounted `accounts`.

    `namespace` (one, or several) is the tenant the host serves: a token of any other namespace is refused like an
    invalid one, since anyone may hold an account in some namespace. Identify the caller by `Profile.id` (the
    token's `sub`), which never changes and is unique across namespaces; a username is unique only within its
    namespace. Refusals answer what the service answers: the body `{detail, code}` with its status (401 with
    WWW-Authenticate, 403 for a disabled account, 503 when the database is down), without the host installing
    anything; they are raised as an HTTPException subclass, `HostAuthError`. With `require_mfa`, a token of a
    session that did not pass a second factor (`aal` other than "aal2") is refused with 403 `mfa_required`.
    """
    service: UserService = accounts.state.service
    names = [namespace] if isinstance(namespace, str) else namespace
    allowed = None if names is None else frozenset(normalize_namespace(name) for name in names)
    if allowed is not None and not allowed:
        raise ValueError("require_user: name at least one namespace, or None for any")

    def current_profile(request: Request, credentials: BearerCredentials) -> Profile:
        _answer_like_the_service(request)
        try:
            if credentials is None:
                raise NotAuthenticated()
            principal = service.authenticate(credentials.credentials)
            user = principal.user
            if allowed is not None and user.namespace not in allowed:
                raise InvalidToken("The token belongs to another namespace.")
            if require_mfa and principal.aal != AAL2:
                raise MfaRequired()
            return service.profile_of(user)
        except UserServiceError as exc:
            raise HostAuthError(exc) from None

    return current_profile


def _metrics_of(accounts: FastAPI) -> Metrics:
    metrics: Metrics | None = accounts.state.metrics
    if metrics is None:
        raise ValueError("the app counts nothing: build it with create_app(metrics=True)")
    return metrics


def metrics_text(accounts: FastAPI) -> bytes:
    """The metrics of `accounts` (built with `create_app(metrics=True)`) in Prometheus' text format, for a host
    that serves or merges them itself. They live in a registry of their own, not in prometheus-client's global one."""
    return _metrics_of(accounts).exposition()


def metrics_app(accounts: FastAPI) -> ASGIApp:
    """An ASGI app answering GET with the metrics of `accounts` (built with `create_app(metrics=True)`), for a host
    to mount where its scraper looks (`host.mount("/metrics", metrics_app(accounts))`); any other method is a 405."""
    metrics = _metrics_of(accounts)

    async def serve_metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "GET":
            response = error_response(405, "Method Not Allowed", "method_not_allowed", {"Allow": "GET"})
            await response(scope, receive, send)
            return
        body = metrics.exposition()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    return serve_metrics
