"""``callpass.deliver_webhook``: one delivery attempt of one stored webhook event.

The message carries only the event id and the attempt number: the body (which may hold a
pin), the URL and the signing secrets stay in Redis and the worker's settings. Whatever goes
wrong here, the event is safe in Redis: an attempt that is not recorded falls due again when
its lease ends (see worker.webhooks.store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from callpass_producer.contracts.names import WEBHOOK_TASK
from worker.process.parts import WorkerParts

__all__ = ["register_webhook_tasks"]

log = logging.getLogger(__name__)


def register_webhook_tasks(app: Celery, parts: WorkerParts) -> None:
    """Declare ``deliver_webhook`` on ``app``; its deliverer is ``parts``'."""
    # This app's own: a shared task would be copied into every app created after it.
    app.task(name=WEBHOOK_TASK, shared=False, ignore_result=True, acks_late=True)(
        _deliver_webhook(parts)
    )


def _deliver_webhook(parts: WorkerParts) -> Callable[[str, int], str]:
    def deliver_webhook(event_id: str, attempt: int) -> str:
        """Deliver the event if attempt ``attempt`` is still due; return a word for Flower."""
        if not isinstance(event_id, str) or not isinstance(attempt, int):
            return "malformed"
        try:
            return parts.webhook_deliverer().deliver(event_id, attempt)
        except (redis.RedisError, OperationalError) as exc:
            log.warning(
                "webhook %s: Redis unavailable (%s); retried when its lease ends",
                event_id,
                type(exc).__name__,
            )
            return "deferred"

    return deliver_webhook
