"""What operators read: the Prometheus endpoint, JSON log lines and the liveness heartbeat,
from a real worker after a run whose every call the test knows."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery

from callpass_producer import enqueue_call
from tests.conftest import Simulator, start_worker
from tests.helpers import callpass, settle, unique_dn
from worker.dev.stack import Stack, free_port, wait_until

QUEUE = "observed"
#: Last digit → outcome at the simulator (see simulator/calls.py), with each call's timeout.
RUN = [("1", 3), ("1", 3), ("2", 3), ("3", 2), ("9", 3)]

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(name, labels): value}."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
            samples[(name, pairs)] = float(value)
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory,
    stack: Stack,
    app: Celery,
    sim: Simulator,
    worker_env: dict[str, str],
    redis_url: str,
) -> Iterator[dict[str, Any]]:
    """One worker with metrics, JSON logs and a heartbeat file, after a known run."""
    port = free_port()
    heartbeat = tmp_path_factory.mktemp("health") / "heartbeat"
    env = {
        "CALLPASS_METRICS_PORT": str(port),
        "CALLPASS_LOG_FORMAT": "json",
        "CALLPASS_HEARTBEAT_FILE": str(heartbeat),
        "CALLPASS_ALLOWED_PREFIXES": "7999",
    }
    proc = start_worker(stack, app, {**worker_env, **env, "CALLPASS_QUEUE": QUEUE}, QUEUE)
    try:
        calls = [
            enqueue_call(app, unique_dn(digit), timeout, queue=QUEUE) for digit, timeout in RUN
        ]
        refused = enqueue_call(app, "78120000001", 3, queue=QUEUE)  # outside the prefixes
        docs = [settle(result) for result in calls]
        refused_doc = settle(refused)
        client = redis.Redis.from_url(redis_url)
        # Counters move after the result is written: wait until the last settle is counted.
        wait_until(
            lambda: (
                sum(v for (n, _), v in scrape(port).items() if n == "callpass_calls_total")
                == len(docs) + 1
            ),
            10,
            "every settled call counted",
        )
        in_flight_before = client.zcard("callpass:inflight")
        samples = scrape(port)
        in_flight_after = client.zcard("callpass:inflight")
        health = callpass("healthcheck", env={**env, "CALLPASS_REDIS_URL": redis_url})
        stale = callpass(
            "healthcheck", "--max-age-s", "0", env={**env, "CALLPASS_REDIS_URL": redis_url}
        )
        yield {
            "docs": docs,
            "refused": refused_doc,
            "samples": samples,
            "in_flight": (in_flight_before, in_flight_after),
            "dead": client.zcard("callpass:wh:dead"),
            "log": Path(proc.log_path).read_text(),
            "health": health,
            "stale": stale,
            "sim": sim,
        }
    finally:
        proc.stop()


def test_calls_by_outcome_match_the_run(observed: dict[str, Any]) -> None:
    samples = observed["samples"]
    expected = Counter(doc["outcome"] for doc in observed["docs"])
    expected["invalid"] += 1  # the number outside CALLPASS_ALLOWED_PREFIXES
    counted = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "callpass_calls_total"
    }
    assert counted == expected
    assert sample(samples, "callpass_limit_refusals_total", limit="prefix") == 1


def test_api_requests_match_what_the_simulator_received(observed: dict[str, Any]) -> None:
    samples, docs, sim = observed["samples"], observed["docs"], observed["sim"]
    stats = sim.stats()
    assert sample(
        samples, "callpass_api_requests_total", method="start_async", status="200"
    ) == sum(stats["starts_by_request"].get(doc["request_id"], 0) for doc in docs)
    status_requests = sum(stats["status_by_callid"][doc["callid"]] for doc in docs)
    assert status_requests == sum(doc["status_requests"] for doc in docs) > 0
    assert sample(samples, "callpass_api_requests_total", method="status", status="200") == (
        status_requests
    )
    # One observation per placed call, of its status requests; every request timed.
    assert sample(samples, "callpass_status_requests_per_call_count") == len(docs)
    assert sample(samples, "callpass_status_requests_per_call_sum") == status_requests
    assert sample(samples, "callpass_api_request_duration_seconds_count", method="status") == (
        status_requests
    )


def test_cluster_gauges_read_redis(observed: dict[str, Any]) -> None:
    samples = observed["samples"]
    before, after = observed["in_flight"]
    assert min(before, after) <= sample(samples, "callpass_calls_in_flight") <= max(before, after)
    assert sample(samples, "callpass_webhook_dead_letters") == observed["dead"]
    assert sample(samples, "callpass_broker_queue_length", queue=QUEUE) == 0
    assert ("callpass_broker_queue_length", frozenset({("queue", f"{QUEUE}.webhooks")})) in samples
    # Polls wait in Redis, not in a queue: scheduled ones (the unsettled calls' chains) and the
    # runners' backlog, which is never more than what is scheduled.
    assert 0 <= sample(samples, "callpass_polls_due") <= sample(samples, "callpass_polls_scheduled")
    assert sample(samples, "callpass_polls_scheduled") <= max(before, after)


def test_json_log_lines_carry_the_request_ids(observed: dict[str, Any]) -> None:
    lines = []
    for raw in observed["log"].splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    assert lines, "no JSON log lines"
    for doc in observed["docs"]:
        own = [line for line in lines if line.get("request_id") == doc["request_id"]]
        # The start's lines name its task; once placed, every line (the polls') names the call.
        settled = [line for line in own if "settled" in line["message"]]
        assert settled and all(line["callid"] == doc["callid"] for line in settled)
        placed = [line for line in own if line["message"].startswith("call ")]
        assert placed and placed[0]["task_id"] == doc["request_id"]  # the start_call task id
        assert not any(doc["pin"] in line["message"] for line in own)


def test_healthcheck_reads_the_heartbeat(observed: dict[str, Any]) -> None:
    assert observed["health"].returncode == 0, observed["health"].stderr
    assert observed["stale"].returncode == 1
    assert "last heartbeat" in observed["stale"].stderr


def test_prefork_pool_counts_its_children_with_the_multiprocess_directory(
    tmp_path: Path, stack: Stack, app: Celery, worker_env: dict[str, str]
) -> None:
    """Under prefork the pool's children do the work: the worker serves their counters from
    prometheus-client's multiprocess directory."""
    port, queue = free_port(), "observed-prefork"
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {
        **worker_env,
        "CALLPASS_QUEUE": queue,
        "CALLPASS_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "CALLPASS_WORKER_POOL": "prefork",
    }
    proc = start_worker(stack, app, env, queue, "--concurrency", "2")
    try:
        docs = [settle(enqueue_call(app, unique_dn(d), 3, queue=queue)) for d in ("1", "2", "2")]
        expected = Counter(doc["outcome"] for doc in docs)

        def counted() -> dict[str, float]:
            return {
                dict(labels)["outcome"]: value
                for (name, labels), value in scrape(port).items()
                if name == "callpass_calls_total"
            }

        wait_until(lambda: counted() == expected, 10, "the children's counts served")
        samples = scrape(port)
        assert (
            sample(samples, "callpass_api_requests_total", method="start_async", status="200") == 3
        )
        log = proc.log_path.read_text()
        assert "(prefork)" in log  # the banner: the pool really is prefork
        assert "prefork pool counts in its child processes" not in log
    finally:
        proc.stop()
