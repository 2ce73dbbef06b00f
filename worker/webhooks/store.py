"""Webhook events kept durably in Redis until delivered or dead-lettered.

A retry may be hours away: far longer than a broker keeps a countdown message safely (the
visibility time-out is minutes), so no worker holds one. Each event is a hash
(``callpass:wh:ev:<event id>``); pending ones sit in the sorted set ``callpass:wh:due``, scored
by when their next attempt is due. A mover in every worker takes due events and sends one
``callpass.deliver_webhook`` message each; taking an event pushes its score a *lease* ahead,
so if that message or its worker is lost, the event falls due again and nothing is lost.

Every message names the attempt it is for: after an attempt is recorded, older messages for
the event (a lease that ran out while a worker was slow) find a different number and drop.
Beginning an attempt renews the lease (and takes a lock as long), and so does deferring a
delivery: the lease is kept above an attempt's deadline (see Settings), so the mover never
sends again an attempt still in flight.
Dead events move to ``callpass:wh:dead`` and stay there until replayed or expired.
Each step is one Lua script (:mod:`worker.webhooks.store_scripts`), so it is atomic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from worker.webhooks import store_scripts

__all__ = ["DeadEvent", "WebhookStore"]

EVENT_PREFIX = "callpass:wh:ev:"
DUE_KEY = "callpass:wh:due"
DEAD_KEY = "callpass:wh:dead"
LOCK_PREFIX = "callpass:wh:lock:"


@dataclass(frozen=True)
class DeadEvent:
    event_id: str
    type: str
    request_id: str
    url: str
    attempts: int
    last_error: str
    dead_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "request_id": self.request_id,
            "url": self.url,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "dead_at": self.dead_at,
        }


class WebhookStore:
    def __init__(
        self, client: redis.Redis, *, pending_ttl_s: int, delivered_ttl_s: int, dead_ttl_s: int
    ) -> None:
        """TTLs: a pending event outlives its whole retry schedule; a delivered one is kept
        as a marker (so a re-settle does not send it again); a dead one until replayed."""
        self._redis = client
        self._pending_ttl_s = pending_ttl_s
        self._delivered_ttl_s = delivered_ttl_s
        self._dead_ttl_s = dead_ttl_s
        self._add = client.register_script(store_scripts.ADD)
        self._take_due = client.register_script(store_scripts.TAKE_DUE)
        self._begin = client.register_script(store_scripts.BEGIN)
        self._extend = client.register_script(store_scripts.EXTEND)
        self._finish = client.register_script(store_scripts.FINISH)
        self._replay = client.register_script(store_scripts.REPLAY)

    def add(self, event_id: str, fields: dict[str, str], due_at: float) -> bool:
        """Store a new pending event, due at ``due_at``; False if the id is already known."""
        created = self._add(
            keys=[EVENT_PREFIX + event_id, DUE_KEY],
            args=[self._pending_ttl_s, due_at, event_id, *_pairs(fields)],
        )
        return bool(created)

    def take_due(self, lease_s: float, limit: int = 500) -> list[tuple[str, int]]:
        """Due events as ``(event id, attempt)``, each leased for ``lease_s`` seconds."""
        now = time.time()
        flat = cast(
            list[bytes],
            self._take_due(
                keys=[DUE_KEY],
                args=[now, now + lease_s, limit, EVENT_PREFIX, self._pending_ttl_s],
            ),
        )
        return [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def begin(self, event_id: str, attempt: int, lock_s: float, owner: str) -> dict[str, str]:
        """The event's fields if attempt ``attempt`` is still to be made and nobody else is
        making it (a lock for ``lock_s``, and its lease renewed as long); empty otherwise."""
        flat = cast(
            list[bytes],
            self._begin(
                keys=[EVENT_PREFIX + event_id, LOCK_PREFIX + event_id, DUE_KEY],
                args=[attempt, int(lock_s * 1000), owner, time.time() + lock_s, event_id],
            ),
        )
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    def extend_lease(self, event_id: str, attempt: int, lease_s: float) -> bool:
        """Renew the lease of a delivery that waits to be made (deferred): True if attempt
        ``attempt`` is still to be made and nobody is making it."""
        return bool(
            self._extend(
                keys=[EVENT_PREFIX + event_id, LOCK_PREFIX + event_id, DUE_KEY],
                args=[attempt, time.time() + lease_s, event_id],
            )
        )

    def delivered(self, event_id: str, attempt: int, owner: str, status: int) -> bool:
        return self._end(
            event_id,
            attempt,
            owner,
            "delivered",
            time.time(),
            self._delivered_ttl_s,
            {"last_status": str(status), "delivered_at": repr(time.time()), "last_error": ""},
        )

    def retry_at(self, event_id: str, attempt: int, owner: str, due_at: float, error: str) -> bool:
        return self._end(
            event_id, attempt, owner, "pending", due_at, self._pending_ttl_s, {"last_error": error}
        )

    def dead(self, event_id: str, attempt: int, owner: str, error: str) -> bool:
        now = time.time()
        return self._end(
            event_id,
            attempt,
            owner,
            "dead",
            now,
            self._dead_ttl_s,
            {"last_error": error, "dead_at": repr(now)},
        )

    def _end(
        self,
        event_id: str,
        attempt: int,
        owner: str,
        state: str,
        score: float,
        ttl_s: int,
        fields: dict[str, str],
    ) -> bool:
        return bool(
            self._finish(
                keys=[EVENT_PREFIX + event_id, DUE_KEY, DEAD_KEY, LOCK_PREFIX + event_id],
                args=[attempt, state, score, ttl_s, event_id, owner, *_pairs(fields)],
            )
        )

    def load(self, event_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(EVENT_PREFIX + event_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def dead_events(self, limit: int = 100) -> list[DeadEvent]:
        """Dead events, oldest first (expired ones are dropped from the index)."""
        ids = [i.decode() for i in cast(list[bytes], self._redis.zrange(DEAD_KEY, 0, limit - 1))]
        events = []
        for event_id in ids:
            fields = self.load(event_id)
            if fields.get("state") != "dead":
                self._redis.zrem(DEAD_KEY, event_id)
                continue
            events.append(
                DeadEvent(
                    event_id=event_id,
                    type=fields.get("type", ""),
                    request_id=fields.get("request_id", ""),
                    url=fields.get("url", ""),
                    attempts=int(fields.get("attempt", "0")),
                    last_error=fields.get("last_error", ""),
                    dead_at=float(fields.get("dead_at", "0")),
                )
            )
        return events

    def replay(self, event_id: str) -> bool:
        """Make a dead event pending again with a fresh schedule; False if it is not dead."""
        return bool(
            self._replay(
                keys=[EVENT_PREFIX + event_id, DUE_KEY, DEAD_KEY],
                args=[time.time(), self._pending_ttl_s, event_id],
            )
        )

    def counts(self) -> dict[str, int]:
        return {
            "pending": int(self._redis.zcard(DUE_KEY)),
            "dead": int(self._redis.zcard(DEAD_KEY)),
        }


def _pairs(fields: dict[str, str]) -> list[str]:
    """Field/value pairs flattened, as the scripts take them after their fixed arguments."""
    return [item for pair in fields.items() for item in pair]
