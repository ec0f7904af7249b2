"""Dependencies as Annotated aliases, so routes read like sentences.

They are `async def` unless they block: FastAPI runs a plain `def` dependency in a worker thread, and each hop to
one costs more than these dependencies' own work.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar, TypeVarTuple

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from user_service.api.openapi import BEARER_SCHEME, bearer_description
from user_service.api.ratelimit import AddressRateLimiter
from user_service.config import Network
from user_service.errors import NotAuthenticated
from user_service.service import AdminPrincipal, Principal, UserService

T = TypeVar("T")
Args = TypeVarTuple("Args")

# One scheme in OpenAPI, whichever of the two dependencies below a route uses; a mounted app's served schema names
# the mounted paths instead (api/openapi.py).
BEARER = {"scheme_name": BEARER_SCHEME, "description": bearer_description()}
bearer_scheme = HTTPBearer(auto_error=False, **BEARER)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_service(request: Request) -> UserService:
    service: UserService = request.app.state.service
    return service


ServiceDep = Annotated[UserService, Depends(get_service)]


async def run_single_read(service: UserService, read: Callable[[*Args], T], *args: *Args) -> T:
    """Run one of the service's single-row reads: in place on SQLite, where it is a local read that waits for
    nothing and costs less than the hop to a worker thread; in a worker thread on PostgreSQL (a round trip)."""
    if service.reads_are_local:
        return read(*args)
    return await run_in_threadpool(read, *args)


class BearerPrincipal(HTTPBearer):
    """The bearer scheme and the token check as one dependency (each dependency FastAPI solves costs time, and
    this one runs on every authenticated request); OpenAPI shows it as the bearer scheme. `enrolment` lets a token
    limited to second-factor enrolment through (the /users/me/mfa/totp endpoints only)."""

    def __init__(self, *, scheme_name: str, description: str, auto_error: bool, enrolment: bool = False) -> None:
        super().__init__(scheme_name=scheme_name, description=description, auto_error=auto_error)
        self.enrolment = enrolment

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]  # a Principal, not the credentials
        credentials = await super().__call__(request)
        if credentials is None:
            raise NotAuthenticated()
        service: UserService = request.app.state.service
        token = credentials.credentials
        if self.enrolment:
            return await run_in_threadpool(service.authenticate, token, enrolment=True)
        if service.reads_are_local:
            return service.authenticate(token)
        # A token seen before is checked on the event loop, its read awaited there; a new one in a worker thread.
        principal = await service.authenticate_remembered(token)
        return principal if principal is not None else await run_in_threadpool(service.authenticate, token)


current_principal = BearerPrincipal(
    auto_error=False, scheme_name=BEARER["scheme_name"], description=BEARER["description"]
)
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
# The caller, whose token may also be one limited to enrolling a second factor.
enrolling_principal = BearerPrincipal(
    enrolment=True, auto_error=False, scheme_name=BEARER["scheme_name"], description=BEARER["description"]
)
EnrollingPrincipal = Annotated[Principal, Depends(enrolling_principal)]


async def client_address(request: Request) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest untrusted address in
    X-Forwarded-For (read right to left, since a client can write anything on the left)."""
    peer = request.client.host if request.client else None
    service: UserService = request.app.state.service
    trusted = service.settings.trusted_proxy_networks
    return address_of(peer, trusted, lambda: request.headers.getlist("x-forwarded-for"))


def address_of(peer: str | None, trusted: tuple[Network, ...], forwarded_for: Callable[[], list[str]]) -> str | None:
    """The client's address given the peer's, the trusted proxies and (read only when the peer is one of them) the
    values of the X-Forwarded-For headers."""
    if peer is None or not trusted or not _is_in(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for() for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _is_in(hop, trusted):
            return hop if _is_ip(hop) else peer
    return peer


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, or None; an IPv6 scope id (`fe80::1%<any text>`) is refused, since it can hold any text."""
    if "%" in value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _is_ip(value: str) -> bool:
    return _ip(value) is not None


def _is_in(address: str, networks: tuple[Network, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in networks)


ClientAddress = Annotated[str | None, Depends(client_address)]


async def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


UserAgent = Annotated[str | None, Depends(user_agent)]


def rate_limited(endpoint: str) -> Callable[[Request], Awaitable[str | None]]:
    """A dependency counting this request against the client address's limit for `endpoint` (on the limiter's own
    threads when the counts live in Redis); it gives the client address it counted, so that a route needs no second
    dependency for it."""

    async def check(request: Request) -> str | None:
        address = await client_address(request)
        limiter: AddressRateLimiter = request.app.state.rate_limiter
        await limiter.hit_async(endpoint, address)
        return address

    return check


# The admin API's own scheme in OpenAPI: an admin key, never a user's access token.
ADMIN_KEY = {"scheme_name": "AdminKey", "description": "An admin key from `user-service create-admin-key`."}


class AdminKeyPrincipal(HTTPBearer):
    """The admin-key scheme and the key check as one dependency; the check reads the database (and records the
    key's last use), so it runs in a worker thread."""

    async def __call__(self, request: Request) -> AdminPrincipal:  # type: ignore[override]  # the key, not the credentials
        credentials = await super().__call__(request)
        service: UserService = request.app.state.service
        key = credentials.credentials if credentials is not None else None
        return await run_in_threadpool(service.authenticate_admin, key)


CurrentAdminKey = Annotated[AdminPrincipal, Depends(AdminKeyPrincipal(auto_error=False, **ADMIN_KEY))]
