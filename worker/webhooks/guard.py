"""Where webhook deliveries may go: the SSRF guard for producer-supplied URLs.

Producers name the URL; the worker makes the request from inside our network. So a delivery
goes over ``https`` only (plain ``http`` only to hosts a setting lists), to hosts on an
allow-list when there is one, and never to an address that is not public (loopback, private,
link-local such as the cloud metadata service 169.254.169.254, ...) unless a setting allows
that network. Redirects are not followed: a 302 to an internal address would skip every check.

:meth:`DestinationPolicy.check_url` is the cheap static check, for refusing a URL when a
producer hands it in. :func:`guarded_session` is what deliveries use: it runs ``check_url`` on
every request and checks the addresses the host resolves to at connect time, on the very
addresses it then connects to, so a DNS answer that changes between a check and the connect
(DNS rebinding) cannot slip through.

What a caller of ``session.post(...)`` sees on a refusal: :class:`requests.ConnectionError`
(``requests.exceptions.ConnectionError``), the same type as for an unreachable host, with the
:class:`DestinationRefused` in its chain. Use :func:`refusal_of` to tell the two apart: a
refusal is permanent (do not retry it); report ``str(refusal)`` to the producer, not
``str(exc)``, which names the URL with its query string.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family, create_connection

from worker.exception_chain import find_in_chain
from worker.webhooks.deadline import current_deadline

__all__ = ["DestinationPolicy", "DestinationRefused", "guarded_session", "refusal_of"]

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


def refusal_of(exc: BaseException) -> DestinationRefused | None:
    """The DestinationRefused behind ``exc`` (itself, its cause or context chain, urllib3's
    ``reason`` or requests' wrapped exception), or None when ``exc`` is no refusal."""
    return find_in_chain(exc, DestinationRefused)


def guarded_session(policy: DestinationPolicy, *, pool_maxsize: int = 10) -> requests.Session:
    """A requests Session for webhook deliveries.

    - Every request is checked with ``policy.check_url`` first, whatever its scheme.
    - Every connection resolves the host itself, checks each resolved address with
      ``policy.check_address`` (all must pass) and connects to the first checked address that
      answers; the name is never resolved a second time.
    - A refusal raises ``requests.exceptions.ConnectionError`` with the DestinationRefused in its
      chain (:func:`refusal_of` finds it); a name that does not resolve raises a plain
      ConnectionError.
    - Redirects are never followed: the session sees no redirect target in any response, so a
      3xx comes back to the caller as it is, whatever ``allow_redirects`` says (callers pass
      ``allow_redirects=False`` all the same, to say so). ``max_redirects`` is 0 as well. (With
      requests 2.34, ``max_redirects = 0`` alone would make even ``allow_redirects=False``
      raise ``TooManyRedirects`` on a 3xx, as ``Session.send`` still computes ``response.next``.)
    - No proxies or netrc from the environment (``trust_env`` is False); a proxy passed
      explicitly is refused, as it would connect on our behalf unchecked.
    - TLS verification stays on; SNI and the certificate check use the URL's host name, as
      only the socket underneath is replaced.

    Share one session between threads as requests allows; the policy is immutable.
    """
    session = _NoRedirectSession()
    session.trust_env = False
    session.max_redirects = 0
    session.verify = True
    # Mounted for every prefix, so even an ftp:// URL meets check_url rather than another adapter.
    session.adapters.clear()
    session.mount("", _GuardedAdapter(policy, pool_maxsize=pool_maxsize))
    return session


# --- addresses ----------------------------------------------------------------------------------


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


# --- connections --------------------------------------------------------------------------------


def _connect_checked(conn: HTTPConnection, policy: DestinationPolicy) -> socket.socket:
    """urllib3's ``HTTPConnection._new_conn`` with the resolved addresses checked before use;
    inside an attempt's deadline (worker.webhooks.deadline), connects take at most the time
    left and the socket is watched until the attempt ends."""
    try:
        infos = socket.getaddrinfo(
            conn._dns_host, conn.port, allowed_gai_family(), socket.SOCK_STREAM
        )
    except socket.gaierror as e:
        raise NameResolutionError(conn.host, conn, e) from e
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # All must pass: a name that also resolves to an internal address is refused whole.
    for address in addresses:
        try:
            policy.check_address(address)
        except DestinationRefused as refused:
            raise NewConnectionError(
                conn, f"Refused to connect to {conn.host}: {refused}"
            ) from refused
    error: OSError = OSError("getaddrinfo returned no addresses")
    deadline = current_deadline()
    for address in addresses:
        if deadline is not None and deadline.expired:
            error = TimeoutError("the attempt's deadline passed")
            break
        try:
            # An IP literal: create_connection's own getaddrinfo does no DNS here.
            sock = create_connection(
                (address, conn.port),
                conn.timeout if deadline is None else deadline.bound(conn.timeout),
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as e:
            error = e
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        if deadline is not None:
            deadline.watch(sock)
        return sock
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def _watch_reused(conn: HTTPConnection) -> None:
    """A kept-alive connection taken from the pool is watched by the attempt using it too."""
    deadline = current_deadline()
    if deadline is not None and conn.sock is not None:
        deadline.watch(conn.sock)


def _pool_classes(policy: DestinationPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes whose connections check addresses against ``policy``.

    urllib3 builds connections from a class and a pool key with fixed fields, so the policy
    rides on classes made for it rather than on pool keyword arguments."""

    class Connection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

        def request(self, *args: Any, **kwargs: Any) -> None:
            _watch_reused(self)
            super().request(*args, **kwargs)

    class TLSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

        def request(self, *args: Any, **kwargs: Any) -> None:
            _watch_reused(self)
            super().request(*args, **kwargs)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    return {"http": Pool, "https": TLSPool}


class _NoRedirectSession(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests follows (and computes response.next from) only what this returns.
        return None


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: DestinationPolicy, *, pool_maxsize: int) -> None:
        self._policy = policy
        self._pool_classes = _pool_classes(policy)
        # HTTPAdapter.__init__ calls init_poolmanager, which needs the two above.
        super().__init__(pool_maxsize=pool_maxsize)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._pool_classes)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        refused = DestinationRefused("webhook deliveries do not go through proxies")
        raise requests.exceptions.ConnectionError(str(refused)) from refused

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        try:
            self._policy.check_url(request.url or "")
        except DestinationRefused as refused:
            raise requests.exceptions.ConnectionError(str(refused), request=request) from refused
        return super().send(request, stream, timeout, verify, cert, proxies)
