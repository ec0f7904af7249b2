"""A pure ASGI guard in front of every route: request body limits and headers every response carries."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from user_service.api.errors import RequestTooLarge, error_response
from user_service.errors import ErrorCode

AVATAR_PATH_SUFFIX = "/users/me/avatar"
# Room for the multipart boundaries and part headers around the avatar's bytes.
MULTIPART_SLACK = 16 * 1024


class RequestGuard:
    """Refuse bodies over their limit, by Content-Length up front or while streaming, without reading them whole."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, avatar_max_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.avatar_limit = avatar_max_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].endswith(AVATAR_PATH_SUFFIX):
            limit, code = self.avatar_limit, ErrorCode.FILE_TOO_LARGE
        else:
            limit, code = self.max_body_bytes, ErrorCode.REQUEST_TOO_LARGE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = error_response(413, RequestTooLarge(code, limit).detail, code)
            await response(scope, receive, send_with_headers)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(code, limit)
            return message

        await self.app(scope, limited_receive, send_with_headers)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
