"""The app factory. Everything is built per app instance; nothing depends on the lifespan having run, because
Starlette does not run a mounted app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from user_service import __version__
from user_service.api.docs import install_docs
from user_service.api.errors import install_error_handlers
from user_service.api.metrics import Metrics
from user_service.api.middleware import RequestGuard
from user_service.api.openapi import mark_refresh_token_optional, operation_id
from user_service.api.ratelimit import AddressRateLimiter
from user_service.api.request_context import RequestContext
from user_service.api.routes import admin, auth, health, keys, uploads, users
from user_service.config import Settings, load_settings
from user_service.service import Clock, UserService
from user_service.storage import AvatarStorage

DESCRIPTION = (
    "Username/password accounts in namespaces, JWT access tokens and rotating refresh tokens, profiles and "
    "avatars. Every error body is `{detail, code}`; clients branch on `code`."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up and shut-down work of a user-service app; a host that mounts the app can enter it from its own
    lifespan. Without it the app works the same, a little slower on SQLite, and keeps its connections until exit."""
    service: UserService = app.state.service
    # The event loop runs the token check's read itself on SQLite: it keeps one connection for those reads.
    service.keep_reader_for_this_thread()
    yield
    service.close()
    limiter: AddressRateLimiter = app.state.rate_limiter
    limiter.close()


class UserServiceApp(FastAPI):
    """A FastAPI app whose outermost layer, outside even Starlette's error middleware, is RequestContext."""

    def build_middleware_stack(self) -> ASGIApp:
        service: UserService = self.state.service
        return RequestContext(
            super().build_middleware_stack(),
            routes=self.router.routes,
            metrics=self.state.metrics,
            access_log=service.settings.access_log,
            trusted_proxies=service.settings.trusted_proxy_networks,
        )

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema (built once), saying in cookie mode where the refresh token really travels."""
        schema = super().openapi()
        service: UserService = self.state.service
        if service.settings.refresh_token_cookie:
            mark_refresh_token_optional(schema)
        return schema


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    storage: AvatarStorage | None = None,
    metrics: bool | None = None,
) -> FastAPI:
    """Build the HTTP app; settings default to the environment and `.env`. Refuses to build without a secret.
    `metrics` counts requests and auth events (see `user_service.metrics_app`); by default only when METRICS_PORT
    is set."""
    settings = settings if settings is not None else load_settings()
    settings.signing_key()
    service = UserService(settings, clock=clock, storage=storage)
    app = UserServiceApp(
        title="user-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # The docs pages and the schema's route are this package's own (scripts pinned with integrity hashes, the
        # schema as seen through the mount path); DOCS_ENABLED=false leaves the schema unpublished too.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Starlette would answer `/users/me/` with a redirect to an absolute URL built from the Host header, which
        # the client controls: a path that does not match is a 404 like any other.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
    )
    app.state.service = service
    counting = metrics if metrics is not None else settings.metrics_port is not None
    app.state.metrics = Metrics(namespace_label=settings.metrics_namespace_label) if counting else None
    app.state.rate_limiter = AddressRateLimiter(settings)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            # Cookie mode: the browser sends the refresh-token cookie to these origins' requests, and reads answers.
            allow_credentials=settings.refresh_token_cookie,
            # Readable from another origin: when to retry, why a token failed, and the request's id (to quote it in
            # a support request).
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID"],
            max_age=600,
        )
    # Added last, so it is the outermost: CORS preflight answers get its headers too.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.request_max_bytes,
        avatar_max_bytes=settings.avatar_max_bytes,
        metrics=app.state.metrics,
    )
    install_error_handlers(app)
    # Routers are tried in this order, each route of a router tried (FastAPI matches an included router's routes
    # once to pick the router and again to pick the route, a few microseconds each): the most frequent requests
    # first, GET /users/me, then the token endpoints (refresh, login).
    for router in (
        users.me_router,
        auth.router,
        health.router,
        users.router,
        uploads.router,
        keys.router,
        admin.router,
    ):
        app.include_router(router)
    if settings.docs_enabled:
        install_docs(app, "/openapi.json")
    return app
