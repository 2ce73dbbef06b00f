"""How the verification flows are wired: the pin vault, verifications, fraud and spend
limits and the products' fallback tasks, built from the settings (for
:func:`worker.process.wiring.build_pipeline`)."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from worker.pipeline.call_limits import LIMIT_KEY_LABEL, CallLimits
from worker.pipeline.fallback import Fallbacks
from worker.pipeline.pins import PinVault, derive_key
from worker.pipeline.verifications import Verifications
from worker.settings import Settings

__all__ = ["call_limits", "fallbacks", "pin_vault", "verifications"]


def _hash_secret(settings: Settings) -> str:
    """The secret every worker shares that keyed hashes (pins, limit keys) derive from."""
    return settings.pin_hash_key.get_secret_value() or settings.api_token.get_secret_value()


def pin_vault(settings: Settings, client: redis.Redis) -> PinVault:
    return PinVault(
        client,
        derive_key(_hash_secret(settings)),
        ttl_s=settings.pin_ttl_s,
        max_attempts=settings.code_attempts,
        verification_ttl_s=settings.result_expires_s,
        live_calls=settings.code_live_calls,
    )


def call_limits(settings: Settings, client: redis.Redis) -> CallLimits | None:
    """The per-number, fraud and spend limits, if any is configured."""
    if not (
        settings.dn_limits or settings.key_limits or settings.prefix_limits or settings.call_budgets
    ):
        return None
    return CallLimits(
        client,
        derive_key(_hash_secret(settings), LIMIT_KEY_LABEL),
        dn_limits=settings.dn_limits,
        key_limits=settings.key_limits,
        prefix_limits=settings.prefix_limits,
        budgets=settings.call_budgets,
    )


def fallbacks(settings: Settings, app: Celery, client: redis.Redis) -> Fallbacks:
    def send(name: str, queue: str, task_id: str, kwargs: dict[str, Any]) -> None:
        app.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id)

    return Fallbacks(client, send, default_queue=settings.fallback_queue)


def verifications(settings: Settings, client: redis.Redis) -> Verifications:
    return Verifications(
        client,
        cooldowns_s=settings.resend_cooldowns_s,
        max_calls=settings.resend_max_calls,
        ttl_s=settings.result_expires_s,
        max_attempts=settings.code_attempts,
    )
