"""What the served OpenAPI schema tells a client beyond the shapes: an example of every body, which its model
accepts; where the bearer token comes from, through the path the app is mounted at; and, in cookie mode, that the
refresh token is optional where the cookie carries it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.conftest import TEST_SECRET, Api, MakeApi
from tests.helpers import assert_refused
from user_service import create_app, schemas
from user_service.config import Settings

APP = "https://app.example.com"
MODES = {"default": {}, "cookie": {"refresh_token_cookie": True}}
REFRESH_TOKEN_MODELS = ("TokenPair", "RefreshRequest", "LogoutRequest")


def build(tmp_path: Path, **overrides: Any) -> FastAPI:
    """An app whose schema is asked for; serving the schema never touches the database."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        jwt_secret_key=TEST_SECRET,
        _env_file=None,  # type: ignore[call-arg]
        **overrides,
    )
    return create_app(settings)


def served(client: TestClient, prefix: str = "") -> dict[str, Any]:
    response = client.get(f"{prefix}/openapi.json")
    assert response.status_code == 200, response.text
    schema: dict[str, Any] = response.json()
    return schema


# -- an example of every body -----------------------------------------------------------------------------------


def models_of(schema: dict[str, Any]) -> list[str]:
    """The component schemas a body's schema stands for: through $ref, each branch of a union, an array's items."""
    if "$ref" in schema:
        return [schema["$ref"].rsplit("/", 1)[-1]]
    branches = [branch for key in ("anyOf", "oneOf", "allOf") for branch in schema.get(key, [])]
    if "items" in schema:
        branches.append(schema["items"])
    return [name for branch in branches for name in models_of(branch)]


def bodies(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every request body's media types and every JSON body of a success response: (operation, media type, media)."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                found.append((f"{name} request", media_type, media))
            for status, response in operation["responses"].items():
                media = response.get("content", {}).get("application/json")
                if status.startswith("2") and media is not None:
                    found.append((f"{name} {status}", "application/json", media))
    return found


def media_examples(media: dict[str, Any]) -> list[Any]:
    examples = [media["example"]] if "example" in media else []
    return examples + [example["value"] for example in media.get("examples", {}).values()]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_body_has_an_example_its_model_accepts(tmp_path: Path, mode: str) -> None:
    schema = served(TestClient(build(tmp_path, **MODES[mode])))
    components = schema["components"]["schemas"]
    found = bodies(schema)
    assert {where for where, _media_type, _media in found} >= {"POST /auth/login request", "POST /auth/login 200"}

    for where, media_type, media in found:
        names = models_of(media["schema"])
        given = media_examples(media)
        if not names or media_type != "application/json":
            assert given, f"{where} ({media_type}): no example"
            continue
        for name in names:
            examples = components[name].get("examples", []) + given
            assert examples, f"{where}: neither {name} nor the body has an example"
            model = getattr(schemas, name, None)
            assert isinstance(model, type) and issubclass(model, BaseModel), f"{name} is not a model of schemas.py"
            for example in examples:
                model.model_validate(example)


def test_examples_carry_no_whole_token(tmp_path: Path) -> None:
    """Tokens in examples are shortened: nothing that looks like a working secret is published."""
    text = TestClient(build(tmp_path)).get("/openapi.json").text
    assert "eyJhbGciOi..." in text
    for token in re.findall(r'"(?:access_token|refresh_token|token)":\s*"([^"]*)"', text):
        assert token.endswith("...") and len(token) <= 16, token


# -- where the bearer token comes from ----------------------------------------------------------------------------


def bearer_paths(schema: dict[str, Any]) -> list[str]:
    description: str = schema["components"]["securitySchemes"]["HTTPBearer"]["description"]
    return re.findall(r"POST (\S+?)[;.]", description)


def test_standalone_the_bearer_scheme_names_the_login_and_refresh_paths(tmp_path: Path) -> None:
    schema = served(TestClient(build(tmp_path)))

    description = schema["components"]["securitySchemes"]["HTTPBearer"]["description"]
    assert description == "Access token from POST /auth/login; refresh at POST /auth/refresh."
    assert "servers" not in schema
    for path in bearer_paths(schema):
        assert "post" in schema["paths"][path], path


def test_mounted_the_bearer_scheme_names_the_mounted_paths(tmp_path: Path) -> None:
    accounts = build(tmp_path)
    host = FastAPI()
    host.mount("/accounts", accounts)
    # One app under two prefixes: each schema names its own.
    host.mount("/api/v2/users", accounts)
    web = TestClient(host)

    for prefix in ("/accounts", "/api/v2/users"):
        schema = served(web, prefix)
        description = schema["components"]["securitySchemes"]["HTTPBearer"]["description"]
        assert description == (f"Access token from POST {prefix}/auth/login; refresh at POST {prefix}/auth/refresh.")
        assert schema["servers"] == [{"url": prefix}]
        for path in bearer_paths(schema):
            assert "post" in schema["paths"][path.removeprefix(prefix)], path

    # The app's own schema, and the admin key's scheme, are left as they were.
    assert bearer_paths(accounts.openapi()) == ["/auth/login", "/auth/refresh"]
    assert "servers" not in accounts.openapi()
    assert (
        served(web, "/accounts")["components"]["securitySchemes"]["AdminKey"]
        == (accounts.openapi()["components"]["securitySchemes"]["AdminKey"])
    )


def test_the_mounted_login_path_in_the_schema_logs_in(settings: Settings) -> None:
    """The path the description names is one a client can call through the host."""
    host = FastAPI()
    host.mount("/accounts", create_app(settings))
    web = TestClient(host)
    login, _refresh = bearer_paths(served(web, "/accounts"))

    account = {"namespace": "acme", "username": "alice", "password": "correct horse battery staple"}
    assert web.post("/accounts/auth/register", json=account).status_code == 201
    response = web.post(login, json=account)

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "bearer"


# -- the refresh token in cookie mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_refresh_token_is_optional_in_the_schema_only_in_cookie_mode(tmp_path: Path, mode: str) -> None:
    components = served(TestClient(build(tmp_path, **MODES[mode])))["components"]["schemas"]

    for name in REFRESH_TOKEN_MODELS:
        field = components[name]["properties"]["refresh_token"]
        assert field["type"] == "string", name
        if mode == "cookie":
            assert "refresh_token" not in components[name].get("required", []), name
            assert "cookie" in field["description"], name
        else:
            assert "refresh_token" in components[name]["required"], name
            assert "description" not in field, name
    assert "access_token" in components["TokenPair"]["required"]


@pytest.fixture
def browser(make_api: MakeApi) -> Api:
    """An app in cookie mode, reached over https (so Secure cookies travel back) from an allowed origin."""
    api = make_api(refresh_token_cookie=True, cors_origins=APP)
    api.client.base_url = api.client.base_url.copy_with(scheme="https")
    return api


def test_in_cookie_mode_a_token_answer_is_what_the_schema_says(browser: Api) -> None:
    browser.created()
    components = served(browser.client)["components"]["schemas"]

    body = browser.logged_in()

    assert "refresh_token" not in body
    assert set(components["TokenPair"]["required"]) <= set(body)


@pytest.mark.parametrize("path", ["/auth/refresh", "/auth/logout"])
def test_in_cookie_mode_a_body_without_the_token_takes_the_cookies(browser: Api, path: str) -> None:
    browser.created()
    browser.logged_in()

    refused = browser.client.post(path, json={}, headers={"Origin": "https://evil.example"})
    response = browser.client.post(path, json={}, headers={"Origin": APP})

    assert_refused(refused, 403, "origin_not_allowed")
    assert response.status_code in (200, 204), response.text


@pytest.mark.parametrize("path", ["/auth/refresh", "/auth/logout"])
@pytest.mark.parametrize("body", [{}, {"refresh_token": None}])
def test_without_cookie_mode_a_body_without_the_token_is_refused(api: Api, path: str, body: dict[str, Any]) -> None:
    response = api.client.post(path, json=body)

    assert_refused(response, 422, "invalid_input")
