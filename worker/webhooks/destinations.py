"""Where webhook deliveries may go: the SSRF rules for producer-supplied URLs.

Producers name the URL; the worker makes the request from inside our network. So a delivery
goes over ``https`` only (plain ``http`` only to hosts a setting lists), to hosts on an
allow-list when there is one, and never to an address that is not public (loopback, private,
link-local such as the cloud metadata service 169.254.169.254, ...) unless a setting allows
that network.

:meth:`DestinationPolicy.check_url` is the cheap static check, for refusing a URL when a
producer hands it in; :meth:`DestinationPolicy.check_address` judges one resolved address.
:func:`worker.webhooks.guard.guarded_session` applies both to every delivery it makes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DestinationPolicy", "DestinationRefused"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: RFC 6052 well-known NAT64 prefix: the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Hosts inet_aton may read as an IPv4 address (decimal, octal or hex parts).
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


class DestinationRefused(Exception):
    """A webhook destination the policy refuses.

    ``rule`` says which rule, in words for a producer; ``str(exc) == rule``. It never quotes
    the URL, so no query string or credentials leak through it."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule

    def __str__(self) -> str:
        return self.rule


@dataclass(frozen=True)
class DestinationPolicy:
    """Which webhook destinations are allowed; the default allows any public https URL."""

    #: Hosts deliveries may go to; empty: any host. Entries are exact host names (case-insensitive)
    #: or "*.example.com" (any subdomain of example.com, not example.com itself), or IP literals.
    allowed_hosts: tuple[str, ...] = ()
    #: Hosts plain http is allowed to (same entry syntax); every other destination needs https.
    #: This relaxes the scheme only: the host must still be in ``allowed_hosts`` when that is set.
    http_hosts: tuple[str, ...] = ()
    #: Networks that are refused by default (private, loopback, link-local, ...) but allowed anyway,
    #: e.g. (ipaddress.ip_network("127.0.0.0/8"),) for tests or ("10.0.0.0/8",) for an internal
    #: receiver. Strings such as "10.0.0.0/8" are parsed into networks.
    allowed_networks: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        # Settings hand in strings; a bad entry fails here rather than at the first delivery.
        networks = tuple(ipaddress.ip_network(network) for network in self.allowed_networks)
        object.__setattr__(self, "allowed_networks", networks)

    def check_url(self, url: str) -> None:
        """Static checks that need no DNS: scheme (https, or http to an http_hosts host), a host
        present, no userinfo (user:pass@) in the URL, host in allowed_hosts when that is set, and
        an IP-literal host in a refused range. Raise DestinationRefused naming the rule."""
        # Messages never quote the URL: its query string or userinfo may carry secrets.
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - parsed lazily; a bad port raises here
        except ValueError:
            raise DestinationRefused("the URL cannot be parsed") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise DestinationRefused("only https URLs are allowed")
        host = _normalize_host(parts.hostname or "")
        if not host:
            raise DestinationRefused("the URL has no host")
        try:
            host.encode("idna")  # what the resolver will do: an empty or 64+ label fails there
        except UnicodeError:
            raise DestinationRefused("the host name is not a valid DNS name") from None
        if "@" in parts.netloc:
            raise DestinationRefused("credentials in the URL (user:password@) are not allowed")
        if scheme == "http" and not _host_matches(host, self.http_hosts):
            raise DestinationRefused("only https URLs are allowed for this host")
        if self.allowed_hosts and not _host_matches(host, self.allowed_hosts):
            raise DestinationRefused("the host is not on the allow-list")
        literal = _ip_literal(host)
        if literal is not None:
            self.check_address(str(literal))

    def check_address(self, address: str) -> None:
        """Raise DestinationRefused unless this resolved IP may be connected to."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise DestinationRefused("the destination address is not an IP address") from None
        # IPv6 forms that reach an IPv4 address are judged by that IPv4 address alone.
        embedded = _embedded_ipv4(ip)
        target = ip if embedded is None else embedded
        if any(
            candidate in network for candidate in {ip, target} for network in self.allowed_networks
        ):
            return
        kind = _refused_kind(target)
        if kind is not None:
            raise DestinationRefused(f"the destination address is not public ({kind})")


def _normalize_host(host: str) -> str:
    # A trailing dot names the same host in DNS; it must not dodge the allow-list.
    return host.lower().rstrip(".")


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP means, including the short and numeric IPv4 forms
    (127.1, 2130706433, 0x7f000001) that resolvers accept without DNS."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _host_matches(host: str, entries: tuple[str, ...]) -> bool:
    literal = _ip_literal(host)
    for raw in entries:
        entry = _normalize_host(raw.strip("[]"))
        if entry.startswith("*."):
            # Subdomains only; an IP literal is never a subdomain of anything.
            if literal is None and host.endswith(entry[1:]):
                return True
        elif literal is not None:
            if literal == _ip_literal(entry):
                return True
        elif host == entry:
            return True
    return False


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 IPv6 address leads to."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated) is refused whole: ::/8 is reserved.
    return None


def _refused_kind(ip: IPAddress) -> str | None:
    """Why an address is refused, in a word, or None for a public unicast address."""
    # is_global alone is not enough on Python 3.11: it calls IPv6 multicast, site-local and the
    # ::/8 forms global, and IPv4 multicast too.
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((kind for refused, kind in checks if refused), None)
