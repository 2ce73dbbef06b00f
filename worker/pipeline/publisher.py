"""What producers read, and only this module writes it: the ``PLACED`` info, the outcome with
its pin put back, each fanned out to every task id of the request, and the webhook events.

Publishing never settles anything. It may look at the record once more after writing
``PLACED`` info: a settle can race past a publication, and the outcome must be what stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callpass_producer.contracts.events import COMPLETED_EVENT, PLACED_EVENT
from callpass_producer.contracts.outcome import OutcomeDocument
from callpass_producer.contracts.placed import PlacedInfo
from worker.pipeline.fallback import Fallbacks
from worker.pipeline.insist import insist
from worker.pipeline.ports import ResultSink
from worker.pipeline.store import RequestRecord, RequestStore
from worker.webhooks.events import WebhookEvents

__all__ = ["Publisher"]


@dataclass
class Publisher:
    store: RequestStore
    sink: ResultSink
    #: Signed webhook events; ``None``: none are stored.
    webhooks: WebhookEvents | None = None
    #: The products' fallback tasks; ``None``: none are sent.
    fallbacks: Fallbacks | None = None

    # -- PLACED ----------------------------------------------------------------------------

    def placed(self, request_id: str, info: PlacedInfo) -> None:
        """The dialer's publication, to every subscribed task. callid and pin exist only in
        this process until stored: insist a while."""
        meta = info.model_dump(mode="json")
        insist(lambda: self._fan_out_placed(request_id, meta))

    def announce_placed(self, record: RequestRecord, info: PlacedInfo) -> None:
        """The dialer moved the record to ``placed`` after publishing: store its
        ``call.placed`` event. (A settle after that move publishes its outcome after this
        PLACED info, and the sink never lets PLACED info replace an outcome.)"""
        self._emit(record, PLACED_EVENT, info.model_dump(mode="json"))

    def republish_placed(self, record: RequestRecord) -> None:
        """Give every subscribed task the PLACED info the dialer stored (a resume), copied as
        producers already read it; and its event, in case the dialer died before it could."""
        stored = self.stored_placed(record)
        if stored is None or not stored.get("callid"):
            return  # nothing to add: the dialer's own publication is all there is
        self._fan_out_placed(record.request_id, stored)
        self._emit(record, PLACED_EVENT, stored)
        self.outcome_if_settled(record.request_id)

    def stored_placed(self, record: RequestRecord) -> dict[str, Any] | None:
        """What the producer of the record's first task reads: PLACED info (or the outcome's
        callid and pin). The pin lives only there: records never hold it."""
        return self.sink.read_placed(record.task_id)

    def _fan_out_placed(self, request_id: str, meta: dict[str, Any]) -> bool:
        for task_id in self.store.task_ids(request_id):
            self.sink.publish_placed(task_id, meta)
        return True

    # -- outcome ---------------------------------------------------------------------------

    def outcome(
        self, record: RequestRecord, doc: OutcomeDocument, task_ids: list[str] | None = None
    ) -> bool:
        """Give every subscribed task the outcome, its pin put back; then its
        ``call.completed`` event and fallback task (``False``: another process is sending
        the fallback task: look again after its lease). ``record`` is the settled request's (for
        its task ids' PLACED info, its webhook and fallback), read by the caller;
        ``task_ids``: the subscribed tasks, if the caller read them as it settled."""
        data = self._with_pin(record, doc).model_dump(mode="json")
        for task_id in self.store.task_ids(record.request_id) if task_ids is None else task_ids:
            self.sink.publish_outcome(task_id, data)
        self._emit(record, COMPLETED_EVENT, data)
        return self.fallbacks is None or self.fallbacks.after_outcome(record, doc)

    def outcome_if_settled(self, request_id: str) -> None:
        """Publish the outcome again if the request has one (it must be what stays)."""
        latest = self.store.load(request_id)
        standing = latest.outcome if latest is not None else None
        if latest is not None and standing is not None:
            self.outcome(latest, standing)

    def answer(self, task_id: str, doc: OutcomeDocument) -> None:
        """Answer a task whose request has no record (refused before its claim)."""
        self.sink.publish_outcome(task_id, doc.model_dump(mode="json"))

    def _with_pin(self, record: RequestRecord, doc: OutcomeDocument) -> OutcomeDocument:
        if not doc.callid or doc.pin:
            return doc
        # Records keep no pin: take it from what the producer already read (PLACED).
        placed = self.stored_placed(record)
        if placed and placed.get("callid") == doc.callid:
            return doc.model_copy(update={"pin": placed.get("pin")})
        return doc

    # -- webhook events --------------------------------------------------------------------

    def _emit(self, record: RequestRecord, event_type: str, data: dict[str, Any]) -> None:
        """Store the request's event for its webhook, once (the id is derived from both)."""
        url = record.get("webhook_url")
        if self.webhooks is None or not self.webhooks.enabled or not url:
            return
        webhooks = self.webhooks
        insist(
            lambda: bool(webhooks.emit(event_type, url, record.request_id, record.task_id, data))
        )
