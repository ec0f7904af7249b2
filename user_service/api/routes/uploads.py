"""Serving stored avatars (local storage; S3 objects are read from the bucket or a CDN)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException

from user_service.api.deps import ServiceDep
from user_service.api.errors import error_content
from user_service.images import MEDIA_TYPES
from user_service.schemas import UnprocessableBody
from user_service.storage import CACHE_CONTROL

router = APIRouter(tags=["uploads"])

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    # Keys are random and never reused, so a file under a key never changes.
    "Cache-Control": CACHE_CONTROL,
}


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: `*`, or any listed tag equal to ours under the weak comparison."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/uploads/{key}",
    summary="An uploaded avatar",
    response_class=FileResponse,
    responses={
        200: {"content": {media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES.values()}},
        304: {"description": "Not modified: the `If-None-Match` tag is this file's"},
        404: {"description": "code: `not_found`", "content": error_content(["not_found"])},
        422: {"model": UnprocessableBody, "description": "Malformed request."},
    },
)
async def read_upload(key: str, service: ServiceDep, request: Request) -> Response:
    path = service.storage.path(key)
    if path is None:
        raise HTTPException(404, "No such file.")
    # What is stored under a key never changes, so the key is the tag: the same on every instance.
    etag = f'"{path.stem}"'
    headers = {**_HEADERS, "ETag": etag}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")], headers=headers)
