"""The life of one verification request: claim, dial once, poll, settle exactly once.

Tasks in ``tasks/`` are thin wrappers around :class:`Pipeline`; everything that decides
what happens to a request lives here, with Celery reached only through two small protocols
(:class:`Dispatcher` sends messages, :class:`ResultSink` writes what producers read).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis

from worker import metrics
from worker.client import CallPassClient
from worker.errors import (
    ApiRejectedError,
    AuthError,
    InvalidRequestError,
    OutcomeUnknownError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from worker.logs import bind_log_context
from worker.masking import mask_dn
from worker.pipeline.document import OutcomeError, build_outcome, iso
from worker.pipeline.outbox import Outbox
from worker.pipeline.outcomes import Outcome
from worker.pipeline.pins import PinVault
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.store import RequestRecord, RequestStore, dn_digest, now
from worker.settings import START_RETRY_DELAYS_S
from worker.validation import parse_start_request, validate_request_id
from worker.webhook_guard import DestinationRefused
from worker.webhooks import COMPLETED_EVENT, PLACED_EVENT, WebhookEvents

__all__ = ["Dispatcher", "Pipeline", "ResultSink"]

log = logging.getLogger(__name__)

#: Seconds between status requests once the schedule is over and the API is unreachable.
OUTAGE_POLL_INTERVAL_S = 5.0


class Dispatcher(Protocol):
    def send_poll(
        self,
        request_id: str,
        token: str,
        countdown_s: float,
        extra_headers: dict[str, Any] | None = None,
    ) -> None: ...

    def resend_start(
        self,
        task_id: str,
        kwargs: dict[str, Any],
        requested_at: float,
        attempt: int,
        countdown_s: float,
        extra_headers: dict[str, Any] | None = None,
    ) -> None: ...


class ResultSink(Protocol):
    def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None: ...

    def publish_outcome(self, task_id: str, doc: dict[str, Any]) -> None: ...

    def read_placed(self, task_id: str) -> dict[str, Any] | None:
        """The ``PLACED`` info (or the outcome's callid/pin) stored for ``task_id``, if any.

        The pin lives only there, in what the producer reads: request records never hold it.
        """


@dataclass
class Pipeline:
    client: Callable[[], CallPassClient]
    store: RequestStore
    sink: ResultSink
    dispatcher: Dispatcher
    schedule: PollSchedule
    default_timeout_s: int
    place_deadline_s: float
    #: Longest a start request can take with its inline retries; a record stuck in
    #: ``dialing`` for longer belongs to a worker that died mid-request.
    max_start_s: float
    #: Counts calls per number; ``admit`` returns seconds to wait (0: go ahead).
    admit_destination: Callable[[str, str], float] = lambda digest, request_id: 0.0
    allowed_prefixes: tuple[str, ...] = ()
    #: How long past the schedule's end polls go on while the API cannot be reached.
    poll_outage_s: float = 300.0
    #: How long past its expected next step a request waits before the sweeper re-drives it:
    #: longer than the broker's visibility time-out, so redelivery comes first.
    progress_slack_s: float = 315.0
    #: Producers' notes of requests sent (see worker.pipeline.outbox); ``None``: not used.
    outbox: Outbox | None = None
    #: Where pins are kept for ``verify_code`` (as digests); ``None``: not kept.
    pins: PinVault | None = None
    #: False: the pin is never written to results (producers check codes with verify_code).
    pins_leave_worker: bool = True
    #: Signed webhook events; ``None``: requests naming a ``webhook_url`` are refused.
    webhooks: WebhookEvents | None = None

    @staticmethod
    def now() -> float:
        return now()

    # -- start ---------------------------------------------------------------------------

    def start(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        requested_at: float | None = None,
        attempt: int = 0,
    ) -> str:
        """Handle one delivery of ``callpass.start_call``; return a summary for Flower."""
        received = now()
        try:
            request = parse_start_request(args, kwargs, self.default_timeout_s)
        except InvalidRequestError as exc:
            raw_id = kwargs.get("request_id") if isinstance(kwargs, dict) else None
            request_id = raw_id if _valid_request_id(raw_id) else task_id
            log.info("request %s invalid: %s", request_id, exc)
            return self._settle_invalid(
                task_id,
                {"field": exc.field, "rule": exc.rule},
                request_id=request_id,
                api_message=None,
                requested_at=requested_at or received,
            )

        request_id = request.request_id or task_id
        bind_log_context(request_id=request_id)
        refusal: OutcomeError | None = None
        webhook_url = ""
        if self.allowed_prefixes and not request.dn.startswith(self.allowed_prefixes):
            metrics.limit_refused("prefix")
            refusal = {
                "field": "dn",
                "rule": "must start with one of the allowed prefixes (CALLPASS_ALLOWED_PREFIXES)",
            }
        else:
            try:
                webhook_url = self._webhook_url(request.webhook_url)
            except DestinationRefused as exc:
                refusal = {"field": "webhook_url", "rule": exc.rule}
        if refusal is not None:
            log.info("request %s invalid: %s %s", request_id, refusal["field"], refusal["rule"])
            return self._settle_invalid(
                task_id,
                refusal,
                request_id=request_id,
                dn_masked=mask_dn(request.dn),
                requested_at=requested_at or received,
            )
        digest = dn_digest(request.dn)
        claim, record = self.store.claim(
            request_id,
            task_id,
            digest,
            {
                "task_id": task_id,
                "dn_masked": mask_dn(request.dn),
                "timeout": str(request.timeout),
                "requested_at": repr(requested_at or received),
                "poll_token": "",
                "status_requests": "0",
                "webhook_url": webhook_url,
            },
        )
        if claim < 0:
            return self._settle_invalid(
                task_id,
                {"field": "request_id", "rule": "is already used for another number"},
                request_id=request_id,
            )
        if self.outbox is not None:
            self.outbox.claimed(task_id)
        if claim == 1:
            self.store.expect_progress(
                request_id, now() + self.place_deadline_s + self.max_start_s + self.progress_slack_s
            )
        if claim == 0:
            log.info("request %s seen again (state %s): resuming", request_id, record.state)
        return self._advance(record, task_id, request.dn, kwargs, attempt)

    def _settle_invalid(self, task_id: str, error: OutcomeError, **fields: Any) -> str:
        """Answer a request that places no call: ``invalid``, naming the field and the rule."""
        doc = build_outcome(Outcome.INVALID, completed_at=now(), error=error, **fields)
        self.sink.publish_outcome(task_id, doc)
        if self.outbox is not None:  # answered: the note must not send it again
            self.outbox.claimed(task_id)
        metrics.request_settled(Outcome.INVALID)
        return "invalid"

    def _webhook_url(self, requested: str | None) -> str:
        if self.webhooks is None:
            if requested:
                raise DestinationRefused("webhooks are not configured on this worker")
            return ""
        return self.webhooks.url_for(requested)

    def _advance(
        self, record: RequestRecord, task_id: str, dn: str, kwargs: dict[str, Any], attempt: int
    ) -> str:
        request_id = record.request_id
        if record.outcome is not None:
            self._publish_outcome(request_id, record.outcome)
            return "settled"
        if record.state == "placed":
            self._publish_placed(record)
            if not record.get("poll_token"):
                self._start_poll_chain(record, record.seconds_since_placed())
            return "placed"
        if record.state == "dialing":
            dialing_for = now() - (record.number("dialing_at") or 0)
            if dialing_for < self.max_start_s:
                # Another delivery is dialing and will publish; look again once it must be
                # done, in case it died (acking this message must not drop the request).
                requested_at = record.number("requested_at") or now()
                delay = self.max_start_s - dialing_for + 1.0
                self.dispatcher.resend_start(task_id, kwargs, requested_at, attempt, delay)
                return "dialing elsewhere"
            # The dialer died: recover its call from the PLACED info, or settle unknown.
            self._sweep_dialing(record)
            fresh = self.store.load(request_id) or record
            if fresh.state == "placed":
                self._publish_placed(fresh)
            return fresh.state
        requested_at = record.number("requested_at") or now()
        if now() > requested_at + self.place_deadline_s:
            self._settle(record, Outcome.EXPIRED, api_message="placement deadline passed")
            return "expired"
        wait_s = self.admit_destination(record.get("dn_digest"), request_id)
        if wait_s > 0:
            metrics.limit_refused("destination")
            self._settle(
                record,
                Outcome.RATE_LIMITED,
                api_message="too many calls to this number (CALLPASS_DN_LIMITS)",
                retry_at=now() + wait_s,
            )
            return "rate_limited"
        if not self.store.compare_and_set(
            request_id, "state", "claimed", "dialing", dialing_at=repr(now())
        ):
            # Lost the race to another delivery: handle what it left, like a redelivery.
            raced = self.store.load(request_id)
            if raced is None or raced.state == "claimed":
                raise RuntimeError(f"request {request_id}: claim changed under us")
            return self._advance(raced, task_id, dn, kwargs, attempt)
        return self._dial(record, task_id, dn, kwargs, attempt, requested_at)

    def _dial(
        self,
        record: RequestRecord,
        task_id: str,
        dn: str,
        kwargs: dict[str, Any],
        attempt: int,
        requested_at: float,
    ) -> str:
        request_id = record.request_id
        timeout = record.integer("timeout", self.default_timeout_s)
        try:
            started = self.client().start_call_async(
                dn, timeout, request_id=request_id, send_by=requested_at + self.place_deadline_s
            )
        except OutcomeUnknownError as exc:
            self._settle(record, Outcome.UNKNOWN, api_message=exc.message, call_placed=None)
            return "unknown"
        except AuthError as exc:
            self._settle(record, Outcome.AUTH_FAILED, api_message=exc.message)
            return "auth_failed"
        except (ApiRejectedError, PermanentError) as exc:
            self._settle(record, Outcome.API_ERROR, api_message=exc.message)
            return "api_error"
        except InvalidRequestError as exc:
            self._settle(record, Outcome.INVALID, error={"field": exc.field, "rule": exc.rule})
            return "invalid"
        except TransientError as exc:
            # Never reached the API (the client resends nothing else): safe to try again.
            self.store.compare_and_set(request_id, "state", "dialing", "claimed")
            delay = START_RETRY_DELAYS_S[min(attempt, len(START_RETRY_DELAYS_S) - 1)]
            if now() + delay > requested_at + self.place_deadline_s:
                self._settle(
                    record, Outcome.EXPIRED, api_message=f"API unreachable until deadline: {exc}"
                )
                return "expired"
            log.warning(
                "start for request %s not sent (%s); again in %.1fs", request_id, exc, delay
            )
            self.store.expect_progress(request_id, now() + delay + self.progress_slack_s)
            self.dispatcher.resend_start(task_id, kwargs, requested_at, attempt + 1, delay)
            return "start deferred"
        placed_at = now()
        pins = self.pins
        if pins is not None:  # the digest first: a producer may check a code the moment it sees it
            self._retry_infra(lambda: pins.store(request_id, started.pin))
        meta = {
            "request_id": request_id,
            "callid": started.callid,
            "pin": started.pin if self.pins_leave_worker else None,
            "placed_at": iso(placed_at),
            "timeout": timeout,
        }
        # callid and pin exist only in this process until stored: insist a while. The pin goes
        # to the producer's result first; the record then says "placed" without it.
        self._retry_infra(lambda: self._publish_meta(request_id, meta))
        # One token for every try: a try whose reply was lost after it landed is not taken
        # for "settled meanwhile" by the next one.
        writer = uuid.uuid4().hex
        stored = self._retry_infra(lambda: self._mark_placed(record, meta, writer))
        if not stored:
            # Settled meanwhile (a duplicate judged this start lost): the outcome stands, and
            # goes out again over the PLACED info just published on top of it.
            log.warning(
                "call %s for request %s was placed after the request settled",
                started.callid,
                request_id,
            )
            self._check_settled_after_placed(request_id)
            return "placed late"
        placed = self.store.load(request_id) or record
        self._emit(placed, PLACED_EVENT, meta)
        self._check_settled_after_placed(request_id)
        log.info(
            "call %s placed to %s for request %s",
            started.callid,
            record.get("dn_masked"),
            request_id,
        )
        self._start_poll_chain(placed, elapsed_s=0.0)
        return "placed"

    def _mark_placed(self, record: RequestRecord, meta: dict[str, Any], writer: str = "") -> bool:
        bind_log_context(callid=str(meta["callid"]))
        placed_at = meta.get("placed_at")
        return self.store.compare_and_set(
            record.request_id,
            "state",
            "dialing",
            "placed",
            writer_token=writer,
            callid=str(meta["callid"]),
            placed_at=repr(_epoch(placed_at) if isinstance(placed_at, str) else now()),
        )

    @staticmethod
    def _retry_infra(write: Callable[[], bool]) -> bool:
        """Run a Redis write, retrying connection trouble for up to ~15 s."""
        delay = 0.25
        for _ in range(6):
            try:
                return write()
            except redis.RedisError as exc:
                log.warning("Redis write failed (%s); again in %.2fs", type(exc).__name__, delay)
                time.sleep(delay)
                delay *= 2
        return write()

    # -- poll ----------------------------------------------------------------------------

    def poll(self, request_id: str, token: str) -> str:
        """Handle one ``callpass.poll_status`` message of the chain named by ``token``."""
        bind_log_context(request_id=request_id)
        record = self.store.begin_poll(request_id, token)  # counts the request below, if made
        if record is None:
            log.warning("request %s has no record (expired?): poll dropped", request_id)
            return "no record"
        if record.outcome is not None:
            self._publish_outcome(request_id, record.outcome)
            return "settled"
        if record.get("poll_token") != token:
            return "stale poll"
        callid = record.get("callid")
        bind_log_context(callid=callid)
        timeout = record.integer("timeout", self.default_timeout_s)
        elapsed = record.seconds_since_placed()
        retry_after = 0.0
        try:
            status = self.client().get_status(callid)
        except TransientError as exc:
            log.info("status of call %s not read (%s)", callid, type(exc).__name__)
            status = None
            problem = str(exc)
            if isinstance(exc, RateLimitedError) and exc.retry_after:
                retry_after = exc.retry_after
        except (PermanentError, InvalidRequestError) as exc:
            # "can't find callid" or a refused token: asking again will not help.
            self._settle(record, Outcome.UNKNOWN, api_message=str(exc))
            return "unknown"
        else:
            problem = "no final status within timeout + grace"
        if status is not None and status.outcome is not None:
            self._settle(record, status.outcome, raw_result=status.raw_result)
            return status.outcome.value
        delay = self.schedule.next_delay(elapsed, timeout)
        outage_end = self.schedule.deadline(timeout) + self.poll_outage_s
        if delay is None and status is None and elapsed < outage_end:
            # The schedule is over but the API could not be asked: keep asking (it keeps
            # callids) until the outage allowance is spent, so the true outcome is learnt.
            delay = OUTAGE_POLL_INTERVAL_S
        if delay is None:
            self._settle(record, Outcome.UNKNOWN, api_message=problem)
            return "unknown"
        self._next_poll(record, token, max(delay, retry_after))
        return "polling"

    def _start_poll_chain(self, record: RequestRecord, elapsed_s: float) -> None:
        delay = self.schedule.next_delay(
            elapsed_s, record.integer("timeout", self.default_timeout_s)
        )
        self._next_poll(record, "", 0.0 if delay is None else delay)

    def _next_poll(self, record: RequestRecord, token: str, delay_s: float) -> None:
        # Send first, then advance the token: a crash in between leaves the old token valid,
        # so the redelivered message carries the chain on (at worst one extra status request).
        new_token = uuid.uuid4().hex[:16]
        self.dispatcher.send_poll(record.request_id, new_token, delay_s)
        progress_by = now() + delay_s + self.progress_slack_s
        self.store.advance_poll(record.request_id, token, new_token, progress_by)

    # -- sweep ---------------------------------------------------------------------------

    def sweep(self, limit: int = 200) -> int:
        """Re-drive requests whose next step is long overdue; return how many were touched.

        A message can vanish where no redelivery brings it back (a worker killed between
        kombu taking it from Redis and recording it as unacked; a Redis that lost writes).
        Every unsettled request has a time by which it must show progress; past it, this
        sends the step again. Steps are idempotent (poll tokens, request records).
        """
        touched = 0
        if self.outbox is not None:
            for task_id, kwargs, requested_at in self.outbox.overdue(limit):
                touched += 1
                log.warning("request of task %s never reached a worker; sending it again", task_id)
                self.dispatcher.resend_start(task_id, kwargs, requested_at, 0, 0.0)
        for request_id in self.store.overdue(now(), limit):
            touched += 1
            record = self.store.load(request_id)
            if record is None:
                self.store.forget(request_id)
            elif record.outcome is not None:
                self._publish_outcome(request_id, record.outcome)
                self.store.forget(request_id)
            elif record.state == "placed":
                log.warning("request %s: no poll for too long; polling again", request_id)
                self._publish_placed(record)  # and its call.placed event, if it was lost
                token = record.get("poll_token")
                if token:
                    self.store.expect_progress(request_id, now() + self.progress_slack_s)
                    self.dispatcher.send_poll(request_id, token, 0.0)
                else:
                    self._start_poll_chain(record, record.seconds_since_placed())
            elif record.state == "dialing":
                self._sweep_dialing(record)
            else:  # claimed: a deferred start went missing; only its own message has the number
                requested_at = record.number("requested_at") or now()
                if now() > requested_at + self.place_deadline_s:
                    self._settle(record, Outcome.EXPIRED, api_message="placement deadline passed")
                else:
                    self.store.expect_progress(
                        request_id, requested_at + self.place_deadline_s + 1.0
                    )
        return touched

    def _sweep_dialing(self, record: RequestRecord) -> None:
        dialing_for = now() - (record.number("dialing_at") or 0)
        if dialing_for < self.max_start_s:
            self.store.expect_progress(record.request_id, now() + self.progress_slack_s)
            return
        recovered = self.sink.read_placed(record.get("task_id"))
        if recovered and recovered.get("callid") and self._mark_placed(record, recovered):
            placed = self.store.load(record.request_id) or record
            self._start_poll_chain(placed, placed.seconds_since_placed())
            return
        self._settle(
            record,
            Outcome.UNKNOWN,
            api_message="the worker stopped while the start request was in flight",
            call_placed=None,
        )

    # -- results -------------------------------------------------------------------------

    def _settle(
        self,
        record: RequestRecord,
        outcome: Outcome,
        *,
        raw_result: str | None = None,
        api_message: str | None = None,
        error: Any = None,
        call_placed: bool | None = False,
        retry_at: float | None = None,
    ) -> None:
        request_id = record.request_id
        fresh = self.store.load(request_id) or record
        placed = self.sink.read_placed(fresh.get("task_id")) if fresh.get("callid") else None
        doc = build_outcome(
            outcome,
            completed_at=now(),
            request_id=request_id,
            dn_masked=fresh.get("dn_masked") or None,
            callid=fresh.get("callid") or None,
            pin=(placed or {}).get("pin"),
            raw_result=raw_result,
            api_message=api_message,
            error=error,
            timeout=fresh.integer("timeout", 0) or None,
            requested_at=fresh.number("requested_at"),
            placed_at=fresh.number("placed_at"),
            status_requests=fresh.integer("status_requests", 0),
            call_placed=call_placed,
            retry_at=retry_at,
        )
        # With a webhook, settling and storing the event are two steps: the sweeper finishes
        # the second if this process dies between them.
        has_webhook = self.webhooks is not None and bool(fresh.get("webhook_url"))
        recheck_at = now() + self.progress_slack_s if has_webhook else None
        standing = self.store.settle(request_id, doc, recheck_at)
        if standing.get("completed_at") == doc["completed_at"]:  # ours stands: count it once
            metrics.request_settled(
                standing["outcome"], standing["status_requests"] if doc["callid"] else None
            )
        if standing.get("callid") == doc["callid"]:
            standing = {**standing, "pin": doc["pin"]}
        log.info(
            "request %s settled: %s (%s status requests)",
            request_id,
            standing["outcome"],
            standing["status_requests"],
        )
        self._publish_outcome(request_id, standing)
        if has_webhook:
            self.store.forget(request_id)

    def _publish_outcome(self, request_id: str, doc: dict[str, Any]) -> None:
        if doc.get("callid") and not doc.get("pin"):
            # Records keep no pin: take it from what the producer already read (PLACED).
            record = self.store.load(request_id)
            placed = self.sink.read_placed(record.get("task_id")) if record else None
            if placed and placed.get("callid") == doc["callid"]:
                doc = {**doc, "pin": placed.get("pin")}
        for task_id in self.store.task_ids(request_id):
            self.sink.publish_outcome(task_id, doc)
        if self.webhooks is not None and self.webhooks.enabled:
            record = self.store.load(request_id)
            if record is not None:
                self._emit(record, COMPLETED_EVENT, doc)

    def _emit(self, record: RequestRecord, event_type: str, data: dict[str, Any]) -> None:
        """Store the request's event for its webhook, once (the id is derived from both)."""
        url = record.get("webhook_url")
        if self.webhooks is None or not self.webhooks.enabled or not url:
            return
        webhooks = self.webhooks
        self._retry_infra(
            lambda: bool(
                webhooks.emit(event_type, url, record.request_id, record.get("task_id"), data)
            )
        )

    def _publish_placed(self, record: RequestRecord) -> None:
        """Give every subscribed task the PLACED info the dialer stored (a resume)."""
        meta = self.sink.read_placed(record.get("task_id"))
        if meta is None or not meta.get("callid"):
            return  # nothing to add: the dialer's own publication is all there is
        self._publish_meta(record.request_id, meta)
        self._emit(record, PLACED_EVENT, meta)  # in case the dialer died before it could
        self._check_settled_after_placed(record.request_id)

    def _publish_meta(self, request_id: str, meta: dict[str, Any]) -> bool:
        for task_id in self.store.task_ids(request_id):
            self.sink.publish_placed(task_id, meta)
        return True

    def _check_settled_after_placed(self, request_id: str) -> None:
        # A settle may have raced past us: make sure the final outcome is what stays.
        latest = self.store.load(request_id)
        if latest is not None and latest.outcome is not None:
            self._publish_outcome(request_id, latest.outcome)


def _valid_request_id(value: object) -> bool:
    try:
        validate_request_id(value)
    except InvalidRequestError:
        return False
    return True


def _epoch(iso_text: str) -> float:
    """An ISO-8601 time as epoch seconds; now for text that is not one (never raises)."""
    try:
        return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return now()
