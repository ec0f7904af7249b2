"""A pure ASGI guard in front of every route: request body limits and headers every response carries."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from user_service.api.errors import RequestTooLarge, error_response
from user_service.api.metrics import Metrics
from user_service.errors import ErrorCode

AVATAR_PATH_SUFFIX = "/users/me/avatar"
# Room for the multipart boundaries and part headers around the avatar's bytes.
MULTIPART_SLACK = 16 * 1024
# No request model takes an object with more keys than this (a merge patch of `extra`: twice its 50-key limit).
# A body holding a bigger object is refused before field validation, which would build one error per unknown key.
MAX_OBJECT_KEYS = 100
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TooManyKeys(ValueError):
    """A JSON object in the body has more keys than any request model takes."""


class RequestGuard:
    """Refuse bodies over their limit, by Content-Length up front or while streaming, without reading them whole;
    refuse JSON bodies holding an object with more keys than any request model has."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, avatar_max_bytes: int, metrics: Metrics | None = None
    ) -> None:
        self.app = app
        # Avatar uploads refused here never reach their route, which counts the others.
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.avatar_limit = avatar_max_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_avatar = scope["path"].endswith(AVATAR_PATH_SUFFIX)
        if is_avatar:
            limit, code = self.avatar_limit, ErrorCode.FILE_TOO_LARGE
        else:
            limit, code = self.max_body_bytes, ErrorCode.REQUEST_TOO_LARGE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if is_avatar and self.metrics is not None:
                self.metrics.avatar_upload(code)
            response = error_response(413, RequestTooLarge(code, limit).detail, code)
            await response(scope, receive, send_with_headers)
            return

        if not is_avatar and scope["method"] not in _BODYLESS_METHODS and _may_be_json(scope):
            await self._json_request(scope, receive, send_with_headers, limit)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if is_avatar and self.metrics is not None:
                        self.metrics.avatar_upload(code)
                    raise RequestTooLarge(code, limit)
            return message

        await self.app(scope, limited_receive, send_with_headers)

    async def _json_request(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read the whole body (within the limit) and count the keys of its objects before any route sees it."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending the whole body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                response = error_response(
                    413, RequestTooLarge(ErrorCode.REQUEST_TOO_LARGE, limit).detail, ErrorCode.REQUEST_TOO_LARGE
                )
                await response(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _has_too_many_keys(body):
            detail = f"A JSON object in the request body has more than {MAX_OBJECT_KEYS} keys."
            await error_response(422, detail, ErrorCode.TOO_MANY_KEYS)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _count_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > MAX_OBJECT_KEYS:
        raise TooManyKeys()


def _has_too_many_keys(body: bytes) -> bool:
    """Whether the body is JSON holding an object with too many keys; a body that is not JSON is left to the route
    (which answers it with a 400 or a 422, as before). Nothing is kept: each object decodes to None."""
    if b":" not in body:
        return False
    try:
        json.loads(body, object_pairs_hook=_count_keys)
    except TooManyKeys:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _may_be_json(scope: Scope) -> bool:
    """Whether the route's body parser would read the body as JSON: no Content-Type, or a JSON one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
