"""The sockets and answers of the API client.

A request the client gives up on must be given up on the wire too. A graceful close leaves
the unsent bytes of a start in the kernel, which retransmits them for minutes: after a silent
cut heals, the API would place a call the producer was told is ``unknown``. So every API
socket

* closes abortively (``SO_LINGER`` on, 0 s): the kernel drops unsent data and sends a reset,
  also when the process dies;
* has ``TCP_USER_TIMEOUT``: the kernel gives up on data unacknowledged for that long (a
  start waiting on a long synchronous read, a connection the client never closes);
* sends keep-alive probes, so an idle pooled connection to a vanished peer is dropped rather
  than used for the next start.

Answers are read up to a size cap: a body beyond it is malformed.
"""

from __future__ import annotations

import math
import socket
import struct
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from worker.api.errors import MalformedResponseError
from worker.api.transport import translate_transport_error

__all__ = ["ApiAdapter", "api_socket_options", "read_capped"]

SocketOption = tuple[int, int, int | bytes]

#: Bytes read from the socket at a time while a body is read under its cap.
READ_CHUNK = 8192


def api_socket_options(user_timeout_s: float, keepalive_idle_s: float) -> list[SocketOption]:
    """urllib3's defaults (``TCP_NODELAY``) plus the options above; those this platform lacks
    are left out (``TCP_USER_TIMEOUT`` and the keep-alive timers are Linux's)."""
    options: list[SocketOption] = list(HTTPConnection.default_socket_options)
    options.append((socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)))
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    idle = max(1, math.ceil(keepalive_idle_s))
    timers = {"TCP_KEEPIDLE": idle, "TCP_KEEPINTVL": max(1, idle // 3), "TCP_KEEPCNT": 3}
    timers["TCP_USER_TIMEOUT"] = max(1, round(user_timeout_s * 1000))
    for name, value in timers.items():
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


class ApiAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through a proxy) carry ``socket_options``."""

    def __init__(self, socket_options: list[SocketOption]) -> None:
        # HTTPAdapter.__init__ calls init_poolmanager, which needs this.
        self._socket_options = socket_options
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["socket_options"] = self._socket_options
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["socket_options"] = self._socket_options
        return super().proxy_manager_for(proxy, **proxy_kwargs)


def read_capped(response: requests.Response, max_bytes: int) -> bytes:
    """The body of a streamed ``response``, at most ``max_bytes`` (decoded).

    Raises :class:`MalformedResponseError` past the cap, and the client's error for a
    transport fault while reading. The response is always closed: one read in full goes back
    to the pool, one abandoned half-way is closed with its connection (abortively).
    """
    try:
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(response.status_code, max_bytes)
        body = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=READ_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise _too_large(response.status_code, max_bytes)
        except requests.RequestException as exc:
            raise translate_transport_error(exc) from exc
        return bytes(body)
    finally:
        response.close()


def _too_large(status_code: int, max_bytes: int) -> MalformedResponseError:
    return MalformedResponseError(
        f"HTTP {status_code}: body larger than {max_bytes} bytes "
        "(CALLPASS_API_MAX_BODY_BYTES): not a JSON envelope"
    )
