"""The webhook events a request emits: ``call.placed`` and ``call.completed``.

:class:`WebhookEvents` turns a request's milestones into stored events (see
:mod:`worker.webhooks.store` for how they survive restarts) and sends each one's first
delivery message; :mod:`worker.webhooks.delivery` makes the attempts.

An event's id is derived from the request, so the events of a request that is resumed or
settled twice are the same events: stored once, and delivered under one ``webhook-id`` that
receivers de-duplicate on. The body is fixed when the event is stored; each attempt is signed
afresh (a retry hours later needs a current ``webhook-timestamp``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.pipeline.ports import NoTracing, Tracing
from worker.sane_values import iso
from worker.webhooks.destinations import DestinationPolicy, DestinationRefused
from worker.webhooks.store import WebhookStore

__all__ = ["WebhookEvents", "event_id_for"]

log = logging.getLogger(__name__)

#: Sends one ``callpass.deliver_webhook`` message: (event id, attempt).
Dispatch = Callable[[str, int], None]


def event_id_for(event_type: str, request_id: str, task_id: str) -> str:
    """The stable ``webhook-id`` of a request's event (the first claimer's task id keeps a
    request id reused after its record expired from colliding with the old one)."""
    digest = hashlib.sha256(f"{event_type}|{request_id}|{task_id}".encode()).hexdigest()
    return "msg_" + digest[:32]


@dataclass
class WebhookEvents:
    store: WebhookStore
    dispatch: Dispatch
    policy: DestinationPolicy
    #: Delay before the first attempt (the schedule's first entry).
    first_delay_s: float
    #: How long a sent delivery message has before its event falls due again.
    lease_s: float
    default_url: str = ""
    enabled: bool = True
    #: The emitting span's trace context is stored with the event, for its deliveries' spans.
    tracing: Tracing = field(default_factory=NoTracing)

    def url_for(self, requested: str | None) -> str:
        """The URL a request's events go to ('' for none); raise DestinationRefused."""
        url = requested or self.default_url
        if requested and not self.enabled:
            raise DestinationRefused(
                "webhooks are off on this worker (no CALLPASS_WEBHOOK_SECRETS)"
            )
        if url:
            self.policy.check_url(url)
        return url

    def emit(
        self, event_type: str, url: str, request_id: str, task_id: str, data: dict[str, Any]
    ) -> str:
        """Store the event (once per id) and send its first attempt; return its id."""
        event_id = event_id_for(event_type, request_id, task_id)
        created_at = time.time()
        body = json.dumps(
            {"type": event_type, "timestamp": iso(created_at), "data": data},
            separators=(",", ":"),
            sort_keys=True,
        )
        immediate = self.first_delay_s <= 0
        due_at = created_at + (self.lease_s if immediate else self.first_delay_s)
        fields = {
            "type": event_type,
            "request_id": request_id,
            "url": url,
            "body": body,
            "created_at": repr(created_at),
            **self.tracing.carrier(),
        }
        if self.store.add(event_id, fields, due_at) and immediate:
            try:
                self.dispatch(event_id, 0)
            except Exception as exc:  # the broker is down: the mover sends it once the lease ends
                log.warning(
                    "webhook %s stored; first send deferred (%s)", event_id, type(exc).__name__
                )
        return event_id

    def move_due(self, limit: int = 500) -> int:
        """Send every due event (run by each worker's mover thread); return how many."""
        taken = self.store.take_due(self.lease_s, limit)
        for event_id, attempt in taken:
            self.dispatch(event_id, attempt)
        return len(taken)
