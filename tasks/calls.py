"""``callpass.start_call`` and ``callpass.poll_status``: stable names foreign services use.

Both tasks keep no result of their own (``ignore_result``): the pipeline writes what the
producer reads under the *start_call* task id (state ``PLACED`` with callid and pin, then
``SUCCESS`` with the outcome document). What they return is a one-word summary for Flower and
the logs, without number or pin.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.masking import MaskedRequest
from worker.runtime import get_pipeline

__all__ = ["poll_status", "start_call"]

_COMMON: dict[str, Any] = {
    "bind": True,
    "ignore_result": True,
    # A bug (FAILURE) is still recorded, so a producer's get() raises instead of hanging.
    "store_errors_even_if_ignored": True,
    "Request": MaskedRequest,
    "acks_late": True,
}


@app.task(name="callpass.start_call", **_COMMON)
def start_call(self: Task[Any, str], *args: Any, **kwargs: Any) -> str:
    """Validate, claim the request id, place the call with async v2.0, hand over to polls.

    Keyword arguments: ``dn`` (str), ``timeout`` (int seconds, 2-99), ``webhook_url`` and
    ``request_id`` (both optional). Anything else settles as ``invalid``.
    """
    requested_at = self.request.get("callpass_requested_at")
    attempt = self.request.get("callpass_attempt")
    return get_pipeline(app).start(
        str(self.request.id),
        args,
        kwargs,
        requested_at=requested_at if isinstance(requested_at, int | float) else None,
        attempt=attempt if isinstance(attempt, int) else 0,
    )


@app.task(name="callpass.poll_status", **_COMMON)
def poll_status(self: Task[Any, str], request_id: str, token: str) -> str:
    """Ask for the call's status once; settle, or schedule the next poll of the chain."""
    return get_pipeline(app).poll(request_id, token)
