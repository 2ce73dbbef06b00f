"""Admission: a ``start_call`` delivery parsed, refused (``invalid``, naming the field and
the rule, no call placed) or claimed, so that a redelivery or a repeated request resumes the
one record instead of dialing again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from callpass_producer.contracts.outcome import OUTCOME_VERSION_2, Outcome, OutcomeError
from worker.api.errors import InvalidRequestError
from worker.masking import mask_dn
from worker.ops import metrics
from worker.ops.logs import bind_log_context
from worker.pipeline.call_limits import CallLimits
from worker.pipeline.document import build_outcome
from worker.pipeline.outbox import Outbox
from worker.pipeline.ports import NoTracing, Tracing
from worker.pipeline.publisher import Publisher
from worker.pipeline.store import RequestRecord, RequestStore, dn_digest, now
from worker.validation import (
    StartRequest,
    outcome_version_of,
    parse_start_request,
    validate_request_id,
)
from worker.webhooks.destinations import DestinationRefused
from worker.webhooks.events import WebhookEvents

__all__ = ["Admission", "Admitted", "Delivery"]

log = logging.getLogger(__name__)

PREFIX_RULE = "must start with one of the allowed prefixes (CALLPASS_ALLOWED_PREFIXES)"


@dataclass(frozen=True)
class Admitted:
    """A claimed request: its record as the claim found or made it, and the number."""

    record: RequestRecord
    dn: str = field(repr=False)  # never shown in clear


@dataclass(frozen=True)
class Delivery:
    """The start_call message being handled: what a resend needs (the number kept out of
    reprs: it is never shown in clear)."""

    task_id: str
    dn: str = field(repr=False)
    kwargs: dict[str, Any] = field(repr=False)
    attempt: int = 0


@dataclass
class Admission:
    store: RequestStore
    publisher: Publisher
    default_timeout_s: int
    #: A fresh claim must show progress by the deadline, the start's longest run and this.
    place_deadline_s: float
    max_start_s: float
    progress_slack_s: float
    allowed_prefixes: tuple[str, ...] = ()
    #: How many first digits of a number its record keeps, for the metrics by prefix.
    prefix_digits: int = 4
    #: Keeps a request's ``limit_keys`` as keyed hashes; ``None``: they are not kept.
    call_limits: CallLimits | None = None
    #: Producers' notes of requests sent: cleared once a request is claimed or answered.
    outbox: Outbox | None = None
    #: ``None``: requests naming a ``webhook_url`` are refused.
    webhooks: WebhookEvents | None = None
    #: The start's trace context goes into the new record, for its polls' spans.
    tracing: Tracing = field(default_factory=NoTracing)

    def admit(
        self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], requested_at: float
    ) -> Admitted | None:
        """Claim the delivery's request; ``None`` once it is refused (and answered)."""
        try:
            request = parse_start_request(args, kwargs, self.default_timeout_s)
        except InvalidRequestError as exc:
            request_id = _valid_id(kwargs, "request_id") or task_id
            log.info("request %s invalid: %s", request_id, exc)
            error = OutcomeError(field=exc.field, rule=exc.rule)
            self._refuse(
                task_id,
                error,
                request_id=request_id,
                requested_at=requested_at,
                version=outcome_version_of(kwargs),
                verification_id=_valid_id(kwargs, "verification_id"),
            )
            return None
        request_id = request.request_id or task_id
        bind_log_context(request_id=request_id)
        refusal, webhook_url = self._check(request)
        if refusal is not None:
            log.info("request %s invalid: %s %s", request_id, refusal.field, refusal.rule)
            self._refuse(
                task_id,
                refusal,
                request_id=request_id,
                dn_masked=mask_dn(request.dn),
                requested_at=requested_at,
                version=request.outcome_version,
                verification_id=request.verification_id,
            )
            return None
        return self._claim(task_id, request_id, request, webhook_url, requested_at)

    def _check(self, request: StartRequest) -> tuple[OutcomeError | None, str]:
        """The worker's own rules past parsing: the refusal, or the webhook URL to use."""
        if self.allowed_prefixes and not request.dn.startswith(self.allowed_prefixes):
            metrics.limit_refused("prefix")
            return OutcomeError(field="dn", rule=PREFIX_RULE), ""
        try:
            return None, self._webhook_url(request.webhook_url)
        except DestinationRefused as exc:
            return OutcomeError(field="webhook_url", rule=exc.rule), ""

    def _webhook_url(self, requested: str | None) -> str:
        if self.webhooks is None:
            if requested:
                raise DestinationRefused("webhooks are not configured on this worker")
            return ""
        return self.webhooks.url_for(requested)

    def _claim(
        self,
        task_id: str,
        request_id: str,
        request: StartRequest,
        webhook_url: str,
        requested_at: float,
    ) -> Admitted | None:
        initial = {
            "task_id": task_id,
            "dn_masked": mask_dn(request.dn),
            "timeout": str(request.timeout),
            "requested_at": repr(requested_at),
            "poll_token": "",
            "status_requests": "0",
            "webhook_url": webhook_url,
            "dn_prefix": request.dn[: self.prefix_digits],
            **_version_2_fields(request),
            **self.tracing.carrier(),
        }
        if self.call_limits is not None and request.limit_keys:
            initial["limit_keys"] = self.call_limits.digests(request.limit_keys)
        # A new record must be placed (or settled) by the deadline and the start's longest run.
        progress_by = now() + self.place_deadline_s + self.max_start_s + self.progress_slack_s
        call_of = _call_of(request)
        claim, record = self.store.claim(
            request_id, task_id, dn_digest(request.dn), initial, progress_by, call_of
        )
        if claim < 0:
            error = OutcomeError(field="request_id", rule=_TAKEN_RULES[claim])
            self._refuse(
                task_id,
                error,
                request_id=request_id,
                version=request.outcome_version,
                verification_id=request.verification_id,
            )
            return None
        if self.outbox is not None:
            self.outbox.claimed(task_id)
        if claim == 0:
            log.info("request %s seen again (state %s): resuming", request_id, record.state)
        return Admitted(record, request.dn)

    def _refuse(self, task_id: str, error: OutcomeError, **fields: Any) -> None:
        """Answer a request that places no call: ``invalid``, naming the field and the rule."""
        doc = build_outcome(Outcome.INVALID, completed_at=now(), error=error, **fields)
        self.publisher.answer(task_id, doc)
        if self.outbox is not None:  # answered: the note must not send it again
            self.outbox.claimed(task_id)
        metrics.request_settled(Outcome.INVALID)


#: Why a request id claimed already is refused, by the claim's answer.
_TAKEN_RULES = {
    -1: "is already used for another number",
    -2: "is already used by another call: each call of a verification needs a request_id "
    "of its own",
}


def _call_of(request: StartRequest) -> str:
    """The call's place in its verification, which a redelivery repeats exactly: a first
    call or a resend, of which verification ('' for a request of version 1)."""
    if request.outcome_version != OUTCOME_VERSION_2:
        return ""
    return f"{'resend' if request.resend else 'first'}:{request.verification_id or ''}"


def _version_2_fields(request: StartRequest) -> dict[str, str]:
    """What a version-2 request's record keeps of its version-2 arguments (none for v1)."""
    if request.outcome_version != OUTCOME_VERSION_2:
        return {}
    return {
        "outcome_version": str(OUTCOME_VERSION_2),
        "verification_id": request.verification_id or "",
        "resend": "1" if request.resend else "",
        "fallback_task": request.fallback_task or "",
        "fallback_queue": request.fallback_queue or "",
    }


def _valid_id(kwargs: object, name: str) -> str | None:
    """``kwargs[name]`` if it is a valid id (a request id's rule), else ``None``."""
    value = kwargs.get(name) if isinstance(kwargs, dict) else None
    try:
        return validate_request_id(value)
    except InvalidRequestError:
        return None
