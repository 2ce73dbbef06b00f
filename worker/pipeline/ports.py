"""What the pipeline reaches outside itself, as protocols: Celery (messages and results), the
API client and tracing. ``worker.process.wiring`` plugs in the real ones; the in-process tests
plug in fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the protocols alone pull in nothing of the worker
    from worker.api.client import CallPassClient

__all__ = ["ClientFactory", "Dispatcher", "NoTracing", "ResultSink", "SpanNote", "Tracing"]

#: The calling thread's API client (one HTTP session per thread).
ClientFactory = Callable[[], "CallPassClient"]


class Dispatcher(Protocol):
    """Sends the pipeline's own follow-up steps: polls (due at a time) and re-sent starts."""

    def send_poll(self, request_id: str, token: str, countdown_s: float) -> None: ...

    def hand_on_poll(
        self, request_id: str, token: str, next_token: str, countdown_s: float, progress_by: float
    ) -> bool:
        """Send the chain's next poll (``next_token``, due in ``countdown_s``) and move the
        record's ``poll_token`` from ``token`` to it, at once; the poll of ``token`` is spent,
        and the request must show progress by ``progress_by``. ``False``: the chain was no
        longer ``token``'s or the request is settled, and nothing was sent."""

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
    """Writes what producers read under a start_call task id, as JSON-ready documents (the
    publisher serialises the models at this boundary)."""

    def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None:
        """Store ``PLACED`` info, unless an outcome is stored already (it stays)."""

    def publish_outcome(self, task_id: str, doc: dict[str, Any]) -> None: ...

    def read_placed(self, task_id: str) -> dict[str, Any] | None:
        """The ``PLACED`` info (or the outcome's callid/pin) stored for ``task_id``, if any.

        The pin lives only there, in what the producer reads: request records never hold it.
        """


#: Sets one attribute of the running span: (name, value).
SpanNote = Callable[[str, str], None]


class Tracing(Protocol):
    """Joins the steps that run apart from a request's message (its polls, taken from the due
    set; its webhook deliveries) to the request's trace: ``worker.ops.tracing`` plugs in
    OpenTelemetry's, :class:`NoTracing` is the default."""

    def carrier(self) -> dict[str, str]:
        """The running span's trace context, as fields to keep with a record (empty: none)."""

    def span(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> AbstractContextManager[SpanNote]:
        """A span of the trace ``carrier`` (a record's fields) names, current in the block."""


def _no_note(name: str, value: str) -> None:
    pass


class NoTracing:
    """Tracing off: nothing kept, no spans."""

    def carrier(self) -> dict[str, str]:
        return {}

    def span(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
    ) -> AbstractContextManager[SpanNote]:
        return nullcontext(_no_note)
