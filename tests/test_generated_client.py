"""A Python client generated with openapi-python-client from the served schema works end to end: register, login,
me, refresh; its error models carry the documented codes."""

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, MakeClient

PACKAGE = "user_service_generated_client"
VENV_BIN = Path(sys.executable).parent
GENERATOR = str(VENV_BIN / "openapi-python-client")


@contextmanager
def generate(client: TestClient, tmp_path: Path) -> Iterator[ModuleType]:
    """The client package, generated in a temporary folder from the schema the app serves."""
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    (tmp_path / "schema.json").write_text(json.dumps(schema.json()))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [GENERATOR, "generate", "--path", "schema.json", "--output-path", PACKAGE, "--meta", "none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Skipping" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def generated(client: TestClient, tmp_path: Path) -> Iterator[ModuleType]:
    with generate(client, tmp_path) as package:
        yield package


def part(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_register_login_me_refresh_through_a_generated_client(generated: ModuleType, client: TestClient) -> None:
    api = part(generated, "client").Client(base_url="http://testserver")
    api.set_httpx_client(client)
    models = part(generated, "models")
    account = {"namespace": "app-x", "username": "Alice", "password": PASSWORD}

    created = part(generated, "api.auth.auth_register").sync(
        client=api, body=models.RegisterRequest.from_dict({**account, "extra": {"plan": "pro"}})
    )
    assert isinstance(created, models.Profile), created
    assert created.username == "alice"

    pair = part(generated, "api.auth.auth_login").sync(client=api, body=models.LoginRequest.from_dict(account))
    assert isinstance(pair, models.TokenPair), pair
    assert pair.expires_at.tzinfo is not None

    authed = part(generated, "client").AuthenticatedClient(base_url="http://testserver", token=pair.access_token)
    authed.set_httpx_client(client)
    client.headers["Authorization"] = f"Bearer {pair.access_token}"
    try:
        me = part(generated, "api.users.users_get_me").sync(client=authed)
    finally:
        del client.headers["Authorization"]
    assert isinstance(me, models.Profile), me
    assert me.id == created.id

    fresh = part(generated, "api.auth.auth_refresh").sync(
        client=api, body=models.RefreshRequest(refresh_token=pair.refresh_token)
    )
    assert isinstance(fresh, models.TokenPair), fresh
    assert fresh.refresh_token != pair.refresh_token

    reused = part(generated, "api.auth.auth_refresh").sync_detailed(
        client=api, body=models.RefreshRequest(refresh_token=pair.refresh_token)
    )
    assert reused.status_code == 401
    assert reused.parsed.code.value == "refresh_token_reused"


def test_a_generated_client_in_cookie_mode_reads_token_answers_and_refreshes_by_cookie(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """The cookie-mode schema marks the refresh token optional: the generated TokenPair reads an answer without
    it, and a RefreshRequest without it sends the cookie's."""
    client = make_client(refresh_token_cookie=True, cors_origins="https://app.example.com")
    client.base_url = client.base_url.copy_with(scheme="https")
    client.headers["Origin"] = "https://app.example.com"
    with generate(client, tmp_path) as generated:
        api = part(generated, "client").Client(base_url="https://testserver")
        api.set_httpx_client(client)
        models = part(generated, "models")
        account = {"namespace": "acme", "username": "alice", "password": PASSWORD}
        assert client.post("/auth/register", json=account).status_code == 201

        pair = part(generated, "api.auth.auth_login").sync(client=api, body=models.LoginRequest.from_dict(account))
        assert isinstance(pair, models.TokenPair), pair
        assert not pair.refresh_token
        old = client.cookies.get("refresh_token")

        fresh = part(generated, "api.auth.auth_refresh").sync(client=api, body=models.RefreshRequest())
        assert isinstance(fresh, models.TokenPair), fresh
        assert client.cookies.get("refresh_token") not in (None, old)


def test_operation_ids_are_stable_and_readable(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}

    assert {"auth_register", "auth_login", "auth_refresh", "auth_logout", "users_get_me", "users_update_me"} <= ids
    assert all(op_id.split("_", 1)[0] in {"auth", "users", "health", "uploads", "keys", "admin"} for op_id in ids)
    assert not [op_id for op_id in ids if op_id.endswith(("_get", "_post", "_patch", "_delete"))]


def test_every_error_response_documents_its_codes_as_an_enum(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    refresh = schema["paths"]["/auth/refresh"]["post"]["responses"]

    body = refresh["401"]["content"]["application/json"]["schema"]
    assert set(body["properties"]["code"]["enum"]) == {
        "invalid_token",
        "token_expired",
        "refresh_token_reused",
        "session_revoked",
    }
    assert "WWW-Authenticate" in refresh["401"]["headers"]
    assert "Retry-After" in refresh["429"]["headers"]
    assert "Cache-Control" in refresh["200"]["headers"]
    for path, operations in schema["paths"].items():
        if path == "/health":  # its 503 is the health body, saying which part is down
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and status != "422":
                    content = response["content"]["application/json"]["schema"]
                    assert content["properties"]["code"]["enum"], (method, path, status)
