"""``callpass.deliver_webhook``: one delivery attempt of one stored webhook event.

The message carries only the event id and the attempt number: the body (which may hold a
pin), the URL and the signing secrets stay in Redis and the worker's settings. Whatever goes
wrong here, the event is safe in Redis: an attempt that is not recorded falls due again when
its lease ends (see worker.webhooks.store).
"""

from __future__ import annotations

import logging

import redis
from kombu.exceptions import OperationalError

from worker.celery_app import app
from worker.runtime import WEBHOOK_TASK, get_webhook_deliverer

__all__ = ["deliver_webhook"]

log = logging.getLogger(__name__)


@app.task(name=WEBHOOK_TASK, ignore_result=True, acks_late=True)
def deliver_webhook(event_id: str, attempt: int) -> str:
    """Deliver the event if attempt ``attempt`` is still due; return a word for Flower."""
    if not isinstance(event_id, str) or not isinstance(attempt, int):
        return "malformed"
    try:
        return get_webhook_deliverer(app).deliver(event_id, attempt)
    except (redis.RedisError, OperationalError) as exc:
        log.warning(
            "webhook %s: Redis unavailable (%s); retried when its lease ends",
            event_id,
            type(exc).__name__,
        )
        return "deferred"
