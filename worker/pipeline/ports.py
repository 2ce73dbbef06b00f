"""What the pipeline reaches outside itself, as protocols: Celery (messages and results) and
the API client. ``worker.process.wiring`` plugs in the real ones; the in-process tests plug in
fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the protocols alone pull in nothing of the worker
    from worker.api.client import CallPassClient

__all__ = ["ClientFactory", "Dispatcher", "ResultSink"]

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
