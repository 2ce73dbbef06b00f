"""The outbox, as the workers read it: a claim forgets a note, the sweeper takes the overdue.

Producers write the notes (:class:`callpass_producer.outbox.OutboxNotes`, where the reason
for the outbox is told); a note is a key of its own with an expiry, so a number is not kept
in clear by a request that no worker ever answers.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from callpass_producer.outbox import DUE_KEY, OutboxNotes, lost_after_s, note_key

__all__ = ["Outbox", "OutboxEntry", "lost_after_s"]

#: Where notes of earlier versions were kept (one hash, no expiry): read and cleared still.
LEGACY_NOTES_KEY = "callpass:outbox"

OutboxEntry = tuple[str, dict[str, Any], float]  # task id, kwargs, requested_at


class Outbox(OutboxNotes):
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
