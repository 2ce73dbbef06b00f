"""The sweep: requests whose next step is long overdue, driven again.

A message can vanish where no redelivery brings it back (a worker killed between kombu taking
it from Redis and recording it as unacked; a Redis that lost writes). Every unsettled request
has a time by which it must show progress; past it, the sweep sends the step again. Steps are
idempotent (poll tokens, request records), so a step sent twice does no harm. The thread that
runs it, one process at a time, is :class:`worker.process.threads.SweeperThread`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from callpass_producer.contracts.outcome import Outcome
from worker.pipeline.dialer import Dialer
from worker.pipeline.outbox import Outbox
from worker.pipeline.poller import Poller
from worker.pipeline.ports import Dispatcher
from worker.pipeline.publisher import Publisher
from worker.pipeline.settlement import Settler
from worker.pipeline.states import RequestState
from worker.pipeline.store import RequestRecord, RequestStore, now

__all__ = ["OverdueSweep"]

log = logging.getLogger(__name__)

#: When to look again at a settled request whose fallback task another process holds: past
#: that holder's lease (worker.pipeline.fallback.Fallbacks.lease_s).
FALLBACK_RECHECK_S = 35.0


@dataclass
class OverdueSweep:
    store: RequestStore
    dispatcher: Dispatcher
    publisher: Publisher
    settler: Settler
    dialer: Dialer
    poller: Poller
    place_deadline_s: float
    #: Producers' notes of requests sent; ``None``: not used.
    outbox: Outbox | None = None

    def sweep(self, limit: int = 200) -> int:
        """Re-drive requests whose next step is long overdue; return how many were touched."""
        touched = self._resend_lost_notes(limit)
        for request_id in self.store.overdue(now(), limit):
            touched += 1
            self._redrive(request_id)
        return touched

    def _resend_lost_notes(self, limit: int) -> int:
        """Requests a producer noted that never reached a worker: published again."""
        if self.outbox is None:
            return 0
        lost = self.outbox.overdue(limit)
        for task_id, kwargs, requested_at in lost:
            log.warning("request of task %s never reached a worker; sending it again", task_id)
            self.dispatcher.resend_start(task_id, kwargs, requested_at, 0, 0.0)
        return len(lost)

    def _redrive(self, request_id: str) -> None:
        record = self.store.load(request_id)
        if record is None:
            self.store.forget(request_id)
            return
        standing = record.outcome
        if standing is not None:  # settled, its publication maybe unfinished
            if self.publisher.outcome(record, standing):
                self.store.forget(request_id)
            else:  # another process holds its fallback task: look again after the lease
                self.store.expect_progress(request_id, now() + FALLBACK_RECHECK_S)
        elif record.state == RequestState.PLACED:
            log.warning("request %s: no poll for too long; polling again", request_id)
            self.publisher.republish_placed(record)  # and its call.placed event, if it was lost
            self.poller.repoll(record)
        elif record.state == RequestState.DIALING:
            self.dialer.recover(record)
        else:
            self._redrive_claimed(record)

    def _redrive_claimed(self, record: RequestRecord) -> None:
        """A deferred start went missing; only its own message has the number: wait for it
        until the placement deadline, then settle ``expired``."""
        requested_at = record.number("requested_at") or now()
        if now() > requested_at + self.place_deadline_s:
            self.settler.settle(record, Outcome.EXPIRED, api_message="placement deadline passed")
        else:
            self.store.expect_progress(
                record.request_id, requested_at + self.place_deadline_s + 1.0
            )
