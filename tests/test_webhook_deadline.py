"""A receiver that trickles its answer cannot hold a worker's threads: each delivery attempt
has a total deadline, and only a few deliveries run at once, so calls are still placed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from chaos.receiver import Delivery, Receiver
from tests.conftest import TEST_WORKER_ENV, WEBHOOK_SECRETS, Simulator, start_worker
from tests.test_pipeline import settle, unique_dn
from worker.devstack import Stack, wait_until
from worker.producer import enqueue_call
from worker.webhooks import event_id_for

#: The suite's workers derive their deadline from CALLPASS_WEBHOOK_TIMEOUT_S (twice it).
SUITE_DEADLINE_S = 2 * float(TEST_WORKER_ENV["CALLPASS_WEBHOOK_TIMEOUT_S"])
#: Past the deadline: the receiver notices a hang-up only at its next byte (0.6 s), twice.
SLACK_S = 3.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(WEBHOOK_SECRETS)
    yield r
    r.stop()


def attempts_of(
    receiver: Receiver, webhook_id: str, count: int, timeout_s: float
) -> list[Delivery]:
    def enough() -> list[Delivery] | None:
        got = [d for d in receiver.received("/trickle/") if d.webhook_id == webhook_id]
        return got if len(got) >= count else None

    return wait_until(enough, timeout_s, f"{count} attempts of {webhook_id}")


def test_a_trickling_receiver_is_cut_off_at_the_deadline_and_tried_again(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    request_id = f"trickle-{uuid.uuid4()}"
    result = enqueue_call(
        app, unique_dn("1"), 3, request_id=request_id, webhook_url=receiver.url + "/trickle/1"
    )
    settle(result)
    completed_id = event_id_for("call.completed", request_id, result.id)
    # Without a total deadline the first attempt lasts as long as the receiver trickles (90 s).
    first, second = attempts_of(receiver, completed_id, 2, 30)[:2]
    assert first.status == 0, "the worker waited for the whole trickled answer"
    assert first.ended_at - first.received_at <= SUITE_DEADLINE_S + SLACK_S
    # Counted as a failed attempt: the next one comes after the schedule's delay (1 s).
    assert second.status == 200
    assert second.received_at - first.received_at >= 1.0
    log = worker.log_path.read_text(errors="replace")
    assert f"webhook {completed_id}" in log
    assert f"{SUITE_DEADLINE_S:g} s deadline" in log


def test_calls_are_placed_promptly_while_deliveries_trickle(
    stack: Stack,
    app: Celery,
    worker_env: dict[str, str],
    sim: Simulator,
    receiver: Receiver,
) -> None:
    # Four pool threads; without a bound, four trickling deliveries would take every one.
    queue = f"trickle-{uuid.uuid4().hex[:8]}"
    place_deadline_s = 10.0
    env = {
        **worker_env,
        "CALLPASS_QUEUE": queue,
        "CALLPASS_WEBHOOK_CONCURRENCY": "2",
        "CALLPASS_WEBHOOK_DEADLINE_S": "20",
        "CALLPASS_PLACE_DEADLINE_S": str(place_deadline_s),
    }
    proc = start_worker(stack, app, env, queue, "--concurrency", "4")
    try:
        for _ in range(4):  # eight events, each trickling on its first attempt
            enqueue_call(
                app, unique_dn("1"), 3, webhook_url=receiver.url + "/trickle/1", queue=queue
            )
        wait_until(lambda: receiver.trickling >= 2, 30, "deliveries trickling")
        enqueued_at = time.time()
        probes = {f"probe-{uuid.uuid4()}": "" for _ in range(6)}
        results = [
            enqueue_call(app, unique_dn("3"), 3, request_id=request_id, queue=queue)
            for request_id in probes
        ]
        wait_until(
            lambda: all(sim.starts_for(request_id) for request_id in probes),
            place_deadline_s,
            "every call placed while deliveries trickle",
        )
        started = {c["request_id"]: c["started_at"] for c in sim.calls()}
        assert all(started[r] - enqueued_at < place_deadline_s for r in probes)
        assert receiver.trickling >= 1, "no delivery was in flight while the calls were placed"
        assert receiver.most_trickling <= 2
        assert all(settle(r)["outcome"] != "expired" for r in results)
    finally:
        proc.stop()
