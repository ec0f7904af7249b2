"""user_service.verify, the verifier for other services: light to import, strict on every token, and a FastAPI
dependency answering 401 with WWW-Authenticate: Bearer. The keys come from the service's JWKS (fetched in-process
here; tests/e2e/test_downstream.py fetches them over HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from tests.conftest import TEST_SECRET, Api, FakeClock, bearer
from tests.helpers import forge, service_of
from user_service.verify import TokenRejected, TokenVerifier, VerifiedClaims

HEAVY = ("sqlalchemy", "alembic", "bcrypt", "typer")


def test_importing_the_verifier_loads_no_database_migrations_bcrypt_or_cli() -> None:
    probe = (
        "import json, sys; import user_service.verify; "
        f"print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)

    assert json.loads(result.stdout) == []


@pytest.fixture
def verifier(api: Api, monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    """A verifier whose JWKS fetch reads the service's set as GET /.well-known/jwks.json serves it."""
    checker = TokenVerifier("http://127.0.0.1:9/.well-known/jwks.json", issuer="user-service", audience="user-service")

    def fetch() -> Any:
        response = api.client.get("/.well-known/jwks.json")
        return response.json()

    monkeypatch.setattr(checker._client, "fetch_data", fetch)
    return checker


def unexpired(claims: dict[str, Any], clock: FakeClock) -> dict[str, Any]:
    """The claims moved to the wall clock (the verifier reads real time; the service's test clock is in 2030)."""
    import time

    now = int(time.time())
    return {**claims, "iat": now, "exp": now + 900}


def resigned(api: Api, claims: dict[str, Any]) -> str:
    snapshot = service_of(api).context.keys.snapshot
    assert snapshot is not None
    signer = snapshot.signer
    return jwt.encode(claims, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def test_a_token_of_the_service_verifies_with_typed_claims(api: Api, verifier: TokenVerifier, clock: FakeClock) -> None:
    profile = api.created()
    claims = unexpired(jwt.decode(api.logged_in()["access_token"], options={"verify_signature": False}), clock)
    token = resigned(api, claims)

    verified = verifier.verify(token)

    assert isinstance(verified, VerifiedClaims)
    assert verified.user_id == uuid.UUID(profile["id"])
    assert (verified.namespace, verified.username) == ("app-x", "alice")
    assert verified.session_id == uuid.UUID(claims["sid"])
    assert int(verified.expires_at.timestamp()) == claims["exp"]


BAD: dict[str, Any] = {
    "expired": lambda claims: {**claims, "exp": claims["iat"] - 100, "iat": claims["iat"] - 1000},
    "wrong-audience": lambda claims: {**claims, "aud": "billing"},
    "wrong-issuer": lambda claims: {**claims, "iss": "elsewhere"},
    "refresh-type": lambda claims: {**claims, "type": "refresh"},
    "missing-sid": lambda claims: {k: v for k, v in claims.items() if k != "sid"},
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_token_with_bad_claims_is_rejected(api: Api, verifier: TokenVerifier, clock: FakeClock, kind: str) -> None:
    claims = unexpired(jwt.decode(api.tokens()["access_token"], options={"verify_signature": False}), clock)

    with pytest.raises(TokenRejected):
        verifier.verify(resigned(api, BAD[kind](claims)))


def test_forged_and_unknown_key_tokens_are_rejected(api: Api, verifier: TokenVerifier, clock: FakeClock) -> None:
    token = api.tokens()["access_token"]
    claims = unexpired(jwt.decode(token, options={"verify_signature": False}), clock)
    kid = jwt.get_unverified_header(token)["kid"]
    stranger = ec.generate_private_key(ec.SECP256R1())

    for bad in (
        forge(claims, key=TEST_SECRET),
        forge(claims, key=TEST_SECRET, kid=kid),
        forge(claims, alg="none", kid=kid),
        jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": kid}),
        jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "unknown"}),
        "garbage",
    ):
        with pytest.raises(TokenRejected):
            verifier.verify(bad)


def test_the_dependency_answers_401_with_the_bearer_challenge(
    api: Api, verifier: TokenVerifier, clock: FakeClock
) -> None:
    downstream = FastAPI()
    current_claims = verifier.dependency()

    @downstream.get("/orders")
    async def orders(claims: VerifiedClaims = Depends(current_claims)) -> dict[str, str]:  # noqa: B008
        return {"user": claims.username}

    token = api.tokens()["access_token"]
    good = resigned(api, unexpired(jwt.decode(token, options={"verify_signature": False}), clock))
    with TestClient(downstream) as client:
        assert client.get("/orders", headers=bearer(good)).json() == {"user": "alice"}
        for headers in ({}, {"Authorization": "Basic abc"}, bearer("garbage"), bearer(token)):
            response = client.get("/orders", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_known_keys_keep_verifying_while_the_jwks_cannot_be_fetched(
    api: Api, verifier: TokenVerifier, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = unexpired(jwt.decode(api.tokens()["access_token"], options={"verify_signature": False}), clock)
    token = resigned(api, claims)
    assert verifier.verify(token).username == "alice"

    attempts: list[int] = []

    def unreachable() -> Any:
        attempts.append(1)
        raise jwt.PyJWKClientConnectionError("connection refused")

    monkeypatch.setattr(verifier._client, "fetch_data", unreachable)
    # The cached set has gone stale, and the last fetch was long ago: the next verification fetches again.
    monkeypatch.setattr(verifier, "_fetched_at", float("-inf"))
    monkeypatch.setattr(verifier, "_attempted_at", float("-inf"), raising=False)
    getattr(verifier, "_verified", {}).clear()

    assert verifier.verify(token).username == "alice"
    assert attempts == [1]


def test_a_repeated_token_is_verified_once_and_forgotten_at_its_expiry(
    api: Api, verifier: TokenVerifier, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from types import SimpleNamespace

    import user_service.verify as module

    claims = unexpired(jwt.decode(api.tokens()["access_token"], options={"verify_signature": False}), clock)
    token = resigned(api, claims)
    decodes: list[str] = []
    decode = jwt.decode

    def counting(raw: str, *args: Any, **kwargs: Any) -> Any:
        decodes.append(raw)
        return decode(raw, *args, **kwargs)

    monkeypatch.setattr(module.jwt, "decode", counting)
    for _ in range(3):
        assert verifier.verify(token).username == "alice"
    assert decodes == [token]

    later = SimpleNamespace(time=lambda: claims["exp"] + module.CLOCK_LEEWAY_SECONDS, monotonic=time.monotonic)
    monkeypatch.setattr(module, "time", later)
    assert verifier._remembered(token) is None
