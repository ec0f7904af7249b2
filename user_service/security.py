"""Pure functions for secrets: bcrypt password hashes, JWT access tokens and opaque refresh tokens.

These functions are blocking (bcrypt is slow on purpose); callers keep them off the event loop.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bcrypt
import jwt

from user_service import telemetry
from user_service.config import MAX_ACCESS_TOKEN_TTL_SECONDS
from user_service.cpu import usable_cores
from user_service.errors import InvalidToken, TokenExpired
from user_service.signing import PrivateKey, PublicKey

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)
REQUIRED_CLAIMS = ("sub", "ns", "username", "type", "iat", "exp", "jti", "sid", "iss", "aud")
# How far the clocks of the instances that issue and check tokens may disagree.
CLOCK_LEEWAY_SECONDS = 30
# Assurance levels (NIST SP 800-63B) and the authentication methods (RFC 8176) behind each.
AAL1, AAL2 = "aal1", "aal2"
AMR = {AAL1: ["pwd"], AAL2: ["pwd", "otp"]}
# The `scope` of a token that only the second-factor enrolment endpoints accept.
ENROLMENT_SCOPE = "mfa_enrolment"


# At most one bcrypt computation per usable core at once, whatever the number of threads asking: more would not
# finish sooner (bcrypt is CPU-bound), and each one beyond the cores takes CPU time from the event loop.
_HASHING_SLOTS = threading.BoundedSemaphore(usable_cores())


@contextmanager
def _hashing_slot(operation: str, clock: Callable[[], float] = time.perf_counter) -> Iterator[None]:
    """Wait for a core (counted as waiting meanwhile), then time the bcrypt computation run inside."""
    telemetry.hashes_waiting(1)
    try:
        _HASHING_SLOTS.acquire()
    finally:
        telemetry.hashes_waiting(-1)
    started = clock()
    try:
        yield
    finally:
        _HASHING_SLOTS.release()
        telemetry.password_hashed(operation, clock() - started)


def hash_password(password: str, rounds: int) -> str:
    """A bcrypt hash of the password; the caller has already checked it is at most 72 bytes."""
    salt = bcrypt.gensalt(rounds)
    with _hashing_slot("hash"):
        return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    """Whether the password matches the hash; False (never an error) for input bcrypt cannot take."""
    raw = password.encode("utf-8", "surrogatepass")
    # A password bcrypt cannot take is never right, but it costs a full check all the same: every refused login
    # takes the same time, whatever made it wrong.
    overlong = len(raw) > 72
    try:
        with _hashing_slot("check"):
            matched = bcrypt.checkpw(raw[:72], bcrypt_for_checking(password_hash).encode("ascii"))
    except ValueError:
        return False
    return matched and not overlong


def bcrypt_for_checking(password_hash: str) -> str:
    """The hash in the form the bcrypt package checks: PHP's `$2y$` is the same algorithm as `$2b$` under another
    name (both mark the fix of the same wrap-around bug), which older releases of the bcrypt package refuse."""
    return "$2b$" + password_hash[4:] if password_hash.startswith("$2y$") else password_hash


def hash_rounds(password_hash: str) -> int | None:
    """The cost factor recorded in a bcrypt hash (`$2b$12$...` -> 12)."""
    parts = password_hash.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    namespace: str
    username: str
    session_id: uuid.UUID
    issued_at: int
    expires_at: int
    token_id: str
    # Tokens issued before assurance levels existed carry no `aal`: they are aal1.
    aal: str = AAL1
    scope: str | None = None


def encode_access_token(
    *,
    key: str | PrivateKey,
    algorithm: str,
    kid: str | None = None,
    issuer: str,
    audience: str,
    user_id: uuid.UUID,
    namespace: str,
    username: str,
    session_id: uuid.UUID,
    now: datetime,
    ttl_seconds: int,
    aal: str = AAL1,
    scope: str | None = None,
) -> str:
    issued_at = int(now.timestamp())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "ns": namespace,
        "username": username,
        "type": ACCESS_TOKEN_TYPE,
        "sid": str(session_id),
        "iss": issuer,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": secrets.token_hex(16),
        "amr": AMR[aal],
        "aal": aal,
    }
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid is not None else None)


def token_key_id(token: str) -> str | None:
    """The `kid` in a token's header (unverified: it only chooses the key to verify with), or None."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        raise InvalidToken() from None
    return kid if isinstance(kid, str) else None


def decode_access_token(
    token: str,
    *,
    key: str | PublicKey,
    algorithm: str,
    issuer: str,
    audience: str,
    now: datetime,
    max_lifetime_seconds: int = MAX_ACCESS_TOKEN_TTL_SECONDS,
) -> AccessClaims:
    """Verify signature, algorithm, issuer, audience, type, issue time and expiry (against `now`, the injected
    clock), and that the token lives no longer than the longest the service issues (`max_lifetime_seconds`)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            # Expiry is checked below against the service clock, so that tests can move time.
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise InvalidToken() from None
    try:
        if claims["type"] != ACCESS_TOKEN_TYPE:
            raise InvalidToken()
        expires_at, issued_at = claims["exp"], claims["iat"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (expires_at, issued_at)):
            raise InvalidToken()
        parsed = AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            namespace=str(claims["ns"]),
            username=str(claims["username"]),
            session_id=uuid.UUID(claims["sid"]),
            issued_at=issued_at,
            expires_at=expires_at,
            token_id=str(claims["jti"]),
            aal=AAL2 if claims.get("aal") == AAL2 else AAL1,
            scope=str(claims["scope"]) if "scope" in claims else None,
        )
    except (ValueError, TypeError, AttributeError):
        raise InvalidToken() from None
    # A token issued in the future, or living longer than any the service issues, was not issued by it as it is now
    # (a clock gone wrong, or a key used elsewhere): refused whatever its expiry.
    if parsed.issued_at > now.timestamp() + CLOCK_LEEWAY_SECONDS:
        raise InvalidToken()
    if not 0 < parsed.expires_at - parsed.issued_at <= max_lifetime_seconds + CLOCK_LEEWAY_SECONDS:
        raise InvalidToken()
    if now.timestamp() >= parsed.expires_at:
        raise TokenExpired()
    return parsed


def new_refresh_token() -> str:
    """An opaque refresh token with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def refresh_token_digest(token: str) -> str:
    """What the database stores for a refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
