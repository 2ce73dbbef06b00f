"""Send ``callpass.start_call`` and ``callpass.verify_code``, and wait for the pin.

The functions a :class:`callpass_producer.Verifier` is made of, for a service that has a
Celery app of its own: masked reprs (no number in a broker UI or the producer's events) and
the enqueue-time header the worker measures queueing with.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from celery import Celery
from celery.result import AsyncResult

from callpass_producer.contracts.names import (
    CODE_QUEUE_SUFFIX,
    DEFAULT_QUEUE,
    PLACED,
    START_TASK,
    VERIFY_TASK,
)
from callpass_producer.masking import masked_reprs
from callpass_producer.outbox import OutboxNotes

__all__ = ["enqueue_call", "starts_queue_of", "verify_code", "wait_for_pin"]

#: The queue Celery sends to when an app names none.
CELERY_DEFAULT_QUEUE = "celery"

#: How often ``wait_for_pin`` looks at the result backend, in seconds.
PIN_POLL_INTERVAL_S = 0.02


def enqueue_call(
    app: Celery,
    dn: str,
    timeout: int | None = None,
    *,
    request_id: str | None = None,
    webhook_url: str | None = None,
    queue: str | None = None,
    task_id: str | None = None,
    outbox: OutboxNotes | None = None,
    **version_2: str | bool | dict[str, str] | None,
) -> AsyncResult[Any]:
    """Send ``callpass.start_call``; the returned result resolves to the outcome document.

    With ``outbox`` (the workers' Redis), the request is noted before it is published, so a
    message the broker loses on its way to a worker is published again (see
    :mod:`callpass_producer.outbox`).
    ``queue``: the workers' ``CALLPASS_QUEUE``; by default :func:`starts_queue_of` the app.
    ``version_2``: ``verification_id``, ``resend``, ``fallback_task``, ``fallback_queue``,
    ``limit_keys`` (any of them makes the outcome a version-2 document).
    """
    given = {"timeout": timeout, "request_id": request_id, "webhook_url": webhook_url}
    kwargs: dict[str, Any] = {"dn": dn}
    kwargs.update((k, v) for k, v in {**given, **version_2}.items() if v is not None)
    argsrepr, kwargsrepr = masked_reprs((), kwargs)
    task_id = task_id or str(uuid.uuid4())
    requested_at = time.time()
    if outbox is not None:
        outbox.note(task_id, kwargs, requested_at)
    return app.send_task(
        START_TASK,
        kwargs=kwargs,
        queue=queue or starts_queue_of(app),
        task_id=task_id,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
        headers={"callpass_requested_at": requested_at},
    )


def starts_queue_of(app: Celery) -> str:
    """The workers' queue as ``app`` names it: its ``task_default_queue``, unless that is
    Celery's own default (``celery``, which no callpass worker reads): then ``callpass``."""
    configured = str(app.conf.task_default_queue or "")
    return configured if configured not in ("", CELERY_DEFAULT_QUEUE) else DEFAULT_QUEUE


def verify_code(
    app: Celery, verification_id: str, code: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Check a code the user typed: ``{valid, reason, attempts_left}``, the JSON of a
    :class:`callpass_producer.contracts.verify.CodeCheck` as the task answers it.

    ``verification_id``: the verification (a request that named none: its request id).
    ``reason`` is one of ok, mismatch, expired, too_many_attempts, unknown_request,
    malformed_code. A correct code ends the verification; attempts are capped per
    verification, across its calls.
    """
    result = app.send_task(
        VERIFY_TASK,
        args=[verification_id, code],
        # Its own queue, which workers take from first: not behind a burst of starts.
        queue=starts_queue_of(app) + CODE_QUEUE_SUFFIX,
        argsrepr="(request_id, <code>)",
    )
    return cast(dict[str, Any], result.get(timeout=timeout_s))


def wait_for_pin(result: AsyncResult[Any], timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Wait until the call is placed; return ``{callid, pin, …}``.

    Returns ``None`` when the request settled without placing a call (read ``result.get()``
    for why); raises ``TimeoutError`` past ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state: str = result.state  # celery-types knows only Celery's own states
        if state == PLACED:
            return dict(result.info)
        if state == "SUCCESS":
            doc = cast(dict[str, Any], result.result)
            return {k: doc[k] for k in ("request_id", "callid", "pin")} if doc.get("pin") else None
        if state == "FAILURE":
            return None
        time.sleep(PIN_POLL_INTERVAL_S)
    raise TimeoutError(f"no pin for task {result.id} within {timeout_s:g} s")
