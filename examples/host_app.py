"""A host FastAPI app that mounts user-service under /accounts and protects one of its own routes with it.

Settings come from the environment and `.env`, as for `user-service serve`. From the repository root:

    user-service init                  # once: writes .env with a secret and migrates the database
    uvicorn examples.host_app:app      # or: python examples/host_app.py

Then register and log in through /accounts/auth/register and /accounts/auth/login in the namespace `notes-app`, and
call the host's own route with the access token: `curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/notes`.
Tokens of any other namespace are refused there (anyone can register somewhere), and notes belong to the user's id,
which never changes and is unique across namespaces.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from user_service import Profile, Settings, create_app, lifespan, metrics_app, require_user

NAMESPACE = "notes-app"


def build_app(settings: Settings | None = None) -> FastAPI:
    """The host app; settings default to the environment and `.env`."""
    # metrics=True: user-service counts requests and auth events in a registry of its own (the host's stays clean).
    accounts = create_app(settings, metrics=True)
    caller = Depends(require_user(accounts, namespace=NAMESPACE))

    @asynccontextmanager
    async def host_lifespan(_host: FastAPI) -> AsyncIterator[None]:
        # Starlette never runs a mounted app's lifespan, so the host runs user-service's inside its own.
        async with lifespan(accounts):
            yield

    host = FastAPI(title="notes", lifespan=host_lifespan)
    host.mount("/accounts", accounts)
    # Prometheus scrapes GET /metrics; in production serve it only where the scraper reaches (a private port, or a
    # proxy that keeps it from the public).
    host.mount("/metrics", metrics_app(accounts))

    @host.get("/notes", summary="The caller's notes")
    def list_notes(user: Annotated[Profile, caller]) -> dict[str, Any]:
        # The id identifies the caller: a username is unique only within its namespace.
        return {"owner_id": str(user.id), "owner": user.username, "notes": []}

    return host


def __getattr__(name: str) -> FastAPI:
    # `app` is built when asked for (as uvicorn does), so importing build_app reads neither environment nor disk.
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=8000)
