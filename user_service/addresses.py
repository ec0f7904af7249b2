"""Client addresses as the service counts them: one key per client, whatever form its address arrives in."""

from __future__ import annotations

import ipaddress

UNKNOWN_CLIENT = "unknown"
# An IPv6 client usually holds a whole /64 (SLAAC, privacy addresses): counting per /128 would let it rotate freely.
IPV6_CLIENT_PREFIX = 64


def client_key(address: str | None) -> str:
    """The key a client's requests are counted under: an IPv4 address (IPv4-mapped IPv6 included), the /64 of an
    IPv6 address, or one shared key for requests with no usable address (a Unix socket, say)."""
    if not address:
        return UNKNOWN_CLIENT
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)
