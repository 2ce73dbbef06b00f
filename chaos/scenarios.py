"""The scenarios of the chaos suite; each returns one row of the table."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from chaos.api_partitions import api_cut_long, api_cut_short
from chaos.harness import Harness, Row
from chaos.hostile_row import hostile_messages
from chaos.partitions import one_worker_cut_from_redis, workers_cut_from_redis
from chaos.poll_rows import poll_runners_killed
from chaos.sizes import SETTLE_S, Size
from chaos.verification_rows import verifications_with_kills
from chaos.webhook_rows import (
    webhook_receiver_down,
    webhook_receiver_trickles,
    webhook_worker_killed,
)
from worker.dev.stack import child_env, delete_queues, wait_until

__all__ = ["PARTITION_ROWS", "SCENARIOS", "Size"]


def worker_killed(run_dir: Path, size: Size, broker_url: str = "") -> Row:
    """SIGKILL workers at random moments (during starts and polls) and restart them.

    With ``broker_url`` (RabbitMQ), the broker carries the messages on queues of this run's
    own, deleted afterwards; Redis still holds the records and results."""
    began = time.monotonic()
    on_broker = (
        {"CALLPASS_BROKER_URL": broker_url, "CALLPASS_QUEUE": f"chaos-{uuid.uuid4().hex[:8]}"}
        if broker_url
        else {}
    )
    h = Harness(run_dir, workers=3, sim_args=("--latency-ms", "150"), worker_env=on_broker)
    try:
        duration = max(10.0, size.killed_requests / 25)
        moments = sorted(h.rng.uniform(1.0, duration + 3.0) for _ in range(size.kills))
        killed: list[str] = []

        def during(elapsed: float) -> None:
            while moments and elapsed >= moments[0]:
                moments.pop(0)
                name = h.rng.choice(sorted(h.workers))
                h.kill_worker(name, signal.SIGKILL)
                killed.append(name)
                h.start_worker(name)

        h.enqueue_over(size.killed_requests, duration, during)
        while moments:  # kills left after the last enqueue: during polls
            time.sleep(max(0.0, moments[0] - (time.monotonic() - began)))
            during(float("inf"))
        notes = f"{len(killed)} SIGKILLs + restarts"
        name = "worker killed (RabbitMQ)" if broker_url else "worker killed"
        return h.verdict(name, SETTLE_S, notes, began)
    finally:
        h.close()
        if broker_url:
            delete_queues(h.app)


def redis_restarted(run_dir: Path, size: Size) -> Row:
    """Restart the append-only Redis with SIGTERM, then crash it (SIGKILL, fsync always)."""
    began = time.monotonic()
    h = Harness(run_dir, workers=2, redis_fsync="always")
    try:
        duration = max(8.0, size.redis_requests / 20)
        h.enqueue_over(size.redis_requests // 2, duration / 2)
        h.restart_redis(signal.SIGTERM)
        h.enqueue_over(size.redis_requests - size.redis_requests // 2, duration / 2)
        h.restart_redis(signal.SIGKILL)
        notes = "SIGTERM restart, then SIGKILL restart (appendfsync always)"
        return h.verdict("Redis restarted", SETTLE_S, notes, began)
    finally:
        h.close()


def api_faults(run_dir: Path, size: Size) -> Row:
    """5xx, 429 + Retry-After, latency spikes, resets and malformed JSON on ~20% of requests."""
    began = time.monotonic()
    h = Harness(run_dir, workers=2)
    try:
        h.set_faults(
            server_error_rate=0.04,
            unavailable_rate=0.03,
            rate_limit_rate=0.04,
            retry_after_s=1,
            malformed_rate=0.03,
            drop_rate=0.03,
            spike_rate=0.03,
            spike_ms=2500,
        )
        h.enqueue_over(size.fault_requests, max(8.0, size.fault_requests / 20))
        row = h.verdict("API faults", SETTLE_S, "~20% of API requests faulty", began)
        return row
    finally:
        h.close()


def api_down(run_dir: Path, size: Size) -> Row:
    """The API refuses connections for a while: the breaker holds back, late calls expire."""
    began = time.monotonic()
    deadline_s = min(30.0, size.outage_s / 2)
    h = Harness(run_dir, workers=2, worker_env={"CALLPASS_PLACE_DEADLINE_S": str(deadline_s)})
    try:
        before = h.enqueue(size.outage_requests // 3)  # placed, then polled through the outage
        wait_until(lambda: len(h.calls()) >= len(before), 60, "the first calls placed")
        h.stop_simulator_for(size.outage_s)
        h.enqueue_over(size.outage_requests - size.outage_requests // 3, size.outage_s * 0.8)
        opened = h.log_count("circuit open: API failures")
        notes = (
            f"API down {size.outage_s:g} s, placement deadline {deadline_s:g} s; "
            f"breaker opened {opened}x"
        )
        row = h.verdict("API down", SETTLE_S + size.outage_s, notes, began)
        # A call is never placed late: the simulator's start time against the enqueue time.
        enqueued = {r.request_id: r.enqueued_at for r in h.requests}
        late = [
            c for c in h.calls() if c["started_at"] > enqueued[c["request_id"]] + deadline_s + 1
        ]
        if late:
            row.problems.append(f"{len(late)} calls placed after their placement deadline")
        return row
    finally:
        h.close()


def graceful_shutdown(run_dir: Path, size: Size) -> Row:
    """SIGTERM a worker while polls run and wait; restart it; everything settles."""
    began = time.monotonic()
    h = Harness(run_dir, workers=2)
    try:
        h.enqueue(size.shutdown_requests, timeout=5)
        enough = max(1, size.shutdown_requests // 10)
        waiting = wait_until(
            lambda: (n := h.polls_waiting()) >= enough and n, 30, "polls waiting in Redis"
        )
        running = h.polls_running()
        h.kill_worker("w0", signal.SIGTERM)
        h.start_worker("w0")
        notes = f"SIGTERM to a worker with {waiting} polls due in Redis, {running} running"
        return h.verdict("graceful shutdown", SETTLE_S, notes, began)
    finally:
        h.close()


def rate_limit(run_dir: Path, size: Size) -> Row:
    """Three workers share one API rate limit: the API never sees more than it (+10%)."""
    began = time.monotonic()
    limit = 20
    h = Harness(run_dir, workers=3, worker_env={"CALLPASS_API_RATE_LIMIT_PER_S": str(limit)})
    try:
        h.enqueue(size.rate_requests)  # all at once: the workers would go far faster unbounded
        row = h.verdict("shared rate limit", SETTLE_S, "", began)
        arrivals = sorted(h.arrivals())
        busiest, j = 0, 0
        for i, start in enumerate(arrivals):  # any one-second window, by arrival at the API
            while j < len(arrivals) and arrivals[j] < start + 1.0:
                j += 1
            busiest = max(busiest, j - i)
        if busiest > limit * 1.1:
            row.problems.append(f"the API saw {busiest} requests in one second (limit {limit})")
        row.notes = (
            f"3 workers, limit {limit}/s, {len(arrivals)} API requests; busiest second at the "
            f"API: {busiest}" + row.notes
        )
        return row
    finally:
        h.close()


def bad_input(run_dir: Path, size: Size) -> Row:
    """Arbitrary payloads from a foreign producer (hypothesis): each settles ``invalid``."""
    began = time.monotonic()
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "property-report.txt"
    env = child_env(
        {
            "CALLPASS_PROPERTY_EXAMPLES": str(size.property_examples),
            "CALLPASS_PROPERTY_REPORT": str(report),
        }
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(root / "tests" / "test_properties.py")],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    text = report.read_text() if report.exists() else ""
    match = re.search(r"tried: (\d+)", text)
    tried = int(match.group(1)) if match else 0
    ok = proc.returncode == 0
    row = Row(
        scenario="bad input",
        requests=tried,
        settled=tried if ok else 0,
        lost=0 if ok else tried,
        double_dials=0,
        unknown=0,
        notes=f"{tried} payloads tried (hypothesis), each settled invalid naming field and rule, "
        f"no API call, worker alive; {time.monotonic() - began:.0f} s",
    )
    if not ok:
        row.problems.append("property tests failed:\n" + proc.stdout[-3000:])
    return row


SCENARIOS: dict[str, Callable[[Path, Size], Row]] = {
    "worker-killed": worker_killed,
    "redis-restarted": redis_restarted,
    "api-faults": api_faults,
    "api-down": api_down,
    "graceful-shutdown": graceful_shutdown,
    "poll-runners-killed": poll_runners_killed,
    "rate-limit": rate_limit,
    "bad-input": bad_input,
    "webhook-receiver-down": webhook_receiver_down,
    "webhook-worker-killed": webhook_worker_killed,
    "webhook-receiver-trickles": webhook_receiver_trickles,
    "workers-cut-from-redis": workers_cut_from_redis,
    "one-worker-cut-from-redis": one_worker_cut_from_redis,
    "workers-cut-from-api": api_cut_short,
    "workers-cut-from-api-long": api_cut_long,
    "hostile-messages": hostile_messages,
    "verifications-killed": verifications_with_kills,
}

#: Rows that build network namespaces (chaos/netns.py): they skip where the machine cannot.
PARTITION_ROWS = {"workers-cut-from-redis", "one-worker-cut-from-redis"}
PARTITION_ROWS |= {"workers-cut-from-api", "workers-cut-from-api-long"}
