"""Settling a request: its outcome written once, from one read of its record, then published.

Whoever settles later (a duplicate delivery, the sweeper) reads the first outcome back and
publishes that one: a request has exactly one outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from callpass_producer.contracts.outcome import Outcome, OutcomeDocument, OutcomeError
from worker.ops import metrics
from worker.pipeline.document import build_outcome
from worker.pipeline.publisher import Publisher
from worker.pipeline.store import RequestRecord, RequestStore, now

__all__ = ["Settler"]

log = logging.getLogger(__name__)


@dataclass
class Settler:
    store: RequestStore
    publisher: Publisher
    #: How long the sweeper waits before it finishes a settle that has a webhook event.
    progress_slack_s: float
    #: Whether webhook events are stored at all (``False``: no request has one).
    webhooks_configured: bool

    def settle(
        self,
        record: RequestRecord,
        outcome: Outcome,
        *,
        raw_result: str | None = None,
        api_message: str | None = None,
        error: OutcomeError | None = None,
        call_placed: bool | None = False,
        retry_at: float | None = None,
        read_just_now: bool = False,
    ) -> None:
        """Settle ``record``'s request with ``outcome`` (or publish the one that stands).

        ``read_just_now``: ``record`` was read a moment ago (a poll's): it serves as the
        settle's read, since the fields an outcome takes do not change once a call is placed.
        """
        request_id = record.request_id
        fresh = record if read_just_now else self.store.load(request_id) or record  # one read
        doc = _document(
            fresh,
            outcome,
            raw_result=raw_result,
            api_message=api_message,
            error=error,
            call_placed=call_placed,
            retry_at=retry_at,
        )
        # With a webhook or a fallback task, settling and sending it are two steps: the
        # sweeper finishes the second if this process dies between them.
        has_webhook = self.webhooks_configured and bool(fresh.get("webhook_url"))
        has_followup = has_webhook or bool(fresh.get("fallback_task"))
        recheck_at = now() + self.progress_slack_s if has_followup else None
        standing, task_ids = self.store.settle(request_id, doc, recheck_at)
        if standing.completed_at == doc.completed_at:  # ours stands: count it once
            metrics.request_settled(
                standing.outcome, standing.status_requests if doc.callid else None
            )
        log.info(
            "request %s settled: %s (%s status requests)",
            request_id,
            standing.outcome,
            standing.status_requests,
        )
        # The pin goes back in there. A fallback another process holds: the sweeper looks
        # again at recheck_at.
        if self.publisher.outcome(fresh, standing, task_ids) and has_followup:
            self.store.forget(request_id)


def _document(record: RequestRecord, outcome: Outcome, **details: Any) -> OutcomeDocument:
    """The outcome document of ``record``'s request, settled now."""
    return build_outcome(
        outcome,
        completed_at=now(),
        request_id=record.request_id,
        dn_masked=record.get("dn_masked") or None,
        callid=record.get("callid") or None,
        timeout=record.integer("timeout", 0) or None,
        requested_at=record.number("requested_at"),
        placed_at=record.number("placed_at"),
        status_requests=record.integer("status_requests", 0),
        version=record.integer("outcome_version", 1),
        verification_id=record.get("verification_id") or None,
        **details,
    )
