"""Pure functions for asymmetric signing keys: making a key pair, its public JWK (RFC 7517 public members only), and
sealing the private half with a key derived from JWT_SECRET_KEY, so that a copy of the database alone cannot mint
tokens. Second-factor secrets are sealed the same way, and recovery codes are stored as digests keyed by it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

_SEALED_PREFIX = "v1:"
_NONCE_BYTES = 12
_KDF_INFO = b"user-service signing keys v1"
_RECOVERY_KDF_INFO = b"user-service recovery codes v1"
# The members a JWKS may carry for each key type (RFC 7517/7518/8037): nothing else is ever published.
_PUBLIC_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x"), "RSA": ("kty", "n", "e")}


class KeyUnsealError(Exception):
    """A stored private key that the configured JWT_SECRET_KEY cannot open (another secret, or damaged data)."""


def new_kid() -> str:
    """A key id: random, so that it says nothing about the key or when it was made."""
    return secrets.token_urlsafe(16)


def generate_private_key(algorithm: str) -> PrivateKey:
    """A fresh private key for ES256 (P-256), EdDSA (Ed25519) or RS256 (RSA 2048)."""
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"no key pairs for the algorithm {algorithm}")


def public_jwk(private_key: PrivateKey, *, kid: str, algorithm: str) -> dict[str, str]:
    """The public half as a JWK with `kid`, `alg` and `use`; never a private member."""
    public = private_key.public_key()
    full: dict[str, Any]
    if isinstance(public, ec.EllipticCurvePublicKey):
        full = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        full = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        full = RSAAlgorithm.to_jwk(public, as_dict=True)
    jwk = {name: str(full[name]) for name in _PUBLIC_MEMBERS[str(full["kty"])]}
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


@functools.lru_cache(maxsize=16)
def _derived_key(secret: str, info: bytes = _KDF_INFO) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode("utf-8"))


def seal(data: bytes, *, secret: str, bound_to: str) -> str:
    """`data` encrypted with AES-256-GCM under a key derived from `secret`, bound to `bound_to` as associated data
    (a sealed value moved to another row does not open)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_derived_key(secret)).encrypt(nonce, data, bound_to.encode("utf-8"))
    return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(sealed: str, *, secret: str, bound_to: str) -> bytes:
    """The data a sealed value holds; KeyUnsealError when `secret` or `bound_to` does not open it."""
    if not sealed.startswith(_SEALED_PREFIX):
        raise KeyUnsealError()
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX) :].encode("ascii"))
        return AESGCM(_derived_key(secret)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode("utf-8"))
    except (InvalidTag, ValueError, TypeError):
        raise KeyUnsealError() from None


def keyed_digest(value: str, *, secret: str, bound_to: str) -> str:
    """An HMAC-SHA256 of a high-entropy value (a recovery code) under a key derived from `secret`, bound to
    `bound_to`: a copy of the database alone cannot test guesses against it."""
    key = _derived_key(secret, _RECOVERY_KDF_INFO)
    return hmac.new(key, f"{bound_to}:{value}".encode(), hashlib.sha256).hexdigest()


def seal_private_key(private_key: PrivateKey, *, secret: str, kid: str) -> str:
    """The private key as stored: PKCS#8 sealed under a key derived from `secret`, bound to its `kid`."""
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return seal(der, secret=secret, bound_to=kid)


@functools.lru_cache(maxsize=64)
def unseal_private_key(sealed: str, *, secret: str, kid: str) -> PrivateKey:
    """The private key a sealed value holds; KeyUnsealError when `secret` does not open it. Cached per process: a
    key is opened once, however many services or requests use it."""
    der = unseal(sealed, secret=secret, bound_to=kid)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise KeyUnsealError() from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise KeyUnsealError()
    return key


def public_key_of(jwk: dict[str, str]) -> PublicKey:
    """The key object of a stored public JWK."""
    kty = jwk["kty"]
    key: Any
    if kty == "EC":
        key = ECAlgorithm.from_jwk(jwk)
    elif kty == "OKP":
        key = OKPAlgorithm.from_jwk(jwk)
    else:
        key = RSAAlgorithm.from_jwk(jwk)
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ValueError("a stored JWK is not a public key")
    return key
