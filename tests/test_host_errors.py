"""A host app's own routes protected by require_user answer the service's error body ({detail, code}) and headers,
whatever exception handlers the host has (none, or its own for HTTPException)."""

# No `from __future__ import annotations`: the host route below names a local in its Depends().
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, FakeClock, bearer
from tests.helpers import service_of
from user_service import Profile, Settings, create_app, require_user

ACCOUNT = {"namespace": "notes-app", "username": "alice", "password": PASSWORD}


async def _host_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def build_host(settings: Settings, clock: FakeClock, *, own_handler: bool) -> tuple[FastAPI, FastAPI]:
    accounts = create_app(settings, clock=clock)
    host = FastAPI()
    if own_handler:
        host.add_exception_handler(HTTPException, _host_http_error)
    host.mount("/accounts", accounts)

    @host.get("/notes")
    def notes(user: Annotated[Profile, Depends(require_user(accounts, namespace="notes-app"))]) -> dict[str, Any]:
        return {"owner": user.username}

    return host, accounts


@pytest.fixture(params=[False, True], ids=["bare-host", "host-with-its-own-handler"])
def host(request: pytest.FixtureRequest, settings: Settings, clock: FakeClock) -> Iterator[tuple[TestClient, FastAPI]]:
    web, accounts = build_host(settings, clock, own_handler=request.param)
    with TestClient(web) as client:
        yield client, accounts


def tokens(web: TestClient) -> dict[str, Any]:
    assert web.post("/accounts/auth/register", json=ACCOUNT).status_code == 201
    response = web.post(
        "/accounts/auth/login", json={key: ACCOUNT[key] for key in ("namespace", "username", "password")}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def same_error(web: TestClient, token: str | None) -> tuple[Any, Any]:
    headers = bearer(token) if token is not None else {}
    return web.get("/notes", headers=headers), web.get("/accounts/users/me", headers=headers)


CASES: dict[str, Callable[[TestClient, FastAPI, FakeClock], str | None]] = {
    "no-token": lambda web, accounts, clock: None,
    "garbage": lambda web, accounts, clock: "not-a-jwt",
    "expired": lambda web, accounts, clock: _expired(web, clock),
    "disabled": lambda web, accounts, clock: _disabled(web, accounts),
}


def _expired(web: TestClient, clock: FakeClock) -> str:
    token = str(tokens(web)["access_token"])
    clock.advance(3600)
    return token


def _disabled(web: TestClient, accounts: FastAPI) -> str:
    token = str(tokens(web)["access_token"])
    service_of(accounts).set_active(namespace="notes-app", username="alice", active=False)
    return token


@pytest.mark.parametrize("case", sorted(CASES))
def test_host_route_refusals_match_the_service(host: tuple[TestClient, FastAPI], clock: FakeClock, case: str) -> None:
    web, accounts = host
    token = CASES[case](web, accounts, clock)

    on_host, on_service = same_error(web, token)

    assert on_host.status_code == on_service.status_code
    assert on_host.json() == on_service.json()
    assert set(on_host.json()) == {"detail", "code"}
    assert on_host.headers.get("www-authenticate") == on_service.headers.get("www-authenticate")


def test_expired_token_on_the_host_says_token_expired(host: tuple[TestClient, FastAPI], clock: FakeClock) -> None:
    web, _accounts = host
    token = _expired(web, clock)

    response = web.get("/notes", headers=bearer(token))

    assert response.status_code == 401
    assert response.json() == {"detail": "The token has expired.", "code": "token_expired"}


def test_a_token_of_another_namespace_is_invalid_token_on_the_host(host: tuple[TestClient, FastAPI]) -> None:
    web, _accounts = host
    other = {**ACCOUNT, "namespace": "elsewhere"}
    assert web.post("/accounts/auth/register", json=other).status_code == 201
    pair = web.post("/accounts/auth/login", json=other).json()

    response = web.get("/notes", headers=bearer(pair["access_token"]))

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_the_services_own_422_carries_a_code(host: tuple[TestClient, FastAPI]) -> None:
    web, _accounts = host

    response = web.post("/accounts/auth/register", json={"namespace": "notes-app"})

    assert response.status_code == 422
    body = response.json()
    assert isinstance(body["detail"], list)
    assert body["code"] == "invalid_input"
