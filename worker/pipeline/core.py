"""The pipeline's facade: the parts composed, and the four entry points tasks use.

Tasks in ``tasks/`` are thin wrappers around :class:`Pipeline`. Each concern lives in its own
part: :mod:`~worker.pipeline.admission` (parse, refuse, claim), :mod:`~worker.pipeline.dialer`
(``claimed → dialing → placed``), :mod:`~worker.pipeline.poller` (the poll chain),
:mod:`~worker.pipeline.settlement` (one outcome per request), :mod:`~worker.pipeline.publisher`
(everything producers read) and :mod:`~worker.pipeline.sweeper` (overdue steps). Celery is
reached only through two protocols (:mod:`~worker.pipeline.ports`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.pipeline.admission import Admission, Delivery
from worker.pipeline.call_limits import CallLimits
from worker.pipeline.dial_checks import DialChecks
from worker.pipeline.dialer import Dialer
from worker.pipeline.fallback import Fallbacks
from worker.pipeline.outbox import Outbox
from worker.pipeline.pins import PinVault
from worker.pipeline.poller import Poller
from worker.pipeline.ports import ClientFactory, Dispatcher, NoTracing, ResultSink, Tracing
from worker.pipeline.publisher import Publisher
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.settlement import Settler
from worker.pipeline.store import RequestStore, now
from worker.pipeline.sweeper import OverdueSweep
from worker.pipeline.verifications import Verifications
from worker.webhooks.events import WebhookEvents

__all__ = ["Pipeline"]


@dataclass
class Pipeline:
    client: ClientFactory
    store: RequestStore
    sink: ResultSink
    dispatcher: Dispatcher
    schedule: PollSchedule
    default_timeout_s: int
    place_deadline_s: float
    #: Longest a start request can take with its inline retries; a record stuck in
    #: ``dialing`` for longer belongs to a worker that died mid-request.
    max_start_s: float
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
    #: Verifications across resends; ``None``: every request is a verification of one.
    verifications: Verifications | None = None
    #: The products' fallback tasks; ``None``: none are sent.
    fallbacks: Fallbacks | None = None
    #: Per-number, fraud and spend limits; ``None``: none configured.
    call_limits: CallLimits | None = None
    #: Test numbers and their fixed pins (they never ring).
    test_pins: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: How many first digits of a number the metrics by prefix use.
    prefix_digits: int = 4
    #: Joins a request's polls to the trace of its start (``NoTracing``: tracing off).
    tracing: Tracing = field(default_factory=NoTracing)

    publisher: Publisher = field(init=False)
    settler: Settler = field(init=False)
    admission: Admission = field(init=False)
    poller: Poller = field(init=False)
    dialer: Dialer = field(init=False)
    sweeper: OverdueSweep = field(init=False)

    def __post_init__(self) -> None:
        self.publisher = Publisher(self.store, self.sink, self.webhooks, self.fallbacks)
        self.settler = Settler(
            self.store, self.publisher, self.progress_slack_s, self.webhooks is not None
        )
        self.admission = Admission(
            store=self.store,
            publisher=self.publisher,
            default_timeout_s=self.default_timeout_s,
            place_deadline_s=self.place_deadline_s,
            max_start_s=self.max_start_s,
            progress_slack_s=self.progress_slack_s,
            allowed_prefixes=self.allowed_prefixes,
            prefix_digits=self.prefix_digits,
            call_limits=self.call_limits,
            outbox=self.outbox,
            webhooks=self.webhooks,
            tracing=self.tracing,
        )
        self.poller = Poller(
            client=self.client,
            store=self.store,
            dispatcher=self.dispatcher,
            schedule=self.schedule,
            publisher=self.publisher,
            settler=self.settler,
            default_timeout_s=self.default_timeout_s,
            poll_outage_s=self.poll_outage_s,
            progress_slack_s=self.progress_slack_s,
            tracing=self.tracing,
        )
        self.dialer = self._dialer()
        self.sweeper = OverdueSweep(
            store=self.store,
            dispatcher=self.dispatcher,
            publisher=self.publisher,
            settler=self.settler,
            dialer=self.dialer,
            poller=self.poller,
            place_deadline_s=self.place_deadline_s,
            outbox=self.outbox,
        )

    def _dialer(self) -> Dialer:
        return Dialer(
            client=self.client,
            store=self.store,
            dispatcher=self.dispatcher,
            publisher=self.publisher,
            settler=self.settler,
            poller=self.poller,
            default_timeout_s=self.default_timeout_s,
            place_deadline_s=self.place_deadline_s,
            max_start_s=self.max_start_s,
            progress_slack_s=self.progress_slack_s,
            checks=DialChecks(
                self.settler,
                verifications=self.verifications,
                call_limits=self.call_limits,
                test_pins=self.test_pins,
            ),
            pins=self.pins,
            pins_leave_worker=self.pins_leave_worker,
            test_pins=self.test_pins,
        )

    @staticmethod
    def now() -> float:
        return now()

    def start(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        requested_at: float | None = None,
        attempt: int = 0,
    ) -> str:
        """Handle one delivery of ``callpass.start_call``; return a summary for Flower."""
        admitted = self.admission.admit(task_id, args, kwargs, requested_at or now())
        if admitted is None:
            return "invalid"
        delivery = Delivery(task_id, admitted.dn, kwargs, attempt)
        return self.dialer.advance(admitted.record, delivery)

    def poll(self, request_id: str, token: str) -> str:
        """Run one poll of the chain named by ``token`` (from the due set, or a ``poll_status``
        message of an earlier version)."""
        return self.poller.poll(request_id, token)

    def sweep(self, limit: int = 200) -> int:
        """Re-drive requests whose next step is long overdue; return how many were touched."""
        return self.sweeper.sweep(limit)
