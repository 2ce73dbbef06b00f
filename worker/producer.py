"""The producer helpers (:mod:`callpass_producer`) configured like the workers, from the
``CALLPASS_*`` settings: for our CLI, demo and tests, and a service that runs beside them."""

from __future__ import annotations

import redis

from callpass_producer import Verifier
from worker.pipeline.outbox import Outbox, lost_after_s
from worker.settings import Settings, load_settings

__all__ = ["default_outbox", "verifier_from_settings"]


def default_outbox(settings: Settings | None = None) -> Outbox:
    """The outbox in the workers' Redis, as configured by the ``CALLPASS_*`` settings."""
    settings = settings or load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    return Outbox(client, grace_s=lost_after_s(settings.visibility_timeout_s))


def verifier_from_settings(settings: Settings | None = None) -> Verifier:
    """A :class:`~callpass_producer.Verifier` configured like the workers."""
    s = settings or load_settings()
    return Verifier(
        s.effective_broker_url,
        queue=s.queue,
        result_backend=s.effective_result_backend,
        records_url=s.redis_url,
        visibility_timeout_s=s.visibility_timeout_s,
    )
