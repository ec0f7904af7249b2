"""Dependencies as Annotated aliases, so routes read like sentences."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from user_service.api.ratelimit import AddressRateLimiter
from user_service.errors import NotAuthenticated
from user_service.service import Principal, UserService

bearer_scheme = HTTPBearer(auto_error=False, description="An access token from /auth/login or /auth/refresh.")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def get_service(request: Request) -> UserService:
    service: UserService = request.app.state.service
    return service


ServiceDep = Annotated[UserService, Depends(get_service)]


def get_principal(service: ServiceDep, credentials: BearerCredentials) -> Principal:
    if credentials is None:
        raise NotAuthenticated()
    return service.authenticate(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def client_address(request: Request, service: ServiceDep) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest untrusted address in
    X-Forwarded-For (read right to left, since a client can write anything on the left)."""
    peer = request.client.host if request.client else None
    trusted = service.settings.trusted_proxy_networks
    if peer is None or not trusted or not _is_in(peer, trusted):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _is_in(hop, trusted):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


ClientAddress = Annotated[str | None, Depends(client_address)]


def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


UserAgent = Annotated[str | None, Depends(user_agent)]


def rate_limited(endpoint: str) -> Callable[[Request, str | None], None]:
    """A dependency counting this request against the client address's limit for `endpoint`."""

    def check(request: Request, address: ClientAddress) -> None:
        limiter: AddressRateLimiter = request.app.state.rate_limiter
        limiter.hit(endpoint, address)

    return check
