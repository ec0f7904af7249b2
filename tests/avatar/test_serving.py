"""GET /uploads/<key>: unknown keys are 404 with a code, and no path reaches a file outside the upload folder."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.avatar.conftest import (
    Uploader,
    stored_key,
)
from tests.conftest import image_bytes

# -- serving ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/0123456789abcdef0123456789abcdef.png",
        "/uploads/0123456789abcdef0123456789abcdef.webp",
        "/uploads/nothing-here",
        "/uploads/avatar.png",
    ],
)
def test_unknown_upload_is_404_with_a_code(uploader: Uploader, path: str) -> None:
    response = uploader.client.get(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


SECRET = b"outside the upload folder"
OUTSIDE_KEY = "fedcba9876543210fedcba9876543210.png"


@pytest.fixture
def planted(uploader: Uploader) -> str:
    """Files a traversal would reach: one beside the upload folder, and wrongly named ones inside it."""
    key = stored_key(uploader.upload(image_bytes("PNG")))["key"]
    (uploader.upload_dir.parent / OUTSIDE_KEY).write_bytes(SECRET)
    (uploader.upload_dir.parent / "secret.txt").write_bytes(SECRET)
    (uploader.upload_dir / key.replace(".png", ".html")).write_bytes(SECRET)
    (uploader.upload_dir / f"{key}.html").write_bytes(SECRET)
    (uploader.upload_dir / ".upload-partial").write_bytes(SECRET)
    return key


TRAVERSALS = [
    "/uploads/../{outside}",
    "/uploads/%2e%2e/{outside}",
    "/uploads/..%2f{outside}",
    "/uploads/..%5c{outside}",
    "/uploads/..%252f{outside}",
    "/uploads/{absolute}",
    "/uploads//{absolute_raw}",
    "/uploads/%2f{absolute}",
    "/uploads/..%2fsecret.txt",
    "/uploads/{html}",
    "/uploads/{key}.html",
    "/uploads/{key}%00.html",
    "/uploads/{upper}",
    "/uploads/.upload-partial",
    "/uploads/%2e%2e",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_path_traversal_never_serves_a_file_outside_the_folder(uploader: Uploader, planted: str, template: str) -> None:
    outside = uploader.upload_dir.parent / OUTSIDE_KEY
    path = template.format(
        outside=OUTSIDE_KEY,
        absolute=quote(str(outside), safe=""),
        absolute_raw=str(outside).lstrip("/"),
        html=planted.replace(".png", ".html"),
        key=planted,
        upper=planted.upper(),
    )

    response = uploader.client.get(path)

    assert response.status_code == 404, (path, response.status_code)
    assert response.json()["code"] == "not_found"
    assert SECRET not in response.content
    assert uploader.client.get(f"/uploads/{planted}").status_code == 200
