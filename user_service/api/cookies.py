"""REFRESH_TOKEN_COOKIE: the refresh token in an HttpOnly cookie instead of the JSON body, for browser apps.

The cookie is scoped to the auth endpoints (its Path), so it travels only to /auth/refresh and /auth/logout. A
request that authenticates with it must come from an allowed origin (CORS_ORIGINS or the service's own), because a
browser attaches cookies to cross-site requests too (CSRF).
"""

from __future__ import annotations

from fastapi import Request, Response
from pydantic_core import to_json

from user_service.config import Settings
from user_service.errors import InvalidInput, OriginNotAllowed
from user_service.schemas import TokenPair

COOKIE_NAME = "refresh_token"
# Token responses must never be cached (RFC 6749 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.service.settings
    return settings


def _cookie_path(request: Request) -> str:
    # Under a mount (`/accounts`), the auth endpoints live below the mount path.
    return f"{request.scope.get('root_path', '').rstrip('/')}/auth"


def token_response(pair: TokenPair, request: Request) -> Response:
    """A token pair as the response body, serialized once from the model the service built; in cookie mode the
    refresh token goes into the cookie and stays out of the body."""
    settings = _settings(request)
    if not settings.refresh_token_cookie:
        return Response(to_json(pair), media_type="application/json", headers=NO_STORE)
    response = Response(
        to_json(pair.model_dump(mode="json", exclude={"refresh_token"})),
        media_type="application/json",
        headers=NO_STORE,
    )
    response.set_cookie(
        COOKIE_NAME,
        pair.refresh_token,
        max_age=settings.refresh_token_ttl_seconds,
        path=_cookie_path(request),
        secure=settings.refresh_token_cookie_secure,
        httponly=True,
        samesite=settings.refresh_token_cookie_samesite,
    )
    return response


def clear_refresh_cookie(response: Response, request: Request) -> None:
    """Logout: the browser forgets the cookie."""
    settings = _settings(request)
    if settings.refresh_token_cookie:
        response.delete_cookie(
            COOKIE_NAME,
            path=_cookie_path(request),
            secure=settings.refresh_token_cookie_secure,
            httponly=True,
            samesite=settings.refresh_token_cookie_samesite,
        )


def _own_origin(request: Request, settings: Settings) -> str:
    if settings.public_base_url:
        scheme, _, rest = settings.public_base_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}".lower()
    return f"{request.url.scheme}://{request.url.netloc}".lower()


def refresh_token_of(request: Request, from_body: str | None) -> str:
    """The refresh token a request presents: the body's, or else (cookie mode) the cookie's from an allowed origin."""
    if from_body is not None:
        return from_body
    settings = _settings(request)
    cookie = request.cookies.get(COOKIE_NAME) if settings.refresh_token_cookie else None
    if cookie is None:
        raise InvalidInput("Send the refresh token as `refresh_token` in the JSON body.")
    origin = (request.headers.get("origin") or "").rstrip("/").lower()
    allowed = {item.lower() for item in settings.cors_origin_list} | {_own_origin(request, settings)}
    if origin not in allowed:
        raise OriginNotAllowed()
    return cookie
