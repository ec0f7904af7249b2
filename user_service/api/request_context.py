"""The outermost layer of the app: each request's id, its metrics and its access-log line.

It wraps even Starlette's error middleware, so that a 500 carries the request id and is counted, and the id stays
set for the log lines written after the response (the server's own report of an unhandled error).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from user_service import telemetry
from user_service.api.deps import address_of
from user_service.api.metrics import Metrics
from user_service.config import Network

REQUEST_ID_HEADER = b"x-request-id"
# An incoming id is kept only when it is a plain token: no way to break a log line, bounded in length.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "unmatched"

access_log = logging.getLogger("user_service.access")


def request_id_of(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The request's X-Request-ID when it is a sane token (letters, digits, `.`, `_`, `:`, `-`; at most 128), else a
    new random one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


def _template_for(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The path template of the first route matching the request, looking inside included routers."""
    for candidate in routes:
        if candidate.matches(scope)[0] is Match.NONE:
            continue
        template = getattr(candidate, "path_format", None)
        if isinstance(template, str):
            return template
        # FastAPI keeps an included router whole; its routes carry the full path.
        inner = getattr(getattr(candidate, "original_router", None), "routes", None)
        if inner is not None:
            return _template_for(inner, scope)
    return None


class RequestContext:
    """Sets the request id (kept from X-Request-ID, or new) and the app's metrics for the request's context, echoes
    the id in the response, counts the request by method, route template and status class, and writes the access
    log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        metrics: Metrics | None,
        access_log: bool,
        trusted_proxies: tuple[Network, ...],
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.access_log = access_log
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        # Not reset afterwards: the server runs each request in a task of its own, and the id must stay set for
        # what the server logs about the request once the app has returned or raised.
        telemetry.current_request_id.set(request_id)
        telemetry.current_observer.set(self.metrics)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        outer_route = scope.get("route")
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.request_done(scope["method"], self.route_of(scope, outer_route), status, seconds)
            if self.access_log:
                self._log(scope, status, seconds, request_id)

    def route_of(self, scope: Scope, outer_route: object) -> str:
        """The path template of the route that answered; for a request refused before routing (a body over its
        limit), the template of the route it was for."""
        route = scope.get("route")
        template = getattr(route, "path_format", None) if route is not outer_route else None
        if not isinstance(template, str):
            template = _template_for(self.routes, scope)
        return template if template is not None else UNMATCHED

    def _log(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        client = scope.get("client")
        address = address_of(
            client[0] if client else None,
            self.trusted_proxies,
            lambda: [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"],
        )
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": address,
                "request_id": request_id,
            },
        )
