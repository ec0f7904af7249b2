"""No response is built from the Host header (ASVS 5.0 15.x / 4.0.3 5.1.5: no redirect to a place a client names)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api, bearer


@pytest.mark.parametrize(("method", "path"), [("GET", "/users/me/"), ("POST", "/auth/login/"), ("GET", "/health/")])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host(client: TestClient, method: str, path: str) -> None:
    """ASVS 4.0.3 5.1.5: `GET /users/me/` with `Host: evil.example` used to answer 307 to http://evil.example/...;
    it is a 404 with the project's error body, and no Location header."""
    response = client.request(method, path, headers={"Host": "evil.example"}, follow_redirects=False)

    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert response.json()["code"] == "not_found"


def test_the_path_without_the_slash_still_works(api: Api) -> None:
    tokens = api.tokens()
    response = api.client.get("/users/me", headers={**bearer(tokens["access_token"]), "Host": "evil.example"})

    assert response.status_code == 200, response.text
