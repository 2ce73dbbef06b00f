"""The scenarios of the chaos suite; each returns one row of the table."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chaos.api_partitions import api_cut_long, api_cut_short
from chaos.harness import Harness, Row, delete_queues
from chaos.hostile_row import hostile_messages
from chaos.partitions import one_worker_cut_from_redis, workers_cut_from_redis
from chaos.receiver import TRICKLE_EVERY_S, Receiver
from worker.devstack import child_env, wait_until

__all__ = ["PARTITION_ROWS", "SCENARIOS", "Size"]

WEBHOOK_SECRET = "whsec_Y2hhb3Mtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"  # noqa: S105 - test only


@dataclass(frozen=True)
class Size:
    """How big a run is: ``full`` for ``make chaos``, ``small`` inside ``make test``."""

    name: str
    killed_requests: int
    kills: int
    redis_requests: int
    fault_requests: int
    outage_requests: int
    outage_s: float
    shutdown_requests: int
    rate_requests: int
    property_examples: int
    webhook_requests: int
    receiver_down_s: float
    webhook_kills: int
    # Silent partitions (chaos/partitions.py): appended with defaults, full size.
    partition_requests: int = 160
    redis_cut_s: float = 60.0
    one_worker_cut_s: float = 90.0
    # The API behind a silent cut (chaos/api_partitions.py): shorter and longer than the
    # 30 s placement deadline.
    api_cut_short_s: float = 25.0
    api_cut_long_s: float = 45.0
    trickle_requests: int = 150  # full size (the default)
    # Hostile messages (chaos/hostile_row.py): appended with a default, full size.
    hostile_requests: int = 300

    @classmethod
    def get(cls, name: str) -> Size:
        return SIZES[name]


# A 30 s cut: long enough that an unbounded socket waits ~20 s past the heal for TCP's next
# retransmission (backed off to 25.6 s by then), short enough for make test.
SMALL_PARTITIONS: dict[str, Any] = {
    "partition_requests": 60,
    "redis_cut_s": 30.0,
    "one_worker_cut_s": 30.0,
    "api_cut_short_s": 10.0,
    "api_cut_long_s": 35.0,
}

SIZES = {
    "full": Size("full", 500, 6, 200, 300, 120, 60.0, 150, 200, 10_000, 200, 120.0, 3),
    # make test runs the 2,000-payload property test itself; this row only checks the wiring.
    "small": Size(
        "small",
        60,
        2,
        40,
        60,
        30,
        12.0,
        30,
        50,
        100,
        30,
        8.0,
        1,
        trickle_requests=20,
        **SMALL_PARTITIONS,
    ),
}

# Small sizes of appended fields, one line each so rows added together merge cleanly.
SIZES["small"] = replace(SIZES["small"], hostile_requests=60)

#: Seconds past the last disruption within which every request must have settled.
SETTLE_S = 120.0


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
    """SIGTERM a worker holding in-flight polls; restart it; everything settles."""
    began = time.monotonic()
    h = Harness(run_dir, workers=2)
    try:
        h.enqueue(size.shutdown_requests, timeout=5)
        enough = max(1, size.shutdown_requests // 10)
        held = wait_until(
            lambda: (n := h.scheduled_polls("w0")) >= enough and n, 30, "w0 holding countdown polls"
        )
        h.kill_worker("w0", signal.SIGTERM)
        h.start_worker("w0")
        notes = f"SIGTERM to a worker holding {held} countdown polls"
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


def _webhook_env(schedule: str) -> dict[str, str]:
    return {
        "CALLPASS_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "CALLPASS_WEBHOOK_RETRY_SCHEDULE_S": schedule,
        "CALLPASS_WEBHOOK_TIMEOUT_S": "2",
        "CALLPASS_WEBHOOK_HTTP_HOSTS": "127.0.0.1",
        "CALLPASS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }


def _webhook_row(
    h: Harness, receiver: Receiver, scenario: str, notes: str, began: float, wait_s: float
) -> Row:
    """The calls' row, with every expected event counted at the receiver."""
    row = h.verdict(scenario, SETTLE_S, notes, began)
    expected = h.expected_events(h.documents())

    def all_in() -> bool:
        return expected <= set(receiver.accepted())

    with contextlib.suppress(TimeoutError):  # what is missing is counted below
        wait_until(all_in, wait_s, "every webhook event delivered", interval_s=0.5)
    accepted = receiver.accepted()
    got = receiver.received()
    unsigned = [d for d in got if d.event is None]
    ok = [d for d in got if 200 <= d.status < 300]
    missing = expected - set(accepted)
    duplicates = len(ok) - len({d.webhook_id for d in ok})
    row.lost += len(missing)
    row.problems += [f"event {e} never delivered" for e in sorted(missing)[:5]]
    row.problems += [f"unverified delivery: {d.error}" for d in unsigned[:3]]
    row.seconds = time.monotonic() - began
    calls_summary = row.notes[len(notes) :].rsplit(";", 1)[0]  # without the calls' own time
    row.notes = (
        f"{notes}; events expected {len(expected)}, delivered {len(expected & set(accepted))} "
        f"(unique ids), duplicates {duplicates}, attempts received {len(got)}"
        f"{calls_summary}; {row.seconds:.0f} s"
    )
    return row


def webhook_receiver_down(run_dir: Path, size: Size) -> Row:
    """The webhook receiver is down (connection refused), then comes back: every event
    arrives, signed, under the id it was first sent with."""
    began = time.monotonic()
    # Retries every 10-30 s: a few land during the outage, the rest after it.
    h = Harness(run_dir, workers=2, worker_env=_webhook_env("0,2,10,20,30,30,30,30,30,30"))
    receiver = Receiver([WEBHOOK_SECRET])
    try:
        receiver.stop()
        h.enqueue_over(
            size.webhook_requests,
            min(size.receiver_down_s / 2, 30.0),
            webhook_url=receiver.url + "/ok/down",
        )
        time.sleep(max(0.0, size.receiver_down_s - (time.monotonic() - began)))
        pending = h.redis.zcard("callpass:wh:due")
        receiver.start()
        notes = (
            f"receiver down {size.receiver_down_s:g} s (connection refused), "
            f"{pending} events pending when it came back"
        )
        return _webhook_row(h, receiver, "webhook receiver down", notes, began, 120.0)
    finally:
        receiver.stop()
        h.close()


def webhook_worker_killed(run_dir: Path, size: Size) -> Row:
    """SIGKILL workers while webhook deliveries are pending and in flight: none is lost."""
    began = time.monotonic()
    h = Harness(run_dir, workers=2, worker_env=_webhook_env("0,2,4,8,8,8,8,8"))
    receiver = Receiver([WEBHOOK_SECRET])
    try:
        # Every event fails its first two attempts: deliveries stay pending for seconds.
        url = receiver.url + "/flaky/2/503"
        kills = 0
        for _ in range(size.webhook_kills):
            h.enqueue(size.webhook_requests // size.webhook_kills, webhook_url=url)
            wait_until(lambda: h.redis.zcard("callpass:wh:due") > 0, 30, "pending deliveries")
            h.kill_worker("w0", signal.SIGKILL)
            kills += 1
            h.start_worker("w0")
        notes = f"{kills} SIGKILLs with deliveries pending; each event refused twice first"
        return _webhook_row(h, receiver, "webhook worker killed", notes, began, 120.0)
    finally:
        receiver.stop()
        h.close()


#: The trickling row's attempt deadline and placement deadline, in seconds.
TRICKLE_DEADLINE_S = 2.0
TRICKLE_PLACE_DEADLINE_S = 10.0


def webhook_receiver_trickles(run_dir: Path, size: Size) -> Row:
    """The receiver trickles its answer to the first attempt of every event (a byte every
    0.6 s, against a 1 s time-out) while calls run: each attempt ends by its deadline, the
    next one delivers the event, and no call waits past its placement deadline."""
    began = time.monotonic()
    env = {
        **_webhook_env("0,1,2,5,10,10,10,10"),
        "CALLPASS_WEBHOOK_TIMEOUT_S": "1",
        "CALLPASS_WEBHOOK_DEADLINE_S": f"{TRICKLE_DEADLINE_S:g}",
        "CALLPASS_PLACE_DEADLINE_S": f"{TRICKLE_PLACE_DEADLINE_S:g}",
    }
    h = Harness(run_dir, workers=2, worker_env=env)
    receiver = Receiver([WEBHOOK_SECRET])
    try:
        url = receiver.url + "/trickle/1"
        h.enqueue_over(size.trickle_requests, max(8.0, size.trickle_requests / 10), webhook_url=url)
        notes = (
            f"first attempt of each event trickled (a byte every {TRICKLE_EVERY_S:g} s), "
            f"deadline {TRICKLE_DEADLINE_S:g} s, 4 deliveries per worker"
        )
        row = _webhook_row(h, receiver, "trickling webhook receiver", notes, began, 180.0)
        _check_trickles(h, receiver, row)
        return row
    finally:
        receiver.stop()
        h.close()


def _check_trickles(h: Harness, receiver: Receiver, row: Row) -> None:
    """Every attempt ended by its deadline (as the receiver saw the worker hang up), and no
    call expired or was placed after its placement deadline."""
    got = receiver.received()
    cut = sum(1 for d in got if d.status == 0)  # the worker hung up mid-answer
    now = time.time()
    # Ended attempts, and those the receiver still trickles to (a worker waiting on).
    lasted = [d.ended_at - d.received_at for d in got]
    lasted += [now - began for began in receiver.trickling_since()]
    longest = max(lasted, default=0.0)
    # Generous: a loaded machine records the hang-up a little late.
    over = [s for s in lasted if s > TRICKLE_DEADLINE_S + 3.0]
    if over:
        row.problems.append(
            f"{len(over)} attempts lasted past the {TRICKLE_DEADLINE_S:g} s deadline "
            f"(longest {longest:.1f} s)"
        )
    expired = sum(1 for d in h.documents().values() if d["outcome"] == "expired")
    if expired:
        row.problems.append(f"{expired} calls expired while deliveries trickled")
    enqueued = {r.request_id: r.enqueued_at for r in h.requests}
    late = [
        c
        for c in h.calls()
        if c["started_at"] > enqueued[c["request_id"]] + TRICKLE_PLACE_DEADLINE_S
    ]
    if late:
        row.problems.append(f"{len(late)} calls placed after their placement deadline")
    row.notes += (
        f"; attempts cut off {cut}, longest {longest:.1f} s, at most {receiver.most_trickling} "
        f"trickling at once; expired {expired}, placed late {len(late)}"
    )


SCENARIOS: dict[str, Callable[[Path, Size], Row]] = {
    "worker-killed": worker_killed,
    "redis-restarted": redis_restarted,
    "api-faults": api_faults,
    "api-down": api_down,
    "graceful-shutdown": graceful_shutdown,
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
}

#: Rows that build network namespaces (chaos/netns.py): they skip where the machine cannot.
PARTITION_ROWS = {"workers-cut-from-redis", "one-worker-cut-from-redis"}
PARTITION_ROWS |= {"workers-cut-from-api", "workers-cut-from-api-long"}
