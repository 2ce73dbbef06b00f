"""The outbox note a producer writes before it publishes a request.

kombu's Redis transport takes a message from its queue (``BRPOP``) and only then records it
as unacked; a worker killed between the two loses the message. A note written first, in the
workers' Redis, covers that: a worker deletes it when it claims the request, and the workers'
sweeper publishes the request again when a note outlives its due time. The note holds the
task's arguments (the number, like the queued message itself) and expires in any case.
The reading side is the worker's (``worker.pipeline.outbox``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

__all__ = ["DUE_KEY", "NOTE_KEY_PREFIX", "OutboxNotes", "lost_after_s", "note_key"]

#: Sorted set of task ids by the time their note counts as lost.
DUE_KEY = "callpass:outbox:due"
#: One key per note (the task's arguments and its request time), with an expiry.
NOTE_KEY_PREFIX = "callpass:outbox:note:"
#: How long a note lives unclaimed, in seconds: long past the placement deadline, so the
#: sweeper has sent it again many times (each answer, even ``expired``, clears it).
DEFAULT_NOTE_TTL_S = 3600.0
#: Seconds past the broker's visibility time-out before a message nobody has seen again
#: counts as lost: the broker's own redelivery comes first.
REDELIVERY_MARGIN_S = 15.0


def lost_after_s(visibility_timeout_s: float) -> float:
    """How long after it was due a step (an outbox note, a request's progress) counts as lost."""
    return visibility_timeout_s + REDELIVERY_MARGIN_S


def note_key(task_id: str) -> str:
    return NOTE_KEY_PREFIX + task_id


class OutboxNotes:
    """Writes the notes; ``grace_s``: how long a note may wait for its claim before it counts
    as lost; ``ttl_s``: how long it is kept at all (more than ``grace_s``; by default an hour,
    or four times ``grace_s`` where that is longer, so the sweeper sends it again a few times).
    """

    def __init__(self, client: redis.Redis, grace_s: float, ttl_s: float | None = None) -> None:
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
