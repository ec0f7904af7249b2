"""Serving stored avatars."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from user_service.api.deps import ServiceDep
from user_service.api.errors import error_content
from user_service.images import MEDIA_TYPES
from user_service.schemas import UnprocessableBody

router = APIRouter(tags=["uploads"])

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    # Keys are random and never reused, so a file under a key never changes.
    "Cache-Control": "public, max-age=31536000, immutable",
}


@router.get(
    "/uploads/{key}",
    summary="An uploaded avatar",
    response_class=FileResponse,
    responses={
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()}},
        404: {"description": "code: `not_found`", "content": error_content(["not_found"])},
        422: {"model": UnprocessableBody, "description": "Malformed request."},
    },
)
async def read_upload(key: str, service: ServiceDep) -> FileResponse:
    path = service.storage.path(key)
    if path is None:
        raise HTTPException(404, "No such file.")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")], headers=_HEADERS)
