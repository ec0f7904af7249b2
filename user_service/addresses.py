"""Client addresses as the service counts them: one key per client, whatever form its address arrives in. Both the
per-address rate limits and the per-client login throttle count under these keys."""

from __future__ import annotations

import ipaddress

NO_ADDRESS = "no-address"
# An IPv6 client usually holds a whole /64 (SLAAC, privacy addresses): counting per /128 would let it rotate freely.
IPV6_CLIENT_PREFIX = 64
KEY_MAX = 64


def client_key(address: str | None) -> str:
    """The key a client's requests are counted under: an IPv4 address (IPv4-mapped IPv6 included), the /64 of an
    IPv6 address (its scope id dropped), one shared key for requests with no address (a Unix socket, say), and any
    other peer name (a test client's) as it is."""
    if not address:
        return NO_ADDRESS
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:KEY_MAX]
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip), IPV6_CLIENT_PREFIX), strict=False))
