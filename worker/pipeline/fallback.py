"""The product's fallback task: enqueued once per call that ends needing another channel.

A request may name a task of its own (``fallback_task``, on ``fallback_queue``): its SMS or
voice sender. When the request's version-2 outcome says ``other_channel`` (and no limit
refused it: a resend past its cap must not become an SMS instead), the worker sends
that task once, with ``verification_id``, ``request_id``, ``next_step`` and the outcome (its
pin left out). Whoever publishes the outcome (the settler, a redelivery, the sweeper after a
crash) tries; a lease in the request's record lets one send, and the record remembers it was
sent. The message's task id is derived from the request, the same on every try: a worker
killed between sending and remembering (a window of one Redis round trip) sends it again
under the same id, which the product's task can drop as a duplicate.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Final, Protocol

import redis

from callpass_producer.contracts.outcome import (
    NextStep,
    Outcome,
    OutcomeDocument,
    OutcomeDocumentV2,
)
from worker.ops import metrics
from worker.pipeline.store import RequestRecord, RequestStore, now

__all__ = ["FALLBACK_NAMESPACE", "FallbackSender", "Fallbacks", "fallback_task_id"]

log = logging.getLogger(__name__)

#: The namespace of the fallback messages' task ids (uuid5 of the request).
FALLBACK_NAMESPACE: Final = uuid.UUID("6f1d3c52-7a8e-4f0b-9a41-2f4c8e5d7b10")

# KEYS[1] record; ARGV: now, lease. 1: this caller sends; 0: sent already (or the record is
# gone); -1: another caller holds a fresh lease.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'fallback_sent') == 1
then return 0 end
local taken = tonumber(redis.call('HGET', KEYS[1], 'fallback_taken_at') or '')
if taken and taken + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'fallback_taken_at', ARGV[1])
return 1
"""

#: Outcomes of requests refused before dialing: they send no fallback.
_REFUSED: Final = frozenset({Outcome.RATE_LIMITED, Outcome.INVALID})

_SENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'fallback_sent', '1') end
return 1
"""


class FallbackSender(Protocol):
    """Sends one message of the product's task (Celery's ``send_task``)."""

    def __call__(self, name: str, queue: str, task_id: str, kwargs: dict[str, Any]) -> None: ...


def fallback_task_id(request_id: str, first_task_id: str) -> str:
    """The stable task id of a request's fallback message (with the first claimer's task id,
    so a request id reused after its record expired gets a new one)."""
    return str(uuid.uuid5(FALLBACK_NAMESPACE, f"{request_id}|{first_task_id}"))


@dataclass
class Fallbacks:
    client: redis.Redis
    send: FallbackSender
    #: Where a request that names no ``fallback_queue`` sends its task.
    default_queue: str
    #: How long one publisher may take to send before another may try (it died).
    lease_s: float = 30.0

    def __post_init__(self) -> None:
        self._take = self.client.register_script(_TAKE)
        self._sent = self.client.register_script(_SENT)

    def after_outcome(self, record: RequestRecord, doc: OutcomeDocument) -> bool:
        """Send the request's fallback task if its outcome needs one and nobody has; ``False``
        while another publisher holds it (the request must be looked at again, in case that
        one died before sending)."""
        name = record.get("fallback_task")
        if not name or not isinstance(doc, OutcomeDocumentV2):
            return True
        # Never for a request a limit refused: the limits bound what fallbacks cost too.
        if doc.next_step != NextStep.OTHER_CHANNEL or doc.outcome in _REFUSED:
            return True
        key = RequestStore.key(record.request_id)
        taken = int(self._take(keys=[key], args=[repr(now()), repr(self.lease_s)]))
        if taken != 1:
            return taken == 0  # 0: sent already (or no record); -1: another holds it
        kwargs = {
            "verification_id": doc.verification_id,
            "request_id": record.request_id,
            "next_step": doc.next_step.value,
            "outcome": {**doc.model_dump(mode="json"), "pin": None},
        }
        queue = record.get("fallback_queue") or self.default_queue
        self.send(name, queue, fallback_task_id(record.request_id, record.task_id), kwargs)
        self._sent(keys=[key])
        metrics.fallback_sent()
        log.info("request %s: fallback task %s sent to %s", record.request_id, name, queue)
        return True
