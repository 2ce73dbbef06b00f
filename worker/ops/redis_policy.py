"""Start-up check that no Redis of ours may evict keys (``maxmemory-policy noeviction``).

An evicted request record lets a redelivered ``start_call`` claim the request afresh and dial
a second time; an evicted message or result loses a request or its outcome. Under
``noeviction`` (Redis' default) a full Redis refuses writes instead, which the worker survives.
The worker runs :func:`check_eviction_policies` once, before it takes a message
(``worker_init`` in ``worker/process/signals.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from worker.masking import hide_url_credentials, redact_url
from worker.settings import Settings, is_rabbitmq

__all__ = [
    "CHECK_SETTING",
    "REQUIRED_POLICY",
    "EvictionPolicyRefused",
    "check_eviction_policies",
    "redis_roles",
]

REQUIRED_POLICY = "noeviction"
CHECK_SETTING = "CALLPASS_REDIS_EVICTION_POLICY_CHECK"

Connect = Callable[[str], redis.Redis]


class EvictionPolicyRefused(Exception):
    """A Redis may evict keys and the settings say refuse: the worker must not start."""


def redis_roles(settings: Settings) -> dict[str, list[str]]:
    """Each Redis URL the worker uses, with what it holds there."""
    roles: dict[str, list[str]] = {settings.redis_url: ["records"]}
    if not is_rabbitmq(settings.effective_broker_url):
        roles.setdefault(settings.effective_broker_url, []).append("broker")
    roles.setdefault(settings.effective_result_backend, []).append("results")
    return roles


def _connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _read_policy(url: str, connect: Connect) -> str:
    """The server's ``maxmemory-policy``; raises when it cannot be read."""
    with connect(url) as client:
        answer = client.config_get("maxmemory-policy")
    policy = answer.get("maxmemory-policy") if isinstance(answer, dict) else None
    if not policy:
        raise redis.ResponseError("CONFIG GET maxmemory-policy gave no value")
    return policy.decode() if isinstance(policy, bytes) else str(policy)


def check_eviction_policies(settings: Settings, connect: Connect = _connect) -> list[str]:
    """Warnings to log at start-up; raise :class:`EvictionPolicyRefused` for a Redis that may
    evict keys when ``CALLPASS_REDIS_EVICTION_POLICY_CHECK`` is ``refuse`` (the default)."""
    warnings = []
    for url, roles in redis_roles(settings).items():
        where = f"Redis {redact_url(url, keep_path=True)} ({', '.join(roles)})"
        try:
            policy = _read_policy(url, connect)
        except (redis.RedisError, OSError, ValueError, TypeError) as exc:
            # Managed Redis often refuses CONFIG; an unreachable one is retried by Celery.
            reason = hide_url_credentials(f"{type(exc).__name__}: {exc}")[:200]
            warnings.append(
                f"{where}: maxmemory-policy could not be checked ({reason}); make sure it is "
                f"{REQUIRED_POLICY}, or an evicted request record can let a call be dialed twice"
            )
            continue
        if policy == REQUIRED_POLICY:
            continue
        problem = (
            f"{where} has maxmemory-policy {policy}: it must be {REQUIRED_POLICY}, since an "
            "evicted request record lets a redelivered request dial a second time"
        )
        if settings.redis_eviction_policy_check == "refuse":
            raise EvictionPolicyRefused(
                f"{problem}. Set maxmemory-policy {REQUIRED_POLICY} (redis.conf, or CONFIG SET), "
                f"or start anyway with {CHECK_SETTING}=warn"
            )
        warnings.append(f"!!! {problem}; starting anyway because {CHECK_SETTING}=warn")
    return warnings
