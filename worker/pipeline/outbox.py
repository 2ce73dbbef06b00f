"""The outbox: a producer's note that a request was sent, kept until a worker claims it.

kombu's Redis transport takes a message from its queue (``BRPOP``) and only then records it
as unacked; a worker killed between the two loses the message, and nothing would ever bring it
back. A producer that writes to the outbox first (``worker.producer.enqueue_call`` does, when
given the records' Redis) is covered: a worker deletes the note when it claims the request,
and the sweeper publishes the request again when a note outlives its due time. The note holds
the task's arguments (the number, like the queued message itself) until then, and never
longer than its time to live: a note is a key of its own with an expiry, so a number is not
kept in clear by a request that no worker ever answers.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

__all__ = ["Outbox", "OutboxEntry", "lost_after_s"]

#: Sorted set of task ids by the time their note counts as lost.
DUE_KEY = "callpass:outbox:due"
#: One key per note (the task's arguments and its request time), with an expiry.
NOTE_KEY_PREFIX = "callpass:outbox:note:"
#: Where notes of earlier versions were kept (one hash, no expiry): read and cleared still.
LEGACY_NOTES_KEY = "callpass:outbox"
#: How long a note lives unclaimed, in seconds: long past the placement deadline, so the
#: sweeper has sent it again many times (each answer, even ``expired``, clears it).
DEFAULT_NOTE_TTL_S = 3600.0

OutboxEntry = tuple[str, dict[str, Any], float]  # task id, kwargs, requested_at
#: Seconds past the broker's visibility time-out before a message nobody has seen again
#: counts as lost: the broker's own redelivery comes first.
REDELIVERY_MARGIN_S = 15.0


def lost_after_s(visibility_timeout_s: float) -> float:
    """How long after it was due a step (an outbox note, a request's progress) counts as lost."""
    return visibility_timeout_s + REDELIVERY_MARGIN_S


def note_key(task_id: str) -> str:
    return NOTE_KEY_PREFIX + task_id


class Outbox:
    def __init__(self, client: redis.Redis, grace_s: float, ttl_s: float | None = None) -> None:
        """``grace_s``: how long a note may wait for its claim before it counts as lost;
        ``ttl_s``: how long it is kept at all (more than ``grace_s``; by default an hour, or
        four times ``grace_s`` where that is longer, so the sweeper sends it again a few times).
        """
        if ttl_s is None:
            ttl_s = max(DEFAULT_NOTE_TTL_S, 4 * grace_s)
        if ttl_s <= grace_s:
            raise ValueError(f"outbox ttl_s ({ttl_s}) must be more than grace_s ({grace_s})")
        self._redis = client
        self._grace_s = grace_s
        self._ttl_ms = int(ttl_s * 1000)

    def note(self, task_id: str, kwargs: dict[str, Any], requested_at: float) -> None:
        """Record a request about to be published."""
        note = json.dumps({"kwargs": kwargs, "at": requested_at})
        with self._redis.pipeline() as pipe:
            pipe.set(note_key(task_id), note, px=self._ttl_ms)
            pipe.zadd(DUE_KEY, {task_id: requested_at + self._grace_s})
            pipe.execute()

    def claimed(self, task_id: str) -> None:
        """Forget the note: a worker has the request (or has answered it)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(note_key(task_id))
            pipe.hdel(LEGACY_NOTES_KEY, task_id)
            pipe.zrem(DUE_KEY, task_id)
            pipe.execute()

    def overdue(self, limit: int = 100) -> list[OutboxEntry]:
        """Notes past their due time; each is pushed back by ``grace_s`` as it is returned.

        A due entry whose note has expired (or was claimed) is dropped.
        """
        now = time.time()
        ids = [
            i.decode()
            for i in cast(list[bytes], self._redis.zrangebyscore(DUE_KEY, "-inf", now, 0, limit))
        ]
        entries: list[OutboxEntry] = []
        for task_id in ids:
            raw = cast(bytes | None, self._redis.get(note_key(task_id)))
            if raw is None:
                raw = cast(bytes | None, self._redis.hget(LEGACY_NOTES_KEY, task_id))
            if raw is None:
                self._redis.zrem(DUE_KEY, task_id)
                continue
            note = json.loads(raw)
            self._redis.zadd(DUE_KEY, {task_id: now + self._grace_s})
            entries.append((task_id, dict(note["kwargs"]), float(note["at"])))
        return entries
