"""Verifying user-service access tokens in another service, with nothing but the JWKS URL: no database, no secret.

    from user_service.verify import TokenVerifier

    verifier = TokenVerifier("https://accounts.example.com/.well-known/jwks.json",
                             issuer="user-service", audience="user-service")
    claims = verifier.verify(token)        # VerifiedClaims, or TokenRejected

    CurrentClaims = Annotated[VerifiedClaims, Depends(verifier.dependency())]   # 401 + WWW-Authenticate: Bearer

What local verification gives up: a token whose session was ended (logout, password change, a disabled account)
stays valid here until it expires, at most ACCESS_TOKEN_TTL_SECONDS. Call the service's GET /users/me where that
matters. This module imports neither SQLAlchemy, Alembic, bcrypt nor Typer.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any


def _import_jwt_without_bcrypt() -> None:
    """Import PyJWT (and cryptography under it) without letting cryptography load bcrypt, which it only wants for
    passphrase-protected OpenSSH private keys: a verifier needs neither. bcrypt stays importable afterwards."""
    if "bcrypt" in sys.modules or "jwt.algorithms" in sys.modules:
        return
    sys.modules["bcrypt"] = None  # type: ignore[assignment]  # makes `import bcrypt` fail while this runs
    try:
        import jwt.algorithms  # noqa: F401
    finally:
        del sys.modules["bcrypt"]


_import_jwt_without_bcrypt()

import jwt  # noqa: E402
from jwt import PyJWK, PyJWKClient  # noqa: E402

if TYPE_CHECKING:
    from fastapi import Request

__all__ = ["TokenRejected", "TokenVerifier", "VerifiedClaims"]

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 (a claim value, not a secret)
REQUIRED_CLAIMS = ("sub", "ns", "username", "type", "iat", "exp", "jti", "sid", "iss", "aud")
# The algorithms of published keys; a shared-secret (HS*) key is never published, so never accepted here.
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "EdDSA", "RS256"})
CLOCK_LEEWAY_SECONDS = 30
# An unseen kid sends the verifier to the JWKS URL again, but at most this often.
UNKNOWN_KID_REFETCH_SECONDS = 1.0
# Verified tokens remembered (by the whole token, each until its expiry), and the longest token remembered.
REMEMBERED_TOKENS = 10_000
REMEMBERED_TOKEN_MAX_CHARS = 2048


class TokenRejected(Exception):
    """The token is not one the service issued and still valid: any failure, one exception."""


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """What a verified access token says."""

    user_id: uuid.UUID
    namespace: str
    username: str
    session_id: uuid.UUID
    expires_at: datetime
    token_id: str


class TokenVerifier:
    """Verifies access tokens against the service's JWKS: the key named by the token's `kid`, in that key's own
    algorithm only, with `iss`, `aud`, `exp` and every claim required. Keys are fetched by PyJWT's PyJWKClient,
    kept `cache_seconds`, and fetched again at once (at most once a second) for an unknown kid."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.cache_seconds = cache_seconds
        self._client = PyJWKClient(jwks_url, cache_keys=False, lifespan=cache_seconds, timeout=int(timeout_seconds))
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = threading.Lock()
        # token -> (claims, iat, exp): a repeat of a verified token skips the signature check, never the time checks.
        self._verified: dict[str, tuple[VerifiedClaims, int, int]] = {}
        self._verified_lock = threading.Lock()

    def _refresh(self) -> None:
        """Fetch the key set again (blocking: the FastAPI dependency runs it in a worker thread)."""
        with self._lock:
            if time.monotonic() - self._attempted_at < UNKNOWN_KID_REFETCH_SECONDS:
                return
            self._attempted_at = time.monotonic()
            try:
                keys = self._client.get_signing_keys(refresh=True)
            except jwt.PyJWKClientError:
                # The JWKS cannot be fetched (user-service down, or an empty set): the keys already known keep
                # verifying until the next successful fetch.
                return
            self._keys = {key.key_id: key for key in keys if key.key_id and key.algorithm_name in ASYMMETRIC_ALGORITHMS}
            self._fetched_at = time.monotonic()

    def _cached_key(self, kid: str) -> PyJWK | None:
        if time.monotonic() - self._fetched_at >= self.cache_seconds:
            return None
        return self._keys.get(kid)

    def _key(self, kid: str) -> PyJWK | None:
        found = self._cached_key(kid)
        if found is None:
            self._refresh()
            found = self._keys.get(kid)
        return found

    @staticmethod
    def _kid(token: str) -> str:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        if not isinstance(kid, str):
            raise TokenRejected("the token names no key")
        return kid

    def _remembered(self, token: str) -> VerifiedClaims | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        claims, issued_at, expires_at = entry
        now = time.time()
        if now >= expires_at + CLOCK_LEEWAY_SECONDS:
            with self._verified_lock:
                self._verified.pop(token, None)
            return None
        return claims if issued_at <= now + CLOCK_LEEWAY_SECONDS else None

    def _remember(self, token: str, claims: VerifiedClaims, issued_at: int, expires_at: int) -> None:
        if len(token) > REMEMBERED_TOKEN_MAX_CHARS:
            return
        with self._verified_lock:
            while len(self._verified) >= REMEMBERED_TOKENS:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = (claims, issued_at, expires_at)

    def verify(self, token: str) -> VerifiedClaims:
        """The claims of a valid access token; TokenRejected for anything else. Blocking when the keys must be
        fetched."""
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        kid = self._kid(token)
        key = self._key(kid)
        if key is None:
            raise TokenRejected("unknown key")
        return self._check(token, key)

    def _check(self, token: str, key: PyJWK) -> VerifiedClaims:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
            if claims["type"] != ACCESS_TOKEN_TYPE:
                raise TokenRejected("not an access token")
            expires_at, issued_at = claims["exp"], claims["iat"]
            if not all(isinstance(value, int) and not isinstance(value, bool) for value in (expires_at, issued_at)):
                raise TokenRejected("bad times")
            verified = VerifiedClaims(
                user_id=uuid.UUID(claims["sub"]),
                namespace=str(claims["ns"]),
                username=str(claims["username"]),
                session_id=uuid.UUID(claims["sid"]),
                expires_at=datetime.fromtimestamp(expires_at, UTC),
                token_id=str(claims["jti"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError, KeyError):
            raise TokenRejected("invalid token") from None
        self._remember(token, verified, issued_at, expires_at)
        return verified

    async def verify_async(self, token: str) -> VerifiedClaims:
        """As `verify`, fetching keys (the only blocking part) in a worker thread; a cached key costs no hop."""
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        kid = self._kid(token)
        key = self._cached_key(kid)
        if key is None:
            import anyio.to_thread

            key = await anyio.to_thread.run_sync(self._key, kid)
            if key is None:
                raise TokenRejected("unknown key")
        return self._check(token, key)

    def dependency(self) -> Callable[[Request], Awaitable[VerifiedClaims]]:
        """A FastAPI dependency giving the caller's VerifiedClaims, or 401 with `WWW-Authenticate: Bearer`."""
        from fastapi import HTTPException, Request

        def unauthorized(detail: str) -> HTTPException:
            return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

        async def current_claims(request: Request) -> VerifiedClaims:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HTTPException(401, "Not authenticated.", headers={"WWW-Authenticate": "Bearer"})
            try:
                return await self.verify_async(token.strip())
            except TokenRejected:
                raise unauthorized("The access token is invalid or expired.") from None

        # The annotation as a class, not a string: FastAPI must see the Request parameter without this module
        # importing fastapi at import time.
        current_claims.__annotations__["request"] = Request
        return current_claims
