"""Liveness and database reachability, for load balancers and operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from user_service import __version__
from user_service.api.deps import ServiceDep, run_single_read
from user_service.api.metrics import Metrics
from user_service.errors import ErrorCode
from user_service.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Service and database status",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached."}},
)
async def health(service: ServiceDep, request: Request) -> JSONResponse:
    ok = await run_single_read(service, service.database_ok)
    metrics: Metrics | None = request.app.state.metrics
    if not ok and metrics is not None:
        metrics.refused(ErrorCode.DATABASE_UNAVAILABLE, "/health")
    body = Health(status="ok" if ok else "unavailable", database="ok" if ok else "unavailable", version=__version__)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
