"""Verifying user-service access tokens in another service, with nothing but the JWKS URL: no database, no secret.

    from user_service.verify import TokenVerifier

    verifier = TokenVerifier("https://accounts.example.com/.well-known/jwks.json",
                             issuer="user-service", audience="user-service")
    claims = verifier.verify(token)        # VerifiedClaims, or TokenRejected

    CurrentClaims = Annotated[VerifiedClaims, Depends(verifier.dependency())]   # 401 + WWW-Authenticate: Bearer
    StrongClaims = Annotated[VerifiedClaims, Depends(verifier.dependency(require_mfa=True))]  # 403 mfa_required

`require_mfa=True` (on the constructor, or on one dependency) refuses tokens of sessions that did not pass a second
factor (`aal` other than "aal2"; tokens without the claim are aal1): `verify` raises MfaRequired, a TokenRejected,
and the dependency answers 403 `{"detail", "code": "mfa_required"}`.

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

__all__ = ["MfaRequired", "TokenRejected", "TokenVerifier", "VerifiedClaims"]

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


AAL2 = "aal2"


class TokenRejected(Exception):
    """The token is not one the service issued and still valid: any failure, one exception."""


class MfaRequired(TokenRejected):
    """A valid token of a session that did not pass a second factor, where one is required."""


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """What a verified access token says."""

    user_id: uuid.UUID
    namespace: str
    username: str
    session_id: uuid.UUID
    expires_at: datetime
    token_id: str
    # How the user logged in (RFC 8176 `amr`) and the assurance level: "aal2" after a second factor.
    amr: tuple[str, ...] = ("pwd",)
    aal: str = "aal1"


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
        require_mfa: bool = False,
    ) -> None:
        self.issuer = issuer
        self.require_mfa = require_mfa
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

    def verify(self, token: str, *, require_mfa: bool | None = None) -> VerifiedClaims:
        """The claims of a valid access token; TokenRejected for anything else (MfaRequired for an aal1 token when
        a second factor is required). Blocking when the keys must be fetched."""
        claims = self._verified_claims(token)
        return self._strong_enough(claims, require_mfa)

    def _strong_enough(self, claims: VerifiedClaims, require_mfa: bool | None) -> VerifiedClaims:
        required = self.require_mfa if require_mfa is None else require_mfa
        if required and claims.aal != AAL2:
            raise MfaRequired("a second factor is required")
        return claims

    def _verified_claims(self, token: str) -> VerifiedClaims:
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
            if "scope" in claims:
                # A token limited to second-factor enrolment is good only at the service's enrolment endpoints.
                raise TokenRejected("a token limited to enrolment")
            amr = claims.get("amr", ["pwd"])
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
                amr=tuple(str(method) for method in amr) if isinstance(amr, list) else ("pwd",),
                aal=AAL2 if claims.get("aal") == AAL2 else "aal1",
            )
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError, KeyError):
            raise TokenRejected("invalid token") from None
        self._remember(token, verified, issued_at, expires_at)
        return verified

    async def verify_async(self, token: str, *, require_mfa: bool | None = None) -> VerifiedClaims:
        """As `verify`, fetching keys (the only blocking part) in a worker thread; a cached key costs no hop."""
        remembered = self._remembered(token)
        if remembered is not None:
            return self._strong_enough(remembered, require_mfa)
        kid = self._kid(token)
        key = self._cached_key(kid)
        if key is None:
            import anyio.to_thread

            key = await anyio.to_thread.run_sync(self._key, kid)
            if key is None:
                raise TokenRejected("unknown key")
        return self._strong_enough(self._check(token, key), require_mfa)

    def dependency(self, *, require_mfa: bool | None = None) -> Callable[[Request], Awaitable[VerifiedClaims]]:
        """A FastAPI dependency giving the caller's VerifiedClaims, or 401 with `WWW-Authenticate: Bearer`; with a
        second factor required (here, or else on the verifier), 403 `{"detail", "code": "mfa_required"}` for a
        token of a session without one."""
        from fastapi import HTTPException, Request
        from fastapi.responses import JSONResponse

        def unauthorized(detail: str) -> HTTPException:
            return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

        class MfaRequiredError(HTTPException):
            """403 for a token without a second factor."""

        async def render(_request: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, HTTPException)
            return JSONResponse({"detail": exc.detail, "code": "mfa_required"}, status_code=exc.status_code)

        def mfa_required(request: Request) -> HTTPException:
            # Rendered as `{"detail", "code"}` by a handler handed to the host through the request's scope (as
            # user_service.api.host does), so the host installs nothing; without one it is still a 403.
            handlers = request.scope.get("starlette.exception_handlers")
            if isinstance(handlers, tuple) and handlers and isinstance(handlers[0], dict):
                handlers[0].setdefault(MfaRequiredError, render)
            return MfaRequiredError(403, "This requires a login with a second factor.")

        async def current_claims(request: Request) -> VerifiedClaims:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HTTPException(401, "Not authenticated.", headers={"WWW-Authenticate": "Bearer"})
            try:
                return await self.verify_async(token.strip(), require_mfa=require_mfa)
            except MfaRequired:
                raise mfa_required(request) from None
            except TokenRejected:
                raise unauthorized("The access token is invalid or expired.") from None

        # The annotation as a class, not a string: FastAPI must see the Request parameter without this module
        # importing fastapi at import time.
        current_claims.__annotations__["request"] = Request
        return current_claims
