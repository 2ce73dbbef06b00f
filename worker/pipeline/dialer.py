"""Dialing: ``claimed → dialing → placed``, at most one start request per request.

Only the delivery that moves the record ``claimed → dialing`` (compare-and-set) sends a start
request. A delivery that finds the request further on resumes it instead: it publishes what
stands, or waits for the delivery that is dialing. A record left in ``dialing`` by a worker
that died mid-request is recovered from the PLACED info that worker published, or settles
``unknown``; it is never dialed again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from callpass_producer.contracts.outcome import Outcome, OutcomeError
from callpass_producer.contracts.placed import PlacedInfo
from worker.api.client import StartedCall
from worker.api.errors import (
    ApiRejectedError,
    AuthError,
    InvalidRequestError,
    OutcomeUnknownError,
    PermanentError,
    TransientError,
)
from worker.ops import metrics
from worker.ops.logs import bind_log_context
from worker.pipeline.admission import Delivery
from worker.pipeline.dial_checks import DialChecks
from worker.pipeline.insist import insist
from worker.pipeline.pins import PinVault, VerificationCall
from worker.pipeline.poller import Poller
from worker.pipeline.ports import ClientFactory, Dispatcher
from worker.pipeline.publisher import Publisher
from worker.pipeline.quiet_calls import quiet_callid, settle_quiet_call
from worker.pipeline.schedule import START_RETRY_DELAYS_S
from worker.pipeline.settlement import Settler
from worker.pipeline.states import RequestState
from worker.pipeline.store import RequestRecord, RequestStore, now
from worker.sane_values import epoch_of, iso

__all__ = ["Dialer"]

log = logging.getLogger(__name__)


@dataclass
class Dialer:
    client: ClientFactory
    store: RequestStore
    dispatcher: Dispatcher
    publisher: Publisher
    settler: Settler
    poller: Poller
    default_timeout_s: int
    place_deadline_s: float
    #: Longest a start request can take with its inline retries; a record stuck in
    #: ``dialing`` for longer belongs to a worker that died mid-request.
    max_start_s: float
    progress_slack_s: float
    #: What a claimed request must pass before it dials (verification, limits).
    checks: DialChecks
    pins: PinVault | None
    pins_leave_worker: bool
    #: Test numbers and their fixed pins: they settle as a call would, and never ring.
    test_pins: Mapping[str, str] = field(default_factory=dict, repr=False)

    def advance(self, record: RequestRecord, delivery: Delivery) -> str:
        """Take the request on from where its record is; return a summary for Flower."""
        resumed = self._resume(record, delivery)
        if resumed is not None:
            return resumed
        request_id = record.request_id
        requested_at = record.number("requested_at") or now()
        if now() > requested_at + self.place_deadline_s:
            self.settler.settle(record, Outcome.EXPIRED, api_message="placement deadline passed")
            return "expired"
        refused = self.checks.refusal(record, delivery.dn)
        if refused is not None:
            return refused
        if not self.store.compare_and_set(
            request_id, "state", RequestState.CLAIMED, RequestState.DIALING, dialing_at=repr(now())
        ):
            # Lost the race to another delivery: handle what it left, like a redelivery.
            raced = self.store.load(request_id)
            if raced is None or raced.state == RequestState.CLAIMED:
                raise RuntimeError(f"request {request_id}: claim changed under us")
            return self.advance(raced, delivery)
        return self._dial(record, delivery, requested_at)

    def _resume(self, record: RequestRecord, delivery: Delivery) -> str | None:
        """A request past ``claimed``: publish what stands; ``None`` for a claimed one."""
        standing = record.outcome
        if standing is not None:
            self.publisher.outcome(record, standing)
            return "settled"
        if record.state == RequestState.PLACED:
            self.publisher.republish_placed(record)
            if not record.get("poll_token"):
                self.poller.start_chain(record, record.seconds_since_placed())
            return "placed"
        if record.state == RequestState.DIALING:
            return self._dialing_elsewhere(record, delivery)
        return None

    def _dialing_elsewhere(self, record: RequestRecord, delivery: Delivery) -> str:
        dialing_for = record.seconds_dialing()
        if dialing_for < self.max_start_s:
            # Another delivery is dialing and will publish; look again once it must be
            # done, in case it died (acking this message must not drop the request).
            requested_at = record.number("requested_at") or now()
            delay = self.max_start_s - dialing_for + 1.0
            self.dispatcher.resend_start(
                delivery.task_id, delivery.kwargs, requested_at, delivery.attempt, delay
            )
            return "dialing elsewhere"
        # The dialer died: recover its call from the PLACED info, or settle unknown.
        self.recover(record)
        fresh = self.store.load(record.request_id) or record
        if fresh.state == RequestState.PLACED:
            self.publisher.republish_placed(fresh)
        return fresh.state

    def recover(self, record: RequestRecord) -> None:
        """A record in ``dialing``: give its dialer time, or take over from a dead one."""
        dialing_for = record.seconds_dialing()
        if dialing_for < self.max_start_s:
            self.store.expect_progress(record.request_id, now() + self.progress_slack_s)
            return
        recovered = self.publisher.stored_placed(record)
        callid = recovered.get("callid") if recovered else None
        if recovered and callid:
            if self._mark_placed(record, str(callid), recovered.get("placed_at")):
                placed = self.store.load(record.request_id) or record
                self.poller.start_chain(placed, placed.seconds_since_placed())
                return
            moved_on = self.store.load(record.request_id)
            if moved_on is None or moved_on.state != RequestState.DIALING:
                # Another recoverer (a redelivery, the sweeper) took it over first: its call
                # is placed and polled, and an unknown over it would be wrong.
                return
        self.settler.settle(
            record,
            Outcome.UNKNOWN,
            api_message="the worker stopped while the start request was in flight",
            call_placed=None,
        )

    def _dial(self, record: RequestRecord, delivery: Delivery, requested_at: float) -> str:
        timeout = record.integer("timeout", self.default_timeout_s)
        test_pin = self.test_pins.get(delivery.dn)
        if test_pin is not None:
            return self._test_call(record, StartedCall(quiet_callid(), test_pin, None))
        started = self._send_start(record, delivery, timeout, requested_at)
        if isinstance(started, str):
            return started
        return self._placed(record, started, timeout)

    def _test_call(self, record: RequestRecord, started: StartedCall) -> str:
        """A test number: placed and settled as a call that rang would be, with its fixed
        pin, and nothing sent to the API."""
        summary = self._placed(record, started, record.integer("timeout", 0), poll=False)
        if summary != "placed":
            return summary
        metrics.test_number_called()
        settle_quiet_call(self.settler, self.store.load(record.request_id) or record)
        return "test number"

    def _send_start(
        self, record: RequestRecord, delivery: Delivery, timeout: int, requested_at: float
    ) -> StartedCall | str:
        """The start request's answer, or a summary once the request is settled/deferred."""
        try:
            return self.client().start_call_async(
                delivery.dn,
                timeout,
                request_id=record.request_id,
                send_by=requested_at + self.place_deadline_s,
            )
        except OutcomeUnknownError as exc:
            self.settler.settle(record, Outcome.UNKNOWN, api_message=exc.message, call_placed=None)
            return "unknown"
        except AuthError as exc:
            self.settler.settle(record, Outcome.AUTH_FAILED, api_message=exc.message)
            return "auth_failed"
        except (ApiRejectedError, PermanentError) as exc:
            self.settler.settle(record, Outcome.API_ERROR, api_message=exc.message)
            return "api_error"
        except InvalidRequestError as exc:
            error = OutcomeError(field=exc.field, rule=exc.rule)
            self.settler.settle(record, Outcome.INVALID, error=error)
            return "invalid"
        except TransientError as exc:
            return self._defer(record, delivery, requested_at, exc)

    def _defer(
        self, record: RequestRecord, delivery: Delivery, requested_at: float, exc: TransientError
    ) -> str:
        """The start never reached the API (the client resends nothing else): try again."""
        request_id = record.request_id
        self.store.compare_and_set(request_id, "state", RequestState.DIALING, RequestState.CLAIMED)
        delay = START_RETRY_DELAYS_S[min(delivery.attempt, len(START_RETRY_DELAYS_S) - 1)]
        if now() + delay > requested_at + self.place_deadline_s:
            self.settler.settle(
                record, Outcome.EXPIRED, api_message=f"API unreachable until deadline: {exc}"
            )
            return "expired"
        log.warning("start for request %s not sent (%s); again in %.1fs", request_id, exc, delay)
        self.store.expect_progress(request_id, now() + delay + self.progress_slack_s)
        self.dispatcher.resend_start(
            delivery.task_id, delivery.kwargs, requested_at, delivery.attempt + 1, delay
        )
        return "start deferred"

    def _placed(
        self, record: RequestRecord, started: StartedCall, timeout: int, poll: bool = True
    ) -> str:
        """The API placed the call: publish it, record it, start polling (``poll``)."""
        request_id = record.request_id
        placed_at = now()
        pins = self.pins
        if pins is not None:  # the digest first: a producer may check a code the moment it sees it
            call = VerificationCall.of(record)
            insist(lambda: pins.store(call, started.pin))
        # Built unvalidated: nothing may raise between the API placing the call and the pin
        # reaching the producer (the values are ours, checked when the request was admitted).
        info = PlacedInfo.model_construct(
            request_id=request_id,
            callid=started.callid,
            pin=started.pin if self.pins_leave_worker else None,
            placed_at=iso(placed_at) or "",
            timeout=timeout,
        )
        # The pin goes to the producer's result first; the record then says "placed" without
        # it. One writer token for every try: a try whose reply was lost after it landed is
        # not taken for "settled meanwhile" by the next one.
        self.publisher.placed(request_id, info)
        writer = uuid.uuid4().hex
        if not insist(lambda: self._mark_placed(record, started.callid, info.placed_at, writer)):
            # Settled meanwhile (a duplicate judged this start lost): the outcome stands, and
            # goes out again over the PLACED info just published on top of it.
            log.warning(
                "call %s for request %s was placed after the request settled",
                started.callid,
                request_id,
            )
            self.publisher.outcome_if_settled(request_id)
            return "placed late"
        # The claim's snapshot serves on: the fields read from here on (webhook, timeout)
        # are set once, at the claim.
        self.publisher.announce_placed(record, info)
        log.info(
            "call %s placed to %s for request %s",
            started.callid,
            record.get("dn_masked"),
            request_id,
        )
        if poll:  # counted from the placement: publishing took some of the first poll's wait
            self.poller.start_chain(record, elapsed_s=now() - placed_at)
        return "placed"

    def _mark_placed(
        self, record: RequestRecord, callid: str, placed_at: object, writer: str = ""
    ) -> bool:
        """``dialing → placed`` with the call's id and placement time (its PLACED info's)."""
        bind_log_context(callid=callid)
        return self.store.compare_and_set(
            record.request_id,
            "state",
            RequestState.DIALING,
            RequestState.PLACED,
            writer_token=writer,
            callid=callid,
            placed_at=repr(epoch_of(placed_at) if isinstance(placed_at, str) else now()),
        )
