"""Socket time-outs for every connection to Redis: broker, result backend, records.

A Redis that goes silent (packets dropped by a firewall, a NAT or a dead host: nothing refuses)
must end in an error within seconds, never in a wait: without a socket time-out a synchronous
command (kombu's publish of a task event, in the consumer's own loop) waits for TCP to give up,
about 15 minutes, and the worker takes nothing meanwhile. Each client below gets a read
time-out, a connect time-out, TCP keep-alive (a connection idle across a cut is found dead) and
``TCP_USER_TIMEOUT`` (unacknowledged data aborts the connection, which also wakes the event
loop's BRPOP, a socket no read time-out covers).

redis-py retries no command that timed out: the command may have run, and a script run twice is
not always the same as once (the request records' own retries are idempotent). Celery's own
retries of a result write or a publish remain; both are safe twice (tasks are idempotent).
"""

from __future__ import annotations

import socket
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HEALTH_CHECK_INTERVAL_S",
    "SOCKET_TIMEOUT_S",
    "backend_socket_settings",
    "broker_socket_options",
    "keepalive_options",
    "records_socket_options",
]

#: Longest wait for one reply from Redis; our commands answer in milliseconds.
SOCKET_TIMEOUT_S = 5.0
#: Longest wait for a TCP connection; a silent Redis is tried again right after (see
#: worker/broker/redis_transport.py), so the first try after the link returns comes this soon.
CONNECT_TIMEOUT_S = 2.0
#: An idle connection is pinged before use after this long; kombu also drops a BRPOP whose
#: reply is this overdue (past its 1 s server-side time-out).
HEALTH_CHECK_INTERVAL_S = 5
#: Keep-alive: first probe after 10 s idle, then every 5 s, dead after 3 unanswered (~25 s).
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
#: Data unacknowledged this long (ms) aborts the connection.
USER_TIMEOUT_MS = 10_000


def keepalive_options() -> dict[int, int]:
    """TCP-level socket options (those this platform has) for redis-py's keep-alive hook."""
    options = {}
    for name, value in (*KEEPALIVE, ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
        constant = getattr(socket, name, None)
        if constant is not None:
            options[constant] = value
    return options


def broker_socket_options() -> dict[str, Any]:
    """kombu Redis transport options (``broker_transport_options``)."""
    return {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        # A publish whose reply was lost may have landed: not sent twice by redis-py.
        "retry_on_timeout": False,
    }


def backend_socket_settings() -> dict[str, Any]:
    """Celery's settings for its Redis result backend (redis-py's keep-alive defaults apply:
    Celery passes no options for it)."""
    return {
        "redis_socket_timeout": SOCKET_TIMEOUT_S,  # Celery's default: 120 s
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_S,
        "redis_socket_keepalive": True,
        "redis_backend_health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "redis_retry_on_timeout": False,
    }


def records_socket_options() -> dict[str, Any]:
    """redis-py client options for the request records (and limits, breaker, pins, outbox,
    webhook store): no automatic retry, whatever redis-py's default becomes."""
    return {
        "socket_timeout": 10.0,  # as before: a write may wait behind an fsync (appendfsync always)
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(NoBackoff(), 0),
    }
