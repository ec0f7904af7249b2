"""Asymmetric signing keys (ES256 by default, EdDSA, RS256): the kid in every token, the JWKS, the strict check by
the key's own algorithm, rotation across instances, sealed private keys, and the lean GET /users/me."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from tests.conftest import Api, FakeClock, MakeApi
from tests.helpers import assert_unauthorized, b64json, b64url, forge, hmac_signature, service_of
from user_service.config import Settings
from user_service.errors import ConfigurationError
from user_service.service import UserService
from user_service.service.keys import KEY_REFRESH_SECONDS, RETIRED_KEY_PUBLISHED_SECONDS

PUBLIC_MEMBERS = {
    "EC": {"kty", "crv", "x", "y", "kid", "alg", "use"},
    "OKP": {"kty", "crv", "x", "kid", "alg", "use"},
    "RSA": {"kty", "n", "e", "kid", "alg", "use"},
}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = jwt.get_unverified_header(token)
    return header


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def signed_by_service(api: Api, claims: dict[str, Any]) -> str:
    """Claims signed with the service's own current private key and kid: only the claims can be wrong."""
    signer = service_of(api).context.keys.snapshot
    assert signer is not None
    return jwt.encode(
        claims, signer.signer.private_key, algorithm=signer.signer.algorithm, headers={"kid": signer.signer.kid}
    )


def jwks(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_tokens_carry_the_kid_of_a_published_key_of_the_algorithm(make_api: MakeApi, algorithm: str) -> None:
    api = make_api(jwt_algorithm=algorithm)
    token = api.tokens()["access_token"]

    header = header_of(token)
    published = {key["kid"]: key for key in jwks(api.client)}
    assert header["alg"] == algorithm
    assert header["kid"] in published
    assert published[header["kid"]]["alg"] == algorithm
    assert api.me(token).status_code == 200
    # Anyone holding only the JWKS verifies it with PyJWT.
    key = jwt.PyJWK(published[header["kid"]]).key
    claims = jwt.decode(
        token, key, algorithms=[algorithm], audience="user-service", options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["username"] == "alice"


def test_es256_is_the_default() -> None:
    assert Settings(_env_file=None).jwt_algorithm == "ES256"  # type: ignore[call-arg]


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_jwks_holds_the_current_and_next_public_keys_only(make_api: MakeApi, algorithm: str) -> None:
    api = make_api(jwt_algorithm=algorithm)
    api.tokens()

    response = api.client.get("/.well-known/jwks.json")

    keys = response.json()["keys"]
    assert len(keys) == 2
    assert len({key["kid"] for key in keys}) == 2
    for key in keys:
        assert set(key) == PUBLIC_MEMBERS[key["kty"]]
        assert not set(key) & PRIVATE_MEMBERS
        assert key["use"] == "sig"
    assert response.headers["Cache-Control"] == "public, max-age=300"


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
def test_jwks_is_empty_with_a_shared_secret(make_api: MakeApi, algorithm: str) -> None:
    secret = "k3y-2CyUzoYu2_A_NESWyypweSr94O8OurgH3krLM_jtMYximQhbUGemWfJFPSqDFrhGp64qGDB9"
    api = make_api(jwt_algorithm=algorithm, jwt_secret_key=secret)
    token = api.tokens()["access_token"]

    assert jwks(api.client) == []
    assert "kid" not in header_of(token)
    assert api.me(token).status_code == 200


def test_hs256_token_signed_with_the_secret_is_refused(api: Api) -> None:
    """JWT_SECRET_KEY only seals the private keys: a token signed with it is refused, even naming a real kid."""
    token = api.tokens()["access_token"]
    claims, kid = unverified(token), header_of(token)["kid"]

    assert_unauthorized(api.me(forge(claims)))
    assert_unauthorized(api.me(forge(claims, kid=kid)))


def test_hs256_token_signed_with_the_public_key_is_refused(api: Api) -> None:
    """No algorithm confusion: an HMAC over the token keyed by the public key's bytes (PEM or JWK) is refused."""
    token = api.tokens()["access_token"]
    claims, kid = unverified(token), header_of(token)["kid"]
    published = next(key for key in jwks(api.client) if key["kid"] == kid)
    public = jwt.PyJWK(published).key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    for key in (pem, json.dumps(published)):
        signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(claims)}"
        assert_unauthorized(api.me(f"{signing_input}.{hmac_signature(signing_input, key)}"))


@pytest.mark.parametrize("alg", ["none", "None", "ES384", "RS256", "EdDSA", "PS256"])
def test_a_header_naming_another_algorithm_than_the_keys_is_refused(api: Api, alg: str) -> None:
    token = api.tokens()["access_token"]
    _, body, signature = token.split(".")
    header = {**header_of(token), "alg": alg}

    assert_unauthorized(api.me(f"{b64json(header)}.{body}.{signature}"))
    assert_unauthorized(api.me(f"{b64json(header)}.{body}."))


def test_a_token_without_a_kid_or_with_an_unknown_kid_is_refused(api: Api) -> None:
    token = api.tokens()["access_token"]
    claims = unverified(token)
    stranger = ec.generate_private_key(ec.SECP256R1())

    assert_unauthorized(api.me(jwt.encode(claims, stranger, algorithm="ES256")))
    assert_unauthorized(api.me(jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "nobody"})))
    # The right kid, another key.
    assert_unauthorized(api.me(jwt.encode(claims, stranger, algorithm="ES256", headers=header_of(token))))
    # The real signature under a changed payload.
    head, _, signature = token.split(".")
    assert_unauthorized(api.me(f"{head}.{b64json({**claims, 'username': 'mallory'})}.{signature}"))
    assert_unauthorized(api.me(f"{head}.{b64url(b'{}')}.{signature}"))


CLAIM_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "faithful": (lambda claims: {**claims, "jti": uuid.uuid4().hex}, "ok"),
    "expired": (lambda claims: {**claims, "iat": claims["iat"] - 3600, "exp": claims["iat"] - 1800}, "token_expired"),
    "wrong-audience": (lambda claims: {**claims, "aud": "billing"}, "invalid_token"),
    "wrong-issuer": (lambda claims: {**claims, "iss": "someone-else"}, "invalid_token"),
    "refresh-type": (lambda claims: {**claims, "type": "refresh"}, "invalid_token"),
    "missing-sid": (lambda claims: {k: v for k, v in claims.items() if k != "sid"}, "invalid_token"),
    "missing-exp": (lambda claims: {k: v for k, v in claims.items() if k != "exp"}, "invalid_token"),
    "other-namespace": (lambda claims: {**claims, "ns": "app-y"}, "invalid_token"),
}


@pytest.mark.parametrize("change", sorted(CLAIM_CHANGES))
def test_claims_are_checked_as_strictly_with_the_keys(api: Api, change: str) -> None:
    make, outcome = CLAIM_CHANGES[change]
    claims = unverified(api.tokens()["access_token"])

    response = api.me(signed_by_service(api, make(claims)))

    if outcome == "ok":
        assert response.status_code == 200, response.text
    else:
        assert_unauthorized(response, outcome)


def test_a_logged_out_session_is_refused_at_once(api: Api) -> None:
    pair = api.tokens()

    api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})

    assert_unauthorized(api.me(pair["access_token"]))


def test_tokens_from_before_a_rotation_verify_after_it(api: Api) -> None:
    before = api.tokens()["access_token"]
    old_kid = header_of(before)["kid"]
    next_kid = {key["kid"] for key in jwks(api.client)} - {old_kid}

    current = service_of(api).rotate_keys()
    after = api.logged_in()["access_token"]

    assert {current.kid} == next_kid
    assert header_of(after)["kid"] == current.kid
    assert api.me(before).status_code == 200
    assert api.me(after).status_code == 200
    published = {key["kid"] for key in jwks(api.client)}
    assert len(published) == 3
    assert {old_kid, current.kid} <= published


def test_a_retired_key_leaves_the_jwks_once_its_tokens_have_expired(api: Api, clock: FakeClock) -> None:
    old_kid = header_of(api.tokens()["access_token"])["kid"]
    service = service_of(api)
    service.rotate_keys()

    clock.advance(RETIRED_KEY_PUBLISHED_SECONDS - 1)
    service.context.keys.snapshot = None
    assert old_kid in {key["kid"] for key in jwks(api.client)}
    clock.advance(2)
    service.context.keys.snapshot = None
    assert old_kid not in {key["kid"] for key in jwks(api.client)}
    assert {key.kid: key.state for key in service.list_keys()}[old_kid] == "retired"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def two_instances(make_api: MakeApi) -> Iterator[tuple[Api, Api, Monotonic]]:
    """Two apps on one database, like two instances; the first one's key refreshes run on a clock the test moves."""
    first, second = make_api(), make_api()
    ticks = Monotonic()
    service_of(first).context.keys.monotonic = ticks
    yield first, second, ticks


def test_another_instance_signs_with_the_new_key_within_the_refresh_time(
    two_instances: tuple[Api, Api, Monotonic],
) -> None:
    first, second, ticks = two_instances
    old_kid = header_of(first.tokens()["access_token"])["kid"]

    current = service_of(second).rotate_keys()

    ticks.now += KEY_REFRESH_SECONDS - 1
    assert header_of(first.logged_in()["access_token"])["kid"] == old_kid
    ticks.now += 1
    assert header_of(first.logged_in()["access_token"])["kid"] == current.kid


def test_an_unseen_kid_reloads_the_keys_at_once(two_instances: tuple[Api, Api, Monotonic]) -> None:
    first, second, ticks = two_instances
    first.tokens()
    ticks.now += 5
    service_of(second).rotate_keys()
    # Two rotations: the key now signing was made after the first instance last read the keys.
    newest = service_of(second).rotate_keys()
    token = second.logged_in()["access_token"]
    assert header_of(token)["kid"] == newest.kid

    assert first.me(token).status_code == 200


def test_random_kids_cost_at_most_one_reload_a_second(api: Api, service: UserService) -> None:
    token = api.tokens()["access_token"]
    claims = unverified(token)
    ticks = Monotonic()
    service.context.keys.monotonic = ticks
    service.context.keys.snapshot = None
    api.me(token)
    reads = count_statements(service, lambda: [api.me(forge(claims, kid=f"k{n}")) for n in range(20)])

    assert reads == 1


def count_statements(service: UserService, work: Callable[[], Any]) -> int:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(service.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(service.engine, "before_cursor_execute", record)
    return sum("signing_keys" in statement for statement in seen)


def test_users_me_with_a_known_kid_reads_no_key(api: Api, service: UserService) -> None:
    token = api.tokens()["access_token"]

    reads = count_statements(service, lambda: [api.me(token) for _ in range(5)])

    assert reads == 0


def test_private_keys_are_stored_sealed(api: Api, service: UserService) -> None:
    api.tokens()
    with service.engine.connect() as connection:
        rows = connection.execute(text("SELECT private_key, public_jwk FROM signing_keys")).all()

    assert len(rows) == 2
    for sealed, public in rows:
        assert sealed.startswith("v1:")
        assert "PRIVATE KEY" not in sealed
        assert not set(json.loads(public)) & PRIVATE_MEMBERS


def test_a_different_secret_cannot_open_the_keys(api: Api, make_settings: Callable[..., Settings]) -> None:
    api.tokens()
    other = "another-service-signing-key-9876543210-zyxwv"

    with UserService(make_settings(jwt_secret_key=other)) as service, pytest.raises(ConfigurationError) as caught:
        service.prepare_keys()

    assert "JWT_SECRET_KEY cannot decrypt the signing key" in caught.value.message
    assert other not in caught.value.message


def test_instances_starting_together_make_one_current_and_one_next_key(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings()
    services = [UserService(settings, clock=clock) for _ in range(4)]
    barrier = threading.Barrier(len(services), timeout=10)
    errors: list[BaseException] = []

    def start(service: UserService) -> None:
        try:
            barrier.wait()
            service.prepare_keys()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(service,)) for service in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert not errors
        states = sorted(key.state for key in services[0].list_keys())
        assert states == ["current", "next"]
        signers = {service.context.keys.snapshot.signer.kid for service in services if service.context.keys.snapshot}
        assert len(signers) == 1
    finally:
        for service in services:
            service.close()


def test_rotating_with_a_shared_secret_says_why_not(make_settings: Callable[..., Settings]) -> None:
    with UserService(make_settings(jwt_algorithm="HS256")) as service, pytest.raises(ConfigurationError) as caught:
        service.rotate_keys()

    assert "JWT_ALGORITHM is HS256" in caught.value.message
