"""Enqueue a verification and read it back, as a producing service does.

A service needs nothing of this project to produce (see the README: ``send_task`` by name);
this module is the same thing with masked reprs and the enqueue-time header, for our CLI,
demo and tests.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import redis
from celery import Celery
from celery.result import AsyncResult

from worker.codes import CodeCheck
from worker.masking import masked_reprs
from worker.outbox import Outbox
from worker.runtime import PLACED, START_TASK, VERIFY_TASK
from worker.settings import get_settings

__all__ = ["default_outbox", "enqueue_call", "verify_code", "wait_for_pin"]

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
    outbox: Outbox | None = None,
) -> AsyncResult[Any]:
    """Send ``callpass.start_call``; the returned result resolves to the outcome document.

    With ``outbox`` (the workers' Redis), the request is noted before it is published, so a
    message the broker loses on its way to a worker is published again (see worker.outbox).
    """
    kwargs: dict[str, Any] = {"dn": dn}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if request_id is not None:
        kwargs["request_id"] = request_id
    if webhook_url is not None:
        kwargs["webhook_url"] = webhook_url
    argsrepr, kwargsrepr = masked_reprs((), kwargs)
    task_id = task_id or str(uuid.uuid4())
    requested_at = time.time()
    if outbox is not None:
        outbox.note(task_id, kwargs, requested_at)
    return app.send_task(
        START_TASK,
        kwargs=kwargs,
        queue=queue or app.conf.task_default_queue,
        task_id=task_id,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
        headers={"callpass_requested_at": requested_at},
    )


def verify_code(app: Celery, request_id: str, code: str, timeout_s: float = 10.0) -> CodeCheck:
    """Check a code the user typed: ``{valid, reason, attempts_left}``.

    ``reason`` is one of ok, mismatch, expired, too_many_attempts, unknown_request,
    malformed_code. A correct code is consumed; attempts are capped per request.
    """
    result = app.send_task(
        VERIFY_TASK,
        args=[request_id, code],
        queue=app.conf.task_default_queue,
        argsrepr="(request_id, <code>)",
    )
    return cast(CodeCheck, result.get(timeout=timeout_s))


def default_outbox() -> Outbox:
    """The outbox in the workers' Redis, as configured by the ``CALLPASS_*`` settings."""
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    return Outbox(client, grace_s=settings.visibility_timeout_s + 15.0)


def wait_for_pin(result: AsyncResult[Any], timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Wait until the call is placed; return ``{callid, pin, …}``.

    Returns ``None`` when the request settled without placing a call (read ``result.get()``
    for why); raises ``TimeoutError`` past ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = result.state
        if state == PLACED:
            return dict(result.info)
        if state == "SUCCESS":
            doc = cast(dict[str, Any], result.result)
            return {k: doc[k] for k in ("request_id", "callid", "pin")} if doc.get("pin") else None
        if state == "FAILURE":
            return None
        time.sleep(PIN_POLL_INTERVAL_S)
    raise TimeoutError(f"no pin for task {result.id} within {timeout_s:g} s")
