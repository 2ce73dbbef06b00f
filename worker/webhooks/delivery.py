"""Webhook delivery: one attempt per ``callpass.deliver_webhook`` message, at least once.

:class:`WebhookDeliverer` makes one delivery attempt of an event stored by
:mod:`worker.webhooks.events` and records what happened in :mod:`worker.webhooks.store`:
delivered, tried again on the retry schedule (or later, when the receiver's Retry-After asks
for it), or dead-lettered.

Deliveries share the worker's pool with calls, so they are kept small: each attempt ends by a
total deadline (:mod:`worker.webhooks.deadline`: a receiver that trickles its answer is cut off
there and the attempt counts as failed), and at most ``slots`` attempts run at once in a
process; a delivery beyond that is deferred, sent again with a short countdown without
counting as an attempt, so the remaining threads stay free for calls.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from worker.api.retry_after import MAX_RETRY_AFTER_S, retry_after_s
from worker.ops import metrics
from worker.pipeline.ports import NoTracing, Tracing
from worker.webhooks.deadline import AttemptDeadline, attempt_deadline
from worker.webhooks.destinations import DestinationPolicy, DestinationRefused
from worker.webhooks.guard import refusal_of
from worker.webhooks.signature import signature_headers
from worker.webhooks.store import WebhookStore

__all__ = ["WebhookDeliverer"]

log = logging.getLogger(__name__)

USER_AGENT = "callpass-worker-webhooks/1"

#: A deferred delivery waits this long (plus up to as much again, spreading a backlog).
DEFER_S = 1.0

#: Sends it again after a countdown: (event id, attempt, seconds).
Defer = Callable[[str, int, float], None]


def host_of(url: str) -> str:
    """The URL's host, for logs and errors: paths and queries may carry a receiver's token."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


#: Errors no retry can fix: the URL itself is unusable.
PERMANENT_REQUEST_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)


@dataclass
class WebhookDeliverer:
    store: WebhookStore
    keys: Sequence[bytes]
    schedule_s: Sequence[float]
    timeout_s: float
    policy: DestinationPolicy
    session: Callable[[], requests.Session]
    #: How long one attempt holds the event (as long as the mover's lease).
    lock_s: float = 60.0
    #: Longest one attempt takes, all told (below ``lock_s``: see Settings).
    deadline_s: float = 10.0
    #: Attempts this process may run at once; None: no bound.
    slots: threading.Semaphore | None = None
    #: Sends a delivery again later when every slot is taken; None: the lease does.
    defer: Defer | None = None
    #: Each attempt is a span of the trace its event was emitted in.
    tracing: Tracing = field(default_factory=NoTracing)

    def deliver(self, event_id: str, attempt: int) -> str:
        """Make attempt ``attempt`` of the event, if still due; return a word for Flower."""
        if self.slots is not None and not self.slots.acquire(blocking=False):
            return self._defer(event_id, attempt)
        try:
            result = self._deliver(event_id, attempt)
        finally:
            if self.slots is not None:
                self.slots.release()
        metrics.webhook_delivery(result)
        return result

    def _defer(self, event_id: str, attempt: int) -> str:
        """Every slot is busy: send the delivery again shortly, not counted as an attempt.
        The event's lease is renewed first, so the mover does not send it a second time."""
        if not self.store.extend_lease(event_id, attempt, self.lock_s):
            return "stale"  # recorded meanwhile (or being made elsewhere): nothing to defer
        if self.defer is not None:
            self.defer(event_id, attempt, DEFER_S * (1 + random.random()))
        return "deferred"

    def _deliver(self, event_id: str, attempt: int) -> str:
        owner = uuid.uuid4().hex
        fields = self.store.begin(event_id, attempt, self.lock_s, owner)
        if not fields:
            return "stale"  # delivered, dead, already tried, or being tried elsewhere
        attributes = {
            "callpass.webhook.event_id": event_id,
            "callpass.webhook.type": fields.get("type", ""),
            "callpass.webhook.attempt": str(attempt + 1),
        }
        with self.tracing.span("callpass.webhook", fields, attributes) as note:
            result = self._attempt(_Attempt(self.store, event_id, attempt, owner, fields))
            note("callpass.webhook.result", result)
            return result

    def _attempt(self, attempt_: _Attempt) -> str:
        event_id, fields = attempt_.event_id, attempt_.fields
        url = fields["url"]
        with attempt_deadline(self.deadline_s) as deadline:
            try:
                self.policy.check_url(url)  # the policy may have changed since it was stored
                status, retry_after = self._post(event_id, url, fields, deadline)
            except Exception as exc:
                return self._failed(attempt_, url, exc, deadline)
        if 200 <= status < 300:
            return attempt_.delivered(status)
        if status == 410:  # the receiver asks for no more: keep it where an operator sees it
            return attempt_.dead(f"HTTP 410 Gone from {host_of(url)}")
        return self._retry(attempt_, f"HTTP {status} from {host_of(url)}", retry_after)

    def _post(
        self, event_id: str, url: str, fields: dict[str, str], deadline: AttemptDeadline
    ) -> tuple[int, float | None]:
        """One POST within the deadline: the status and the Retry-After it asks for."""
        body = fields.get("body", "").encode()
        timeout = deadline.bound(self.timeout_s)
        response = self.session().post(
            url,
            data=body,
            headers={
                **signature_headers(self.keys, event_id, body),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            },
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,  # the receiver's body is not read: only its status counts
        )
        response.close()
        if deadline.fired:  # cut off mid-answer: the status line or headers may be truncated
            raise requests.exceptions.ReadTimeout("the attempt's deadline passed")
        return response.status_code, retry_after_s(response.headers.get("Retry-After"))

    def _failed(
        self, attempt: _Attempt, url: str, exc: Exception, deadline: AttemptDeadline
    ) -> str:
        """What an exception from one attempt means: dead for good, or tried again."""
        if isinstance(exc, DestinationRefused):
            return _refused(attempt.dead(f"destination refused: {exc.rule}"))
        if isinstance(exc, PERMANENT_REQUEST_ERRORS):
            return attempt.dead(f"unusable URL ({type(exc).__name__})")
        refusal = refusal_of(exc)
        if refusal is not None:
            return _refused(attempt.dead(f"destination refused: {refusal.rule}"))
        if deadline.expired:  # whatever the cut-off socket raised
            error = f"no answer within the {self.deadline_s:g} s deadline from {host_of(url)}"
            return self._retry(attempt, error)
        if isinstance(exc, requests.RequestException):
            return self._retry(attempt, f"{type(exc).__name__} to {host_of(url)}")
        # E.g. a host IDNA cannot encode: no retry will do better.
        log.error("webhook %s: unexpected error", attempt.event_id, exc_info=exc)
        return attempt.dead(f"unexpected error ({type(exc).__name__})")

    def _retry(self, attempt: _Attempt, error: str, retry_after: float | None = None) -> str:
        following = attempt.number + 1
        if following >= len(self.schedule_s):
            return attempt.dead(error)
        # Retry-After is honoured up to a day (a receiver cannot park an event for a year).
        delay = max(self.schedule_s[following], min(retry_after or 0.0, MAX_RETRY_AFTER_S))
        return attempt.retry(delay, error)


def _refused(result: str) -> str:
    """A dead letter because the destination is not allowed: "refused" for Flower and metrics."""
    return "refused" if result == "dead" else result


@dataclass
class _Attempt:
    """One attempt's bookkeeping; logs only what the store accepted (a superseded attempt
    changes nothing)."""

    store: WebhookStore
    event_id: str
    number: int
    owner: str
    fields: dict[str, str]

    @property
    def label(self) -> str:
        f = self.fields
        return f"webhook {self.event_id} ({f.get('type')}, request {f.get('request_id')})"

    def delivered(self, status: int) -> str:
        if not self.store.delivered(self.event_id, self.number, self.owner, status):
            return "superseded"
        log.info("%s delivered (attempt %d)", self.label, self.number + 1)
        return "delivered"

    def retry(self, delay: float, error: str) -> str:
        if not self.store.retry_at(
            self.event_id, self.number, self.owner, time.time() + delay, error
        ):
            return "superseded"
        log.warning(
            "%s failed (attempt %d: %s); next attempt in %.0f s",
            self.label,
            self.number + 1,
            error,
            delay,
        )
        return "retry"

    def dead(self, error: str) -> str:
        if not self.store.dead(self.event_id, self.number, self.owner, error):
            return "superseded"
        log.error(
            "%s dead-lettered after %d attempt(s): %s (callpass webhooks dead / replay)",
            self.label,
            self.number + 1,
            error,
        )
        return "dead"
