"""kombu's Redis transport, hardened for a Redis that restarts under a running worker.

Two gaps in kombu's Redis transport lose work when Redis goes away:

* A message is taken with ``BRPOP`` and only then written to the unacked hash. If Redis dies
  between the two, the message exists nowhere but in this process. We keep such messages and
  push them back to their queue as soon as a channel connects again (if the write did land,
  the message is delivered twice, which our idempotent tasks absorb).
* Acking or restoring on a lost connection, kombu may dereference a client it already tore
  down (``AttributeError`` in ``_connparams``; this class of bug is on kombu's tracker since
  kombu 3, e.g. kombu#582 and #970). Celery calls that an unrecoverable error and the worker
  dies. We raise a connection error there instead, which kombu and Celery handle: the
  messages stay in Redis' unacked hash, return after the visibility time-out, and the worker
  reconnects when Redis is back.

One that costs CPU on every message: kombu builds a new redis-py client for each publish, ack
and restore (``conn_or_acquire``), and building one fills a dict of ~200 reply parsers. A
client over the channel's connection pool is thread-safe, so each channel keeps one, rebuilt
whenever kombu replaces the pool (after a lost connection).

And one that makes a worker slow to come back after a silent cut (packets dropped, nothing
refused): kombu waits 2, 4, 6 ... up to 30 s between connection attempts, so the link may be
back for tens of seconds before the next attempt. While attempts time out (silence, not a
refusal) we try again at once for a while, each try bounded by the connect time-out
(worker/broker/redis_sockets.py): the first try after the link returns comes within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

__all__ = ["Transport"]

log = logging.getLogger(__name__)

# Messages taken from Redis whose unacked record could not be written: (payload, exchange,
# routing key). Process-wide, because the channel that took them is gone by the time a new one
# can put them back.
_rescued: list[tuple[Any, str, str]] = []
_rescued_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        try:
            super().append(message, delivery_tag)
        except _connection_errors(self.channel):
            delivery = message.delivery_info
            with _rescued_lock:
                _rescued.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("Redis went away as a message was taken; it will be queued again")
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # connects (pings) Redis
        self._queue_rescued()

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # kombu builds it here, or again after a reconnect
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            untyped: Any = self  # kombu's Channel is untyped
            shared = self._shared_client = untyped._create_client()
        yield shared

    def _connparams(self, asynchronous: bool = False) -> Any:
        # kombu reaches here on a torn-down connection (client None) while acking or restoring
        # after Redis went away; say so with a connection error, which kombu and Celery handle
        # (the message stays unacked in Redis), instead of an AttributeError that kills the
        # worker.
        connection = getattr(self, "connection", None)
        if connection is None or getattr(connection, "client", None) is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        parent: Any = super()  # kombu's Channel is untyped
        return parent._connparams(asynchronous)

    def _queue_rescued(self) -> None:
        with _rescued_lock:
            batch = list(_rescued)
            _rescued.clear()
        if not batch:
            return
        restore = getattr(self, "_do_restore_message")  # noqa: B009 - kombu is untyped here
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                for payload, exchange, routing_key in batch:
                    restore(payload, exchange, routing_key, pipe, True)
                pipe.execute()
        except _connection_errors(self):
            with _rescued_lock:
                _rescued.extend(batch)
            return
        log.warning("queued again %d message(s) taken while Redis went away", len(batch))


def _connection_errors(channel: Any) -> tuple[type[BaseException], ...]:
    return tuple(getattr(channel, "connection_errors", ())) or (redis.exceptions.ConnectionError,)


#: How long a silent Redis is tried back to back before kombu's own backoff takes over (which
#: also checks for a shutdown between its attempts).
SILENT_RETRY_WINDOW_S = 20.0


class Transport(kombu_redis.Transport):
    Channel = Channel

    def establish_connection(self) -> Any:
        deadline = time.monotonic() + SILENT_RETRY_WINDOW_S
        while True:
            try:
                return super().establish_connection()
            except redis.exceptions.TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                log.debug("Redis did not answer the connection attempt; trying again")
