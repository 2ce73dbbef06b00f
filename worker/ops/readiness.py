"""``callpass readycheck``: a readiness probe, apart from liveness (``callpass healthcheck``).

Ready means this worker can do its work now: its settings are valid (else the probe exits
2 naming the variable) and what they ask for is installed (the tracing extra), the records'
Redis, the broker and the result backend answer (each connect and each reply within 2 s),
and, where the heartbeat file is configured, the worker's consumer has sent a heartbeat
lately. A worker that is not ready is left running (Redis or the broker may come back); a
worker that is not alive is restarted.
"""

from __future__ import annotations

import importlib.util

import redis
from kombu import Connection

from worker.masking import error_line, redact_url
from worker.ops.health import heartbeat_age_s, heartbeat_problem
from worker.settings import Settings
from worker.settings.model import is_rabbitmq

__all__ = ["readiness_problems", "redis_problem"]

#: Seconds each connection check may take: a probe must answer before its own time-out.
CHECK_TIMEOUT_S = 2


def readiness_problems(settings: Settings, max_heartbeat_age_s: float) -> list[str]:
    """What keeps the worker from being ready, one line each (empty: ready)."""
    problems = [redis_problem("redis", settings.redis_url)]
    if settings.effective_broker_url != settings.redis_url:
        problems.append(_broker_problem(settings.effective_broker_url))
    backend = settings.effective_result_backend
    if backend not in (settings.redis_url, settings.effective_broker_url):
        # Where producers read pins and outcomes: a Redis URL (the settings' rule).
        problems.append(redis_problem("result backend", backend))
    if settings.tracing != "off" and not _installed("opentelemetry.exporter.otlp.proto.http"):
        # The worker itself stops at start-up for this (worker.ops.tracing.start_tracing).
        problems.append(
            f"tracing: CALLPASS_TRACING={settings.tracing} needs the tracing extra "
            "(pip install 'callpass-worker[tracing]')"
        )
    if settings.heartbeat_file:
        path = settings.heartbeat_file
        heartbeat = heartbeat_problem(path, heartbeat_age_s(path), max_heartbeat_age_s)
        problems.append(f"worker: {heartbeat}" if heartbeat else None)
    return [problem for problem in problems if problem]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def redis_problem(what: str, url: str) -> str | None:
    """Why the Redis at ``url`` does not answer (``None``: it does), ``what`` naming it."""
    client = redis.Redis.from_url(
        url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{what}: {redact_url(url, keep_path=True)} does not answer ({error_line(exc)})"
    finally:
        client.close()
    return None


def _broker_problem(url: str) -> str | None:
    # A socket time-out too: a broker that takes the connection but never answers must fail
    # the probe in seconds, not hold it to the kubelet's own time-out.
    bounded = {"socket_timeout": CHECK_TIMEOUT_S, "socket_connect_timeout": CHECK_TIMEOUT_S}
    options = {} if is_rabbitmq(url) else bounded
    with Connection(url, connect_timeout=CHECK_TIMEOUT_S, transport_options=options) as connection:
        try:
            connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # kombu raises the transport's own errors
            return f"broker: {redact_url(url, keep_path=True)} does not answer ({error_line(exc)})"
    return None
