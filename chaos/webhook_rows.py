"""The webhook rows of the chaos suite: a receiver down, a worker killed while deliveries
wait, and a receiver that trickles its answer while calls run."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

from chaos.harness import Harness, Row
from chaos.receiver import TRICKLE_EVERY_S, Receiver
from chaos.sizes import SETTLE_S, Size
from worker.dev.stack import wait_until

__all__ = ["webhook_receiver_down", "webhook_receiver_trickles", "webhook_worker_killed"]

WEBHOOK_SECRET = "whsec_Y2hhb3Mtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"  # noqa: S105 - test only


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
