"""The public signing keys, for services that verify access tokens themselves."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from user_service.api.deps import ServiceDep
from user_service.api.errors import responses
from user_service.errors import DatabaseUnavailable
from user_service.schemas import JsonWebKeySet

router = APIRouter(tags=["keys"])

# Verifiers may keep the set this long; a rotation publishes the next key long before it signs.
JWKS_MAX_AGE_SECONDS = 300


@router.get(
    "/.well-known/jwks.json",
    summary="The public keys that verify access tokens (JWKS, RFC 7517)",
    response_model=JsonWebKeySet,
    responses=responses(DatabaseUnavailable),
)
async def jwks(service: ServiceDep) -> JSONResponse:
    """The next, current and recently retired public keys; empty when tokens are signed with an HS* secret."""
    body = await run_in_threadpool(service.jwks)
    return JSONResponse(
        body,
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
    )
