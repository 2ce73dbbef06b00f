"""Prometheus metrics: what each worker counts, and what it reads from Redis at scrape time.

Counters live in the process that does the work. Under the threads and gevent pools (the
README's recommendation) that is the worker process itself, which serves them. Under prefork
the work happens in pool processes: prometheus-client's multiprocess mode collects them when
``PROMETHEUS_MULTIPROC_DIR`` names an empty directory before the worker starts; without it the
worker serves only the cluster-wide gauges and says so at start-up.

The cluster-wide gauges (in-flight calls, dead letters, queue length) are the same on every
worker: dashboards and alerts take ``max()`` of them, never ``sum()``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from worker.pipeline.store import INFLIGHT_KEY
from worker.webhooks.store import DEAD_KEY

__all__ = [
    "EXPORTED",
    "ClusterCollector",
    "api_request",
    "code_checked",
    "fallback_sent",
    "limit_refused",
    "request_settled",
    "serve_metrics",
    "test_number_called",
    "verification_converted",
    "verification_started",
    "webhook_delivery",
]

log = logging.getLogger(__name__)

CALLS = Counter("callpass_calls", "Requests settled, by outcome", ["outcome"])
API_REQUESTS = Counter(
    "callpass_api_requests", "API requests, by method and HTTP status", ["method", "status"]
)
API_DURATION = Histogram(
    "callpass_api_request_duration_seconds",
    "Time from sending an API request to its answer (or failure)",
    ["method"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 3, 5, 10, 30),
)
STATUS_PER_CALL = Histogram(
    "callpass_status_requests_per_call",
    "Status requests a placed call took until its outcome",
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50),
)
WEBHOOK_DELIVERIES = Counter(
    "callpass_webhook_deliveries", "Webhook delivery attempts, by result", ["result"]
)
LIMIT_REFUSALS = Counter(
    "callpass_limit_refusals", "Requests or API requests held back by a limit", ["limit"]
)
CODE_CHECKS = Counter("callpass_code_checks", "Codes checked (verify_code), by reason", ["reason"])
VERIFICATIONS_STARTED = Counter(
    "callpass_verifications_started",
    "Verifications whose first call was placed, by number prefix",
    ["prefix"],
)
VERIFICATIONS_CONVERTED = Counter(
    "callpass_verifications_converted",
    "Verifications a correct code ended, by number prefix",
    ["prefix"],
)
FALLBACKS = Counter("callpass_fallbacks", "Fallback tasks of products sent")
TEST_CALLS = Counter("callpass_test_calls", "Calls to test numbers (settled without the API)")

#: Every metric name this module exports (histograms add _bucket, _sum and _count).
EXPORTED = (
    "callpass_calls_total",
    "callpass_api_requests_total",
    "callpass_api_request_duration_seconds",
    "callpass_status_requests_per_call",
    "callpass_calls_in_flight",
    "callpass_webhook_deliveries_total",
    "callpass_webhook_dead_letters",
    "callpass_limit_refusals_total",
    "callpass_code_checks_total",
    "callpass_verifications_started_total",
    "callpass_verifications_converted_total",
    "callpass_fallbacks_total",
    "callpass_test_calls_total",
    "callpass_broker_queue_length",
    "callpass_polls_scheduled",
    "callpass_polls_due",
)

#: Webhook task results counted as such; the rest ("stale", "superseded") did not send.
_DELIVERY_RESULTS = {
    "delivered": "delivered",
    "retry": "retried",
    "dead": "dead",
    "refused": "refused",
}


def api_request(method: str, status: int | None, seconds: float) -> None:
    """One API request: ``status`` is the HTTP status, ``None`` when no answer came."""
    API_REQUESTS.labels(method, "error" if status is None else str(status)).inc()
    API_DURATION.labels(method).observe(seconds)


def request_settled(outcome: str, status_requests: int | None = None) -> None:
    """A request settled here (once per request: the caller checks it wrote the outcome)."""
    CALLS.labels(outcome).inc()
    if status_requests is not None:
        STATUS_PER_CALL.observe(status_requests)


def webhook_delivery(result: str) -> None:
    label = _DELIVERY_RESULTS.get(result)
    if label is not None:
        WEBHOOK_DELIVERIES.labels(label).inc()


def limit_refused(limit: str) -> None:
    """``limit``: api_rate, destination, prefix, breaker, resend_cooldown, resend_cap,
    key:<name>, prefix_window, budget_day or budget_month."""
    LIMIT_REFUSALS.labels(limit).inc()


def code_checked(reason: str) -> None:
    CODE_CHECKS.labels(reason).inc()


def verification_started(prefix: str) -> None:
    VERIFICATIONS_STARTED.labels(prefix).inc()


def verification_converted(prefix: str) -> None:
    VERIFICATIONS_CONVERTED.labels(prefix).inc()


def fallback_sent() -> None:
    FALLBACKS.inc()


def test_number_called() -> None:
    TEST_CALLS.inc()


class ClusterCollector(Collector):
    """Gauges read from Redis when scraped: the same value on every worker."""

    def __init__(
        self, client: redis.Redis, broker_queues: tuple[str, ...], due_polls_key: str
    ) -> None:
        self._redis = client
        self._queues = broker_queues  # empty: the broker is not this Redis
        self._due_polls_key = due_polls_key

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zcard(INFLIGHT_KEY)
            pipe.zcard(DEAD_KEY)
            pipe.zcard(self._due_polls_key)
            pipe.zcount(self._due_polls_key, "-inf", time.time())
            for queue in self._queues:
                pipe.llen(queue)
            in_flight, dead, scheduled, due, *lengths = pipe.execute()
        except redis.RedisError as exc:
            # A scrape must not fail because Redis is away; the gauges are left out instead.
            log.warning("metrics: cannot read Redis (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "callpass_calls_in_flight", "Requests placed or being placed, not settled", in_flight
        )
        yield GaugeMetricFamily(
            "callpass_webhook_dead_letters", "Webhook events given up on, kept for replay", dead
        )
        yield GaugeMetricFamily(
            "callpass_polls_scheduled", "Polls of placed calls waiting or running", scheduled
        )
        yield GaugeMetricFamily(
            "callpass_polls_due", "Polls past their time and not taken: the runners' backlog", due
        )
        if self._queues:
            queue_length = GaugeMetricFamily(
                "callpass_broker_queue_length",
                "Messages waiting in a broker queue",
                labels=["queue"],
            )
            for queue, length in zip(self._queues, lengths, strict=True):
                queue_length.add_metric([queue], length)
            yield queue_length


def serve_metrics(
    port: int,
    address: str,
    client: redis.Redis,
    broker_queues: tuple[str, ...],
    pool: str,
    due_polls_key: str,
) -> Any:
    """Serve ``/metrics`` on ``address:port``; ``None`` (and a warning) when it cannot."""
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if multiproc_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
        if pool == "prefork":
            log.warning(
                "metrics: the prefork pool counts in its child processes; set "
                "PROMETHEUS_MULTIPROC_DIR to an empty directory to serve their counters "
                "(only the cluster-wide gauges are served now)"
            )
    registry.register(ClusterCollector(client, broker_queues, due_polls_key))
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        # Metrics must never stop a worker: a second worker on one host finds the port taken.
        log.warning(
            "metrics: cannot listen on %s:%d (%s); set CALLPASS_METRICS_PORT to a free port, "
            "or 0 for none",
            address,
            port,
            exc.strerror or type(exc).__name__,
        )
        return None
    log.info("metrics on http://%s:%d/metrics", address, port)
    return server
