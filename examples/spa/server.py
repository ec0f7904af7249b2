"""Serve the browser example and user-service from one origin: the page at /, user-service mounted at /accounts in
cookie mode. Settings come from the environment and `.env` as for `user-service serve`; for local http set
REFRESH_TOKEN_COOKIE_SECURE=false. From the repository root:

    REFRESH_TOKEN_COOKIE=true REFRESH_TOKEN_COOKIE_SECURE=false python examples/spa/server.py

then open http://127.0.0.1:8000/ after creating a user in the namespace `spa-demo` (e.g. `user-service create-user
spa-demo alice --password-stdin`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from user_service import Settings, create_app, lifespan

PAGE = Path(__file__).resolve().parent / "static"


def build_app(settings: Settings | None = None) -> FastAPI:
    """The page and the service under one origin (so the Origin check of cookie mode passes as the service's own)."""
    accounts = create_app(settings)

    @asynccontextmanager
    async def host_lifespan(_host: FastAPI) -> AsyncIterator[None]:
        async with lifespan(accounts):
            yield

    host = FastAPI(lifespan=host_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    host.mount("/accounts", accounts)
    host.mount("/", StaticFiles(directory=PAGE, html=True))
    return host


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=8000)
