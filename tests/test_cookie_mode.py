"""REFRESH_TOKEN_COOKIE: the refresh token in an HttpOnly cookie for browser apps, with the CSRF origin check, and
CORS with credentials and exposed headers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import PASSWORD, Api, MakeApi, MakeClient
from tests.helpers import assert_refused

APP = "https://app.example.com"
ACCOUNT = {"namespace": "app-x", "username": "alice", "password": PASSWORD}


@pytest.fixture
def browser(make_api: MakeApi) -> Api:
    """An Api in cookie mode whose client is served over https (so Secure cookies travel back), with the app's
    origin allowed."""
    api = make_api(refresh_token_cookie=True, cors_origins=APP)
    api.client.base_url = api.client.base_url.copy_with(scheme="https")
    return api


def login(api: Api) -> dict[str, Any]:
    api.created()
    response = api.login()
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_cookie(response: Any) -> str:
    header: str = response.headers["set-cookie"]
    return header


def test_login_sets_an_httponly_cookie_and_leaves_the_token_out_of_the_body(browser: Api) -> None:
    browser.created()
    response = browser.login()

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert {"access_token", "expires_in", "expires_at", "token_type"} <= set(response.json())
    cookie = set_cookie(response).lower()
    assert cookie.startswith("refresh_token=")
    for attribute in ("httponly", "secure", "samesite=strict", "path=/auth", "max-age=2592000"):
        assert attribute in cookie, cookie


def test_refresh_takes_the_cookie_from_an_allowed_origin_and_rotates_it(browser: Api) -> None:
    login(browser)
    old = browser.client.cookies.get("refresh_token")

    response = browser.client.post("/auth/refresh", headers={"Origin": APP})

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert browser.me(response.json()["access_token"]).status_code == 200
    assert browser.client.cookies.get("refresh_token") not in (None, old)


def test_refresh_from_its_own_origin_is_accepted(browser: Api) -> None:
    login(browser)

    response = browser.client.post("/auth/refresh", headers={"Origin": "https://testserver"})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null", "http://app.example.com"])
def test_a_cookie_refresh_from_another_origin_is_refused(browser: Api, origin: str | None) -> None:
    login(browser)
    headers = {"Origin": origin} if origin is not None else {}

    response = browser.client.post("/auth/refresh", headers=headers)

    assert_refused(response, 403, "origin_not_allowed")


def test_logout_by_cookie_ends_the_session_and_clears_it(browser: Api) -> None:
    pair = login(browser)

    refused = browser.client.post("/auth/logout", headers={"Origin": "https://evil.example"})
    assert_refused(refused, 403, "origin_not_allowed")
    response = browser.client.post("/auth/logout", headers={"Origin": APP})

    assert response.status_code == 204, response.text
    assert "max-age=0" in set_cookie(response).lower()
    assert browser.client.cookies.get("refresh_token") is None
    assert browser.me(pair["access_token"]).status_code == 401


def test_password_change_sets_the_new_cookie(browser: Api) -> None:
    pair = login(browser)
    old = browser.client.cookies.get("refresh_token")

    response = browser.client.post(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another good passphrase"},
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )

    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert browser.client.cookies.get("refresh_token") not in (None, old)


def test_a_body_token_still_works_in_cookie_mode(browser: Api) -> None:
    login(browser)
    token = browser.client.cookies.get("refresh_token")
    assert token is not None
    browser.client.cookies.clear()

    response = browser.client.post("/auth/refresh", json={"refresh_token": token})

    assert response.status_code == 200, response.text


def test_secure_can_be_turned_off_and_samesite_chosen(make_api: MakeApi) -> None:
    api = make_api(refresh_token_cookie=True, refresh_token_cookie_secure=False, refresh_token_cookie_samesite="lax")
    api.created()

    cookie = set_cookie(api.login()).lower()

    assert "secure" not in cookie
    assert "samesite=lax" in cookie


def test_without_cookie_mode_nothing_changes(api: Api) -> None:
    pair = login(api)

    assert "refresh_token" in pair
    assert "set-cookie" not in api.login().headers
    response = api.client.post("/auth/refresh")
    assert_refused(response, 422, "invalid_input")


def test_cors_with_cookie_mode_allows_credentials_and_exposes_headers(make_client: MakeClient) -> None:
    client = make_client(refresh_token_cookie=True, cors_origins=APP)

    preflight = client.options("/auth/refresh", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
    answer = client.get("/health", headers={"Origin": APP})

    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert answer.headers["access-control-allow-credentials"] == "true"
    exposed = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "www-authenticate", "x-request-id"} <= exposed


def test_cors_without_cookie_mode_exposes_headers_but_no_credentials(make_client: MakeClient) -> None:
    client = make_client(cors_origins=APP)

    answer = client.get("/health", headers={"Origin": APP})

    assert "access-control-allow-credentials" not in answer.headers
    assert "retry-after" in answer.headers["access-control-expose-headers"].lower()


def test_the_cookie_path_follows_a_mount(make_settings: Any) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from user_service import create_app

    host = FastAPI()
    host.mount("/accounts", create_app(make_settings(refresh_token_cookie=True)))
    with TestClient(host, base_url="https://testserver") as client:
        assert client.post("/accounts/auth/register", json=ACCOUNT).status_code == 201
        response = client.post("/accounts/auth/login", json=ACCOUNT)

    assert "path=/accounts/auth" in set_cookie(response).lower()
