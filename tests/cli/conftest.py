"""Fixtures of the command-line tests: commands run in-process through Typer's runner (the root `cli` fixture)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import patch

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from user_service.api.app import create_app
from user_service.cli import _server
from user_service.config import Settings


@pytest.fixture
def web(make_settings: Callable[..., Settings]) -> Iterator[Api]:
    """The HTTP API on the CLI's database. The CLI stamps tokens with the wall clock, so this app reads it too."""
    with TestClient(create_app(make_settings())) as client:
        yield Api(client)


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Stands in for the uvicorn runner; records what `serve` would start, and the settings it exported."""
    calls: list[dict[str, Any]] = []

    def run(settings: Settings, **options: Any) -> None:
        exported = {name: os.environ.get(name) for name in ("DATABASE_URL", "JWT_SECRET_KEY", "BCRYPT_ROUNDS")}
        calls.append({"settings": settings, "exported": exported, **options})

    monkeypatch.setattr(_server, "run_server", run)
    # `serve` hands its settings to uvicorn's workers through os.environ; no later test may inherit them.
    with patch.dict(os.environ):
        yield calls
