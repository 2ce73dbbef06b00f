"""Polling a placed call: one live chain of polls per request (waiting in Redis' due set, see
:mod:`worker.pipeline.due_polls`), named by the record's ``poll_token``, each asking the API
once and handing the chain to the next.

A poll whose token is not the record's drops itself, so duplicates die out instead of
multiplying. The next poll is added, the token moved to it and the poll itself retired in one
step (:meth:`~worker.pipeline.ports.Dispatcher.hand_on_poll`): a crash before it leaves the old
token valid and the poll, run again when its lease ends, carries the chain on.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from callpass_producer.contracts.outcome import Outcome
from worker.api.client import CallStatus
from worker.api.errors import InvalidRequestError, PermanentError, RateLimitedError, TransientError
from worker.ops.logs import bind_log_context
from worker.pipeline.ports import ClientFactory, Dispatcher, NoTracing, Tracing
from worker.pipeline.publisher import Publisher
from worker.pipeline.quiet_calls import is_quiet_call, settle_quiet_call
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.settlement import Settler
from worker.pipeline.store import RequestRecord, RequestStore, now

__all__ = ["HANDED_ON", "OUTAGE_POLL_INTERVAL_S", "Poller"]

log = logging.getLogger(__name__)

#: What :meth:`Poller.poll` returns when the chain went on to its next poll: the due set no
#: longer holds this one (the hand-on removed it).
HANDED_ON = "polling"
#: Seconds between status requests once the schedule is over and the API is unreachable.
OUTAGE_POLL_INTERVAL_S = 5.0


class StatusAnswer(NamedTuple):
    #: ``None``: the API could not be asked this time.
    status: CallStatus | None
    #: Why the outcome would be unknown if the chain ended now.
    problem: str
    #: Seconds the API asked us to wait (0: none).
    retry_after_s: float


@dataclass
class Poller:
    client: ClientFactory
    store: RequestStore
    dispatcher: Dispatcher
    schedule: PollSchedule
    publisher: Publisher
    settler: Settler
    default_timeout_s: int
    #: How long past the schedule's end polls go on while the API cannot be reached.
    poll_outage_s: float
    #: How long past its next poll's time a request waits before the sweeper re-drives it.
    progress_slack_s: float
    #: Each poll is a span of its request's trace (kept in the record by the start).
    tracing: Tracing = field(default_factory=NoTracing)

    def poll(self, request_id: str, token: str) -> str:
        """Run one poll of the chain named by ``token``."""
        bind_log_context(request_id=request_id)
        record = self.store.begin_poll(request_id, token)  # counts the request below, if made
        if record is None:
            log.warning("request %s has no record (expired?): poll dropped", request_id)
            return "no record"
        attributes = {"callpass.request_id": request_id, "callpass.dn": record.get("dn_masked")}
        with self.tracing.span("callpass.poll", record.fields, attributes) as note:
            result = self._poll(record, token)
            note("callpass.poll.result", result)
            return result

    def _poll(self, record: RequestRecord, token: str) -> str:
        standing = record.outcome
        if standing is not None:
            self.publisher.outcome(record, standing)
            return "settled"
        if record.get("poll_token") != token:
            return "stale poll"
        callid = record.get("callid")
        bind_log_context(callid=callid)
        if is_quiet_call(callid):  # a test number's, its settle lost: never ask the API
            settle_quiet_call(self.settler, record)
            return "test number"
        elapsed = record.seconds_since_placed()  # as the status request leaves
        answer = self._ask(record, callid)
        if answer is None:
            return "unknown"
        if answer.status is not None and answer.status.outcome is not None:
            self.settler.settle(
                record,
                answer.status.outcome,
                raw_result=answer.status.raw_result,
                read_just_now=True,
            )
            return answer.status.outcome.value
        return self._carry_on(record, token, elapsed, answer)

    def _ask(self, record: RequestRecord, callid: str) -> StatusAnswer | None:
        """The API's answer about ``callid``; ``None`` once the request is settled unknown."""
        try:
            status = self.client().get_status(callid)
        except TransientError as exc:
            log.info("status of call %s not read (%s)", callid, type(exc).__name__)
            retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
            return StatusAnswer(None, str(exc), retry_after or 0.0)
        except (PermanentError, InvalidRequestError) as exc:
            # "can't find callid" or a refused token: asking again will not help.
            self.settler.settle(record, Outcome.UNKNOWN, api_message=str(exc), read_just_now=True)
            return None
        return StatusAnswer(status, "no final status within timeout + grace", 0.0)

    def _carry_on(
        self, record: RequestRecord, token: str, elapsed: float, answer: StatusAnswer
    ) -> str:
        """No final status yet: the next poll of the schedule, or ``unknown`` past it."""
        timeout = record.integer("timeout", self.default_timeout_s)
        delay = self.schedule.next_delay(elapsed, timeout)
        outage_end = self.schedule.deadline(timeout) + self.poll_outage_s
        if delay is None and answer.status is None and elapsed < outage_end:
            # The schedule is over but the API could not be asked: keep asking (it keeps
            # callids) until the outage allowance is spent, so the true outcome is learnt.
            delay = OUTAGE_POLL_INTERVAL_S
        elif delay is not None:
            # The schedule counts from the placement, and the status request just made took
            # part of the wait: without this, every poll would come one round trip late.
            delay = max(0.0, delay - (record.seconds_since_placed() - elapsed))
        if delay is None:
            self.settler.settle(
                record, Outcome.UNKNOWN, api_message=answer.problem, read_just_now=True
            )
            return "unknown"
        if not self._next_poll(record, token, max(delay, answer.retry_after_s)):
            return "stale poll"  # a duplicate carried the chain on, or settled it, meanwhile
        return HANDED_ON

    def start_chain(self, record: RequestRecord, elapsed_s: float) -> None:
        """Start the request's chain (it has none): its first poll at the schedule's next."""
        delay = self.schedule.next_delay(
            elapsed_s, record.integer("timeout", self.default_timeout_s)
        )
        self._next_poll(record, "", 0.0 if delay is None else delay)

    def repoll(self, record: RequestRecord) -> None:
        """The chain went quiet (its message lost): send its poll again, or start one."""
        token = record.get("poll_token")
        if token:
            self.store.expect_progress(record.request_id, now() + self.progress_slack_s)
            self.dispatcher.send_poll(record.request_id, token, 0.0)
        else:
            self.start_chain(record, record.seconds_since_placed())

    def _next_poll(self, record: RequestRecord, token: str, delay_s: float) -> bool:
        progress_by = now() + delay_s + self.progress_slack_s
        new_token = uuid.uuid4().hex[:16]
        return self.dispatcher.hand_on_poll(
            record.request_id, token, new_token, delay_s, progress_by
        )
