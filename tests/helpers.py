"""Helpers shared by the test modules: hand-made JWTs, the checks of a refused response, the service behind an app.

Fixtures live in tests/conftest.py; these are plain functions and constants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt

from tests.conftest import TEST_SECRET
from user_service.service import UserService

REDIS_URL = "redis://127.0.0.1:6379/0"
DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


# -- hand-made tokens ---------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hmac_signature(signing_input: str, key: str, digest: Callable[..., Any] = hashlib.sha256) -> str:
    return b64url(hmac.new(key.encode(), signing_input.encode(), digest).digest())


def forge(claims: dict[str, Any], *, alg: str = "HS256", key: str = TEST_SECRET, **header: Any) -> str:
    """A JWT signed by hand, so any header and algorithm can be produced without a library refusing it."""
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT', **header})}.{b64json(claims)}"
    digest = DIGESTS.get(alg)
    signature = "" if digest is None else hmac_signature(signing_input, key, digest)
    return f"{signing_input}.{signature}"


def claims_of(token: str, *, issuer: str = "user-service", audience: str = "user-service") -> dict[str, Any]:
    """The verified claims of a token this service issued (time checks off: the test clock is in 2030)."""
    claims: dict[str, Any] = jwt.decode(
        token,
        TEST_SECRET,
        algorithms=["HS256"],
        audience=audience,
        issuer=issuer,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    return claims


# -- refused responses --------------------------------------------------------------------------------------------


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the stable `code` and a sentence in `detail`; returns the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    return body


def assert_refused(response: Any, status: int, code: str) -> None:
    """An error response that hands out no token."""
    assert_error(response, status, code)
    assert "access_token" not in response.text


def assert_unauthorized(response: Any, code: str = "invalid_token") -> None:
    """A 401 with `code` that names the Bearer scheme."""
    assert_error(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- the service behind an app ------------------------------------------------------------------------------------


def service_of(target: Any) -> UserService:
    """The UserService of an app made by create_app, or of the app behind a TestClient or an Api."""
    app = getattr(target, "client", target)
    app = getattr(app, "app", app)
    service: UserService = app.state.service
    return service
