"""A separate service that accepts user-service access tokens, verifying them through the JWKS URL only: no database,
no JWT_SECRET_KEY, no call to user-service per request.

    USER_SERVICE_URL=http://127.0.0.1:8000 uvicorn examples.downstream_service:app --port 8100
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8100/orders

Settings (environment): USER_SERVICE_URL (where user-service runs), JWT_ISSUER and JWT_AUDIENCE (as user-service's,
`user-service` by default), SERVED_NAMESPACES (comma-separated; empty: any namespace).

A token of an ended session stays valid here until it expires (at most ACCESS_TOKEN_TTL_SECONDS): for actions where
that matters, ask user-service's GET /users/me instead.
"""

import os
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException

from user_service.verify import TokenVerifier, VerifiedClaims


def build_app() -> FastAPI:
    """The downstream app, configured from the environment."""
    base = os.environ.get("USER_SERVICE_URL", "http://127.0.0.1:8000").rstrip("/")
    verifier = TokenVerifier(
        f"{base}/.well-known/jwks.json",
        issuer=os.environ.get("JWT_ISSUER", "user-service"),
        audience=os.environ.get("JWT_AUDIENCE", "user-service"),
    )
    served = frozenset(name.strip() for name in os.environ.get("SERVED_NAMESPACES", "").split(",") if name.strip())
    verified = verifier.dependency()

    async def caller(claims: Annotated[VerifiedClaims, Depends(verified)]) -> VerifiedClaims:
        # Anyone may hold an account in some namespace: a service for some apps accepts only theirs.
        if served and claims.namespace not in served:
            raise HTTPException(401, "The token belongs to another namespace.", headers={"WWW-Authenticate": "Bearer"})
        return claims

    # (No `from __future__ import annotations` in this module: FastAPI reads these local dependencies from the
    # annotations as objects.)
    app = FastAPI(title="orders (a downstream service)")

    @app.get("/orders", summary="The caller's orders")
    async def orders(claims: Annotated[VerifiedClaims, Depends(caller)]) -> dict[str, object]:
        return {
            "user_id": str(claims.user_id),
            "namespace": claims.namespace,
            "username": claims.username,
            "orders": [],
        }

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = build_app()
