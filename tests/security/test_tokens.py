"""Tokens (ASVS 5.0 V9 and 10.4.5): signatures and algorithms, expiry, type, issuer and audience of access tokens,
and refresh-token reuse."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TEST_SECRET, Api, FakeClock, MakeApi
from tests.helpers import assert_unauthorized, b64json, b64url, claims_of, forge, hmac_signature
from user_service.api.app import create_app
from user_service.config import Settings

ACCESS_TTL = 900
OTHER_SECRET = "another-service-signing-key-9876543210-zyxwv"
HS512_SECRET = "an-hs512-signing-key-of-sixty-four-bytes-or-more-0123456789-abcdefghijk"
# DER prefix of a SHA-256 DigestInfo (RFC 8017 9.2): what an RS256 signature wraps around the hash.
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
Forger = Callable[[dict[str, Any], str], str]


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """HS256, whose tokens these tests forge by hand: the claim checks they prove are the same for every algorithm
    (tests/security/test_signing_keys.py proves them for the key store's algorithms)."""
    return functools.partial(make_settings, jwt_algorithm="HS256")


def assert_refused_where_the_original_passes(api: Api, make_token: Forger) -> None:
    """The forged token is refused, while a faithful hand-signed copy of the same claims is accepted: the refusal is
    about what the forgery changed."""
    token = api.tokens()["access_token"]
    claims = claims_of(token)
    assert api.me(forge(claims)).status_code == 200

    assert_unauthorized(api.me(make_token(claims, token)))


# -- an attacker's RSA key, in plain Python (the service must refuse whatever it signs) -------------------------


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int
    d: int


def _probable_prime(candidate: int, rng: random.Random) -> bool:
    for small in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if candidate % small == 0:
            return candidate == small
    shift = ((candidate - 1) & -(candidate - 1)).bit_length() - 1
    odd = (candidate - 1) >> shift
    for _ in range(16):
        x = pow(rng.randrange(2, candidate - 2), odd, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(shift - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


@cache
def attacker_key(bits: int = 1024) -> RsaKey:
    """A fixed RSA key (seeded, so every run signs alike); 1024 bits is plenty to be refused."""
    rng = random.Random(20300101)
    e = 65537
    primes: list[int] = []
    for _ in range(100_000):
        candidate = rng.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
        if candidate % e != 1 and _probable_prime(candidate, rng):
            primes.append(candidate)
            if len(primes) == 2:
                break
    p, q = primes
    return RsaKey(n=p * q, e=e, d=pow(e, -1, (p - 1) * (q - 1)))


def rs256(claims: dict[str, Any], key: RsaKey, **header: Any) -> str:
    """An RS256 JWT (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 3.3) signed with the attacker's private key."""
    signing_input = f"{b64json({'alg': 'RS256', 'typ': 'JWT', **header})}.{b64json(claims)}"
    size = (key.n.bit_length() + 7) // 8
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(signing_input.encode()).digest()
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    signature = pow(int.from_bytes(encoded, "big"), key.d, key.n).to_bytes(size, "big")
    assert pow(int.from_bytes(signature, "big"), key.e, key.n).to_bytes(size, "big") == encoded
    return f"{signing_input}.{b64url(signature)}"


def public_jwk(key: RsaKey) -> dict[str, str]:
    def raw(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": raw(key.n), "e": raw(key.e)}


# -- 9.1.1 signatures ---------------------------------------------------------------------------------------------


def _tampered(**changes: Any) -> Forger:
    """The real header and signature around a payload with some claims changed."""

    def make(claims: dict[str, Any], token: str) -> str:
        header, _payload, signature = token.split(".")
        return f"{header}.{b64json({**claims, **changes})}.{signature}"

    return make


def _signature_of_another_token(claims: dict[str, Any], token: str) -> str:
    other = forge({**claims, "jti": uuid.uuid4().hex})
    return f"{token.rsplit('.', 1)[0]}.{other.rsplit('.', 1)[1]}"


def _one_signature_character_changed(_claims: dict[str, Any], token: str) -> str:
    # The first character carries six whole bits of the signature, so changing it always changes the bytes.
    signing_input, signature = token.rsplit(".", 1)
    return f"{signing_input}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


SIGNATURE_ATTACKS: dict[str, Forger] = {
    "tampered-payload": _tampered(username="mallory"),
    "tampered-expiry": _tampered(exp=4_102_444_800),
    "other-secret": lambda claims, _token: forge(claims, key=OTHER_SECRET),
    "signature-of-another-token": _signature_of_another_token,
    "one-signature-character-changed": _one_signature_character_changed,
    "truncated": lambda _claims, token: token[:-5],
    "signature-removed": lambda _claims, token: token.rsplit(".", 1)[0] + ".",
}


@pytest.mark.parametrize("make_token", SIGNATURE_ATTACKS.values(), ids=SIGNATURE_ATTACKS.keys())
def test_token_without_a_valid_signature_is_refused(api: Api, make_token: Forger) -> None:
    """ASVS 5.0 9.1.1: a token whose signature does not verify under the service's key is refused before its
    contents are believed."""
    assert_refused_where_the_original_passes(api, make_token)


def test_token_of_another_deployment_is_refused(
    api: Api, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """ASVS 5.0 9.1.1: a genuine token of a deployment with another JWT_SECRET_KEY is refused."""
    api.tokens()
    other_app = create_app(make_settings(jwt_secret_key=OTHER_SECRET), clock=clock)
    with TestClient(other_app) as other_client:
        foreign = Api(other_client).login().json()["access_token"]

    assert_unauthorized(api.me(foreign))


# -- 9.1.2 algorithms ---------------------------------------------------------------------------------------------


def _none_with_real_signature(claims: dict[str, Any], token: str) -> str:
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}.{token.split('.')[2]}"


def _without_alg(claims: dict[str, Any], _token: str) -> str:
    signing_input = f"{b64json({'typ': 'JWT'})}.{b64json(claims)}"
    return f"{signing_input}.{hmac_signature(signing_input, TEST_SECRET)}"


def _hmac_labelled(alg: str) -> Forger:
    """Signed with HMAC over the service's secret, labelled as an asymmetric algorithm: a verifier that let the
    token pick its algorithm would use the secret as the public key."""

    def make(claims: dict[str, Any], _token: str) -> str:
        signing_input = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}"
        return f"{signing_input}.{hmac_signature(signing_input, TEST_SECRET)}"

    return make


ALGORITHM_ATTACKS: dict[str, Forger] = {
    "alg-none": lambda claims, _token: forge(claims, alg="none"),
    "alg-None": lambda claims, _token: forge(claims, alg="None"),
    "alg-NONE": lambda claims, _token: forge(claims, alg="NONE"),
    "alg-nOnE": lambda claims, _token: forge(claims, alg="nOnE"),
    "alg-none-with-real-signature": _none_with_real_signature,
    "alg-missing": _without_alg,
    "hs384": lambda claims, _token: forge(claims, alg="HS384"),
    "hs512": lambda claims, _token: forge(claims, alg="HS512"),
    "rs256-attacker-key": lambda claims, _token: rs256(claims, attacker_key()),
    "rs256-attacker-key-in-jwk-header": lambda claims, _token: rs256(
        claims, attacker_key(), jwk=public_jwk(attacker_key())
    ),
    "rs256-hmac-with-the-secret": _hmac_labelled("RS256"),
    "ps256-hmac-with-the-secret": _hmac_labelled("PS256"),
    "es256-hmac-with-the-secret": _hmac_labelled("ES256"),
    "eddsa-hmac-with-the-secret": _hmac_labelled("EdDSA"),
}


@pytest.mark.parametrize("make_token", ALGORITHM_ATTACKS.values(), ids=ALGORITHM_ATTACKS.keys())
def test_algorithm_outside_the_allowlist_is_refused(api: Api, make_token: Forger) -> None:
    """ASVS 5.0 9.1.2: only the configured algorithm verifies: never 'none', never another HMAC size, never an
    asymmetric algorithm (with the attacker's key, or with the HMAC secret taken as a public key)."""
    assert_refused_where_the_original_passes(api, make_token)


def test_the_configured_algorithm_is_the_only_one_accepted(make_api: MakeApi) -> None:
    """ASVS 5.0 9.1.2: with JWT_ALGORITHM=HS512 the service issues HS512 tokens and refuses HS256 ones, even signed
    with the same secret."""
    api = make_api(jwt_algorithm="HS512", jwt_secret_key=HS512_SECRET)
    token = api.tokens()["access_token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = jwt.decode(
        token,
        HS512_SECRET,
        algorithms=["HS512"],
        audience="user-service",
        options={"verify_exp": False, "verify_iat": False},
    )

    assert header["alg"] == "HS512"
    assert api.me(token).status_code == 200
    assert api.me(forge(claims, alg="HS512", key=HS512_SECRET)).status_code == 200
    assert_unauthorized(api.me(forge(claims, alg="HS256", key=HS512_SECRET)))


# -- 9.2.1 expiry -------------------------------------------------------------------------------------------------


def test_access_token_expires(api: Api, clock: FakeClock) -> None:
    """ASVS 5.0 9.2.1: an access token is accepted until its `exp`, then refused as token_expired."""
    token = api.tokens()["access_token"]

    clock.advance(ACCESS_TTL - 1)
    assert api.me(token).status_code == 200
    clock.advance(1)

    assert_unauthorized(api.me(token), "token_expired")


@pytest.mark.parametrize("seconds_ago", [1, 86_400, 10 * 365 * 86_400])
def test_correctly_signed_token_past_its_expiry_is_refused(api: Api, seconds_ago: int) -> None:
    """ASVS 5.0 9.2.1: a token with a valid signature but an `exp` in the past is refused, however long ago."""
    token = api.tokens()["access_token"]
    claims = claims_of(token)
    now = claims["iat"]

    response = api.me(forge({**claims, "iat": now - seconds_ago - ACCESS_TTL, "exp": now - seconds_ago}))

    assert_unauthorized(response, "token_expired")


def test_token_not_yet_valid_is_refused(api: Api) -> None:
    """ASVS 5.0 9.2.1: a token whose `nbf` lies in the future is refused."""
    token = api.tokens()["access_token"]
    claims = claims_of(token)

    assert_unauthorized(api.me(forge({**claims, "nbf": claims["iat"] + 600})))


# -- 9.2.2 type ---------------------------------------------------------------------------------------------------


TYPE_ATTACKS: dict[str, Forger] = {
    "type-refresh": lambda claims, _token: forge({**claims, "type": "refresh"}),
    "type-uppercase": lambda claims, _token: forge({**claims, "type": "ACCESS"}),
    "type-id": lambda claims, _token: forge({**claims, "type": "id"}),
    "type-missing": lambda claims, _token: forge({key: value for key, value in claims.items() if key != "type"}),
}


@pytest.mark.parametrize("make_token", TYPE_ATTACKS.values(), ids=TYPE_ATTACKS.keys())
def test_signed_token_of_another_type_is_not_an_access_token(api: Api, make_token: Forger) -> None:
    """ASVS 5.0 9.2.2: only a token typed `access` is accepted as an access token, even when correctly signed."""
    assert_refused_where_the_original_passes(api, make_token)


def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    """ASVS 5.0 9.2.2: a refresh token presented as a bearer token is refused."""
    pair = api.tokens()

    assert_unauthorized(api.me(pair["refresh_token"]))


def test_access_token_is_not_a_refresh_token(api: Api) -> None:
    """ASVS 5.0 9.2.2: an access token presented to /auth/refresh is refused."""
    pair = api.tokens()

    response = api.refresh(pair["access_token"])

    assert_unauthorized(response)
    assert "access_token" not in response.text
    assert api.refresh(pair["refresh_token"]).status_code == 200


def test_access_token_does_not_log_a_session_out(api: Api) -> None:
    """ASVS 5.0 9.2.2: /auth/logout takes a refresh token; an access token there ends nothing."""
    pair = api.tokens()

    assert api.client.post("/auth/logout", json={"refresh_token": pair["access_token"]}).status_code == 204

    assert api.me(pair["access_token"]).status_code == 200
    assert api.refresh(pair["refresh_token"]).status_code == 200


# -- 9.2.3 issuer and audience ------------------------------------------------------------------------------------


AUDIENCE_ATTACKS: dict[str, Forger] = {
    "wrong-issuer": lambda claims, _token: forge({**claims, "iss": "someone-else"}),
    "issuer-in-other-case": lambda claims, _token: forge({**claims, "iss": "User-Service"}),
    "wrong-audience": lambda claims, _token: forge({**claims, "aud": "another-service"}),
    "audience-list-of-others": lambda claims, _token: forge({**claims, "aud": ["billing", "reports"]}),
    "missing-issuer": lambda claims, _token: forge({key: value for key, value in claims.items() if key != "iss"}),
    "missing-audience": lambda claims, _token: forge({key: value for key, value in claims.items() if key != "aud"}),
}


@pytest.mark.parametrize("make_token", AUDIENCE_ATTACKS.values(), ids=AUDIENCE_ATTACKS.keys())
def test_signed_token_for_another_issuer_or_audience_is_refused(api: Api, make_token: Forger) -> None:
    """ASVS 5.0 9.2.3: a correctly signed token is refused unless it names this issuer and this audience."""
    assert_refused_where_the_original_passes(api, make_token)


def test_issuer_and_audience_settings_are_honoured(api: Api, make_api: MakeApi) -> None:
    """ASVS 5.0 9.2.3: JWT_ISSUER and JWT_AUDIENCE go into the tokens and are checked: two deployments sharing a
    secret and a database but not an audience refuse each other's tokens."""
    billing = make_api(jwt_issuer="https://auth.example.com", jwt_audience="billing")
    ours = api.tokens()["access_token"]
    theirs = billing.login().json()["access_token"]

    claims = claims_of(theirs, issuer="https://auth.example.com", audience="billing")

    assert (claims["iss"], claims["aud"]) == ("https://auth.example.com", "billing")
    assert billing.me(theirs).status_code == 200
    assert api.me(ours).status_code == 200
    assert_unauthorized(api.me(theirs))
    assert_unauthorized(billing.me(ours))


# -- 10.4.5 refresh token reuse -----------------------------------------------------------------------------------


def test_reused_refresh_token_revokes_the_session(api: Api) -> None:
    """ASVS 5.0 10.4.5: a spent refresh token presented again is refused as refresh_token_reused and revokes its
    session, so the newest token of the chain stops working too."""
    old = api.tokens()["refresh_token"]
    newest = api.refresh(old).json()["refresh_token"]

    reuse = api.refresh(old)

    assert reuse.status_code == 401, reuse.text
    assert reuse.json()["code"] == "refresh_token_reused"
    assert "access_token" not in reuse.text
    assert isinstance(reuse.json()["detail"], str)
    after = api.refresh(newest)
    assert after.status_code == 401, after.text
    assert after.json()["code"] == "session_revoked"
    assert api.refresh(old).status_code == 401


def test_reuse_revokes_every_descendant(api: Api) -> None:
    """ASVS 5.0 10.4.5: reusing the first token of a chain revokes the whole chain, however long."""
    first = api.tokens()["refresh_token"]
    second = api.refresh(first).json()["refresh_token"]
    third = api.refresh(second).json()["refresh_token"]

    reuse = api.refresh(first)

    assert reuse.status_code == 401, reuse.text
    assert reuse.json()["code"] == "refresh_token_reused"
    assert api.refresh(third).status_code == 401


def test_reuse_also_ends_the_sessions_access_tokens(api: Api) -> None:
    """ASVS 5.0 10.4.5 and 7.4.1: the session revoked on reuse ends its access tokens at once too."""
    first = api.tokens()
    second = api.refresh(first["refresh_token"]).json()
    assert api.me(second["access_token"]).status_code == 200

    assert api.refresh(first["refresh_token"]).json()["code"] == "refresh_token_reused"

    assert_unauthorized(api.me(second["access_token"]), "session_revoked")
    assert_unauthorized(api.me(first["access_token"]), "session_revoked")


def test_reuse_leaves_other_sessions_alone(api: Api) -> None:
    """ASVS 5.0 10.4.5: reuse revokes only the session it happened in: the user's other sessions and other users
    carry on."""
    session_a = api.tokens()["refresh_token"]
    session_b = api.login().json()["refresh_token"]
    other_user = api.tokens(username="bob")["refresh_token"]
    api.refresh(session_a)

    reuse = api.refresh(session_a)

    assert reuse.status_code == 401, reuse.text
    assert reuse.json()["code"] == "refresh_token_reused"
    b_next = api.refresh(session_b)
    assert b_next.status_code == 200, b_next.text
    assert api.refresh(b_next.json()["refresh_token"]).status_code == 200
    assert api.refresh(other_user).status_code == 200
