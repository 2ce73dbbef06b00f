"""The outbox: a producer's note that a request was sent, kept until a worker claims it.

kombu's Redis transport takes a message from its queue (``BRPOP``) and only then records it
as unacked; a worker killed between the two loses the message, and nothing would ever bring it
back. A producer that writes to the outbox first (``worker.producer.enqueue_call`` does, when
given the records' Redis) is covered: a worker deletes the note when it claims the request,
and the sweeper publishes the request again when a note outlives its due time. The note holds
the task's arguments (the number, like the queued message itself) until then.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

__all__ = ["Outbox", "OutboxEntry"]

NOTES_KEY = "callpass:outbox"
DUE_KEY = "callpass:outbox:due"

OutboxEntry = tuple[str, dict[str, Any], float]  # task id, kwargs, requested_at


class Outbox:
    def __init__(self, client: redis.Redis, grace_s: float) -> None:
        """``grace_s``: how long a note may wait for its claim before it counts as lost."""
        self._redis = client
        self._grace_s = grace_s

    def note(self, task_id: str, kwargs: dict[str, Any], requested_at: float) -> None:
        """Record a request about to be published."""
        with self._redis.pipeline() as pipe:
            pipe.hset(NOTES_KEY, task_id, json.dumps({"kwargs": kwargs, "at": requested_at}))
            pipe.zadd(DUE_KEY, {task_id: requested_at + self._grace_s})
            pipe.execute()

    def claimed(self, task_id: str) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(NOTES_KEY, task_id)
            pipe.zrem(DUE_KEY, task_id)
            pipe.execute()

    def overdue(self, limit: int = 100) -> list[OutboxEntry]:
        """Notes past their due time; each is pushed back by ``grace_s`` as it is returned."""
        now = time.time()
        ids = [
            i.decode()
            for i in cast(list[bytes], self._redis.zrangebyscore(DUE_KEY, "-inf", now, 0, limit))
        ]
        entries: list[OutboxEntry] = []
        for task_id in ids:
            raw = cast(bytes | None, self._redis.hget(NOTES_KEY, task_id))
            if raw is None:
                self._redis.zrem(DUE_KEY, task_id)
                continue
            note = json.loads(raw)
            self._redis.zadd(DUE_KEY, {task_id: now + self._grace_s})
            entries.append((task_id, dict(note["kwargs"]), float(note["at"])))
        return entries
