"""Response headers: token responses are never cached (ASVS 5.0 14.3.2), every response carries
`X-Content-Type-Options: nosniff` (ASVS 5.0 3.4.4), and CORS answers only the origins CORS_ORIGINS lists
(ASVS 5.0 3.4.2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, Api, MakeClient, bearer, image_bytes

NEW_PASSWORD = "a brand new passphrase"
APP_ORIGIN = "https://app.example.com"
OTHER_ORIGINS = [
    "https://evil.example.com",
    "http://app.example.com",
    "https://app.example.com.evil.example",
    "https://sub.app.example.com",
    "null",
]


def assert_nosniff(response: httpx.Response) -> None:
    assert response.headers.get("X-Content-Type-Options") == "nosniff", (response.status_code, dict(response.headers))


def assert_no_cors(response: httpx.Response) -> None:
    granted = sorted(name for name in response.headers if name.lower().startswith("access-control-"))
    assert granted == [], dict(response.headers)


# -- Cache-Control on token responses -------------------------------------------------------------------------


def _login(api: Api) -> httpx.Response:
    api.tokens()
    return api.login()


def _refresh(api: Api) -> httpx.Response:
    return api.refresh(api.tokens()["refresh_token"])


def _change_password(api: Api) -> httpx.Response:
    access = api.tokens()["access_token"]
    return api.client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(access),
    )


@pytest.mark.parametrize("issue", [_login, _refresh, _change_password], ids=["login", "refresh", "password-change"])
def test_token_responses_are_not_cached(api: Api, issue: Callable[[Api], httpx.Response]) -> None:
    """ASVS 5.0 14.3.2 (4.0.3 8.2.1): a response carrying a token pair says `Cache-Control: no-store`."""
    response = issue(api)

    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"access_token", "refresh_token"}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


# -- X-Content-Type-Options on every response -----------------------------------------------------------------


def _uploaded_file(api: Api) -> httpx.Response:
    access = api.tokens()["access_token"]
    uploaded = api.client.post(
        "/users/me/avatar", files={"file": ("me.png", image_bytes("PNG"), "image/png")}, headers=bearer(access)
    )
    assert uploaded.status_code == 200, uploaded.text
    served = api.client.get(uploaded.json()["avatar_url"])
    assert served.headers["Content-Type"] == "image/png"
    return served


def _locked_out(api: Api) -> httpx.Response:
    api.register()
    responses = [api.login(password="not the password") for _ in range(11)]
    return responses[-1]


RESPONSES: dict[str, tuple[int, Callable[[Api], httpx.Response]]] = {
    "200-health": (200, lambda api: api.client.get("/health")),
    "200-login": (200, _login),
    "201-register": (201, lambda api: api.register()),
    "204-logout": (204, lambda api: api.client.post("/auth/logout", json={"refresh_token": "unknown"})),
    "401-no-token": (401, lambda api: api.client.get("/users/me")),
    "401-bad-token": (401, lambda api: api.client.get("/users/me", headers=bearer("not.a.token"))),
    "404-unknown-path": (404, lambda api: api.client.get("/no/such/path")),
    "404-unknown-upload": (404, lambda api: api.client.get("/uploads/" + "0" * 32 + ".png")),
    "405-wrong-method": (405, lambda api: api.client.put("/auth/login", json={})),
    "409-taken": (409, lambda api: (api.register(), api.register())[1]),
    "413-too-large": (413, lambda api: api.client.post("/auth/login", content=b"x" * (1_048_576 + 1))),
    "422-invalid": (422, lambda api: api.client.post("/auth/register", json={})),
    "429-locked": (429, _locked_out),
    "200-docs": (200, lambda api: api.client.get("/docs")),
    "200-openapi": (200, lambda api: api.client.get("/openapi.json")),
    "200-uploaded-file": (200, _uploaded_file),
}


@pytest.mark.parametrize("name", list(RESPONSES))
def test_every_response_carries_nosniff(api: Api, name: str) -> None:
    """ASVS 5.0 3.4.4 (4.0.3 14.4.4): successes, errors, the docs, the schema and uploaded files alike."""
    status, request = RESPONSES[name]

    response = request(api)

    assert response.status_code == status, response.text
    assert_nosniff(response)


def test_an_unexpected_error_carries_nosniff(make_client: MakeClient, tmp_path: Path) -> None:
    """ASVS 5.0 3.4.4: the 500 answer to an unexpected error is a response too."""

    class BrokenStorage:
        def save(self, source: BinaryIO, extension: str) -> str:
            raise RuntimeError("storage is down")

        def delete(self, key: str) -> None:
            raise RuntimeError("storage is down")

        def path(self, key: str) -> Path | None:
            raise RuntimeError("storage is down")

    client = make_client(storage=BrokenStorage(), raise_server_exceptions=False)

    response = client.get("/uploads/" + "0" * 32 + ".png")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "internal_error"}
    assert_nosniff(response)


@pytest.mark.parametrize(
    ("origin", "status"), [(APP_ORIGIN, 200), (OTHER_ORIGINS[0], 400)], ids=["allowed-origin", "other-origin"]
)
def test_cors_preflight_responses_carry_nosniff(make_client: MakeClient, origin: str, status: int) -> None:
    """ASVS 5.0 3.4.4: with CORS on, the preflight answers (allowed or refused) carry the header as well."""
    client = make_client(cors_origins=APP_ORIGIN)

    response = client.options("/auth/login", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})

    assert response.status_code == status, response.text
    assert_nosniff(response)


# -- CORS -----------------------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str, path: str = "/users/me") -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


@pytest.mark.parametrize("origin", [APP_ORIGIN, *OTHER_ORIGINS])
def test_cors_is_off_by_default(api: Api, origin: str) -> None:
    """ASVS 5.0 3.4.2 (4.0.3 14.5.3): without CORS_ORIGINS no origin is granted, not even on a preflight."""
    access = api.tokens()["access_token"]

    answered = preflight(api.client, origin)
    simple = api.client.get("/users/me", headers={"Origin": origin, **bearer(access)})
    login = api.client.post(
        "/auth/login",
        json={"namespace": "app-x", "username": "alice", "password": PASSWORD},
        headers={"Origin": origin},
    )

    assert answered.status_code == 405
    assert_no_cors(answered)
    assert simple.status_code == 200
    assert_no_cors(simple)
    assert login.status_code == 200
    assert_no_cors(login)


def test_cors_grants_a_listed_origin(make_client: MakeClient) -> None:
    """ASVS 5.0 3.4.2: a listed origin may send the Authorization header and reads the answer; the grant names
    that origin, never `*`."""
    client = make_client(cors_origins=APP_ORIGIN)
    api = Api(client)
    access = api.tokens()["access_token"]

    answered = preflight(client, APP_ORIGIN)
    simple = client.get("/users/me", headers={"Origin": APP_ORIGIN, **bearer(access)})

    assert answered.status_code == 200, answered.text
    assert answered.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    allowed_headers = {item.strip().lower() for item in answered.headers["Access-Control-Allow-Headers"].split(",")}
    assert "authorization" in allowed_headers
    allowed_methods = {item.strip() for item in answered.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= allowed_methods
    assert simple.status_code == 200
    assert simple.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "origin" in simple.headers["Vary"].lower()


@pytest.mark.parametrize("origin", OTHER_ORIGINS)
def test_cors_refuses_an_origin_not_listed(make_client: MakeClient, origin: str) -> None:
    """ASVS 5.0 3.4.2 (4.0.3 14.5.3): an origin that is not exactly a listed one (another host, scheme or
    subdomain, or `null`) gets no Access-Control-Allow-Origin."""
    client = make_client(cors_origins=APP_ORIGIN)
    api = Api(client)
    access = api.tokens()["access_token"]

    answered = preflight(client, origin)
    simple = client.get("/users/me", headers={"Origin": origin, **bearer(access)})

    assert answered.status_code == 400
    assert "Access-Control-Allow-Origin" not in answered.headers
    assert simple.status_code == 200
    assert "Access-Control-Allow-Origin" not in simple.headers
