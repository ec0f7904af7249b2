"""The interactive docs load no unpinned third-party code (ASVS 5.0 3.6.1: Subresource Integrity for assets from
a CDN), and DOCS_ENABLED=false, the production setting, removes the docs and the schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeClock
from user_service.api.app import create_app
from user_service.config import Settings

DOC_PATHS = ["/docs", "/redoc", "/openapi.json"]
PINNED_URL = re.compile(r"https://cdn\.jsdelivr\.net/npm/[a-z-]+@\d+\.\d+\.\d+/[\w./-]+")


class ExternalAssets(HTMLParser):
    """Every script and stylesheet a page loads, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if (tag == "script" and attributes.get("src")) or (tag == "link" and attributes.get("rel") == "stylesheet"):
            self.assets.append(attributes)
        if tag == "link" and attributes.get("rel") != "stylesheet":
            # No icon or font from elsewhere either: SRI cannot cover them.
            assert not str(attributes.get("href", "")).startswith("http"), attributes


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_pinned_assets_with_integrity_hashes(client: TestClient, path: str) -> None:
    """ASVS 5.0 3.6.1: each script and stylesheet of the docs comes from one exact version, with an integrity
    hash that the browser checks, and no inline script loads anything else."""
    page = client.get(path)
    assert page.status_code == 200
    parser = ExternalAssets()
    parser.feed(page.text)

    assert parser.assets
    for asset in parser.assets:
        url = asset.get("src") or asset.get("href") or ""
        assert PINNED_URL.fullmatch(url), url
        assert re.fullmatch(r"sha384-[A-Za-z0-9+/]{64}", asset.get("integrity") or ""), asset
        assert asset.get("crossorigin") == "anonymous"
    assert "fonts.googleapis.com" not in page.text


@pytest.mark.parametrize("path", DOC_PATHS)
def test_docs_enabled_false_removes_docs_and_schema(
    make_settings: Callable[..., Settings], clock: FakeClock, path: str
) -> None:
    """ASVS 5.0 13.4.x (no unneeded documentation in production): DOCS_ENABLED=false answers 404 at /docs, /redoc
    and /openapi.json, with the project's error body."""
    app = create_app(make_settings(docs_enabled=False), clock=clock)
    with TestClient(app) as client:
        response = client.get(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("path", DOC_PATHS)
def test_docs_are_on_by_default(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200
