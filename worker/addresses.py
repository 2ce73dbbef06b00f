"""Which addresses stay on this host: plain http to the API and a Flower without a login are
allowed there only."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP literal or ``localhost``) is loopback only; ``''`` (every
    interface) and host names (which resolve anywhere) are not."""
    if address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
