"""Liveness, database and avatar-storage reachability, for load balancers and operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from user_service import __version__
from user_service.api.deps import ServiceDep, run_single_read
from user_service.api.metrics import Metrics
from user_service.errors import ErrorCode
from user_service.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Service, database and avatar storage status",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached."}},
)
async def health(service: ServiceDep, request: Request) -> JSONResponse:
    ok = await run_single_read(service, service.database_ok)
    metrics: Metrics | None = request.app.state.metrics
    if not ok and metrics is not None:
        metrics.refused(ErrorCode.DATABASE_UNAVAILABLE, "/health")
    # The storage's answer is cached for a few seconds; a fresh probe is a network call (S3), kept off the loop.
    # Without storage only uploads fail: "degraded", still 200, so load balancers keep the instance.
    storage_ok = await run_in_threadpool(service.storage_ok)
    status = "unavailable" if not ok else "ok" if storage_ok else "degraded"
    body = Health(
        status=status,
        database="ok" if ok else "unavailable",
        storage="ok" if storage_ok else "unavailable",
        version=__version__,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
