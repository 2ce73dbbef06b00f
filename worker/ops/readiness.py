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

from worker.masking import hide_url_credentials, redact_url
from worker.ops.health import heartbeat_age_s
from worker.settings import Settings

__all__ = ["readiness_problems"]

#: Seconds each connection check may take: a probe must answer before its own time-out.
CHECK_TIMEOUT_S = 2


def readiness_problems(settings: Settings, max_heartbeat_age_s: float) -> list[str]:
    """What keeps the worker from being ready, one line each (empty: ready)."""
    problems = []
    redis_problem = _redis_problem("redis", settings.redis_url)
    if redis_problem:
        problems.append(redis_problem)
    if settings.effective_broker_url != settings.redis_url:
        broker_problem = _broker_problem(settings.effective_broker_url)
        if broker_problem:
            problems.append(broker_problem)
    backend = settings.effective_result_backend
    if backend not in (settings.redis_url, settings.effective_broker_url):
        # Where producers read pins and outcomes: a Redis URL (the settings' rule).
        backend_problem = _redis_problem("result backend", backend)
        if backend_problem:
            problems.append(backend_problem)
    if settings.tracing != "off" and not _installed("opentelemetry.exporter.otlp.proto.http"):
        # The worker itself stops at start-up for this (worker.ops.tracing.start_tracing).
        problems.append(
            f"tracing: CALLPASS_TRACING={settings.tracing} needs the tracing extra "
            "(pip install 'callpass-worker[tracing]')"
        )
    if settings.heartbeat_file:
        age = heartbeat_age_s(settings.heartbeat_file)
        if age is None or age > max_heartbeat_age_s:
            seen = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
            problems.append(f"worker: {seen} (limit {max_heartbeat_age_s:g} s)")
    return problems


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _redis_problem(what: str, url: str) -> str | None:
    client = redis.Redis.from_url(
        url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{what}: {redact_url(url, keep_path=True)} does not answer ({_short(exc)})"
    finally:
        client.close()
    return None


def _broker_problem(url: str) -> str | None:
    # A socket time-out too: a broker that takes the connection but never answers must fail
    # the probe in seconds, not hold it to the kubelet's own time-out.
    bounded = {"socket_timeout": CHECK_TIMEOUT_S, "socket_connect_timeout": CHECK_TIMEOUT_S}
    options = bounded if url.startswith(("redis://", "rediss://", "unix://")) else {}
    with Connection(url, connect_timeout=CHECK_TIMEOUT_S, transport_options=options) as connection:
        try:
            connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
        except Exception as exc:  # kombu raises the transport's own errors
            return f"broker: {redact_url(url, keep_path=True)} does not answer ({_short(exc)})"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return hide_url_credentials(text[0]) if text else type(exc).__name__
