"""The session webhook deliveries use: every request and every connection checked.

:func:`guarded_session` runs :meth:`DestinationPolicy.check_url` (the rules live in
:mod:`worker.webhooks.destinations`) on every request and checks the addresses the host
resolves to at connect time, on the very addresses it then connects to, so a DNS answer that
changes between a check and the connect (DNS rebinding) cannot slip through. Redirects are not
followed: a 302 to an internal address would skip every check.

What a caller of ``session.post(...)`` sees on a refusal: :class:`requests.ConnectionError`
(``requests.exceptions.ConnectionError``), the same type as for an unreachable host, with the
:class:`DestinationRefused` in its chain. Use :func:`refusal_of` to tell the two apart: a
refusal is permanent (do not retry it); report ``str(refusal)`` to the producer, not
``str(exc)``, which names the URL with its query string.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family, create_connection

from worker.exception_chain import find_in_chain
from worker.webhooks.deadline import current_deadline
from worker.webhooks.destinations import DestinationPolicy, DestinationRefused

__all__ = ["guarded_session", "refusal_of"]


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
