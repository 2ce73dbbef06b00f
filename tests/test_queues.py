"""Queues by urgency: code checks before starts, starts before polls and deliveries.

A Redis broker is asked for the queues in that order (kombu's ``priority`` queue order), so a
person checking a code does not wait behind a burst of starts, and a burst of starts does not
wait behind the polls of calls already ringing.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from celery import Celery

from callpass_producer import enqueue_call, verify_code
from callpass_producer.contracts.names import START_TASK
from tests.conftest import Simulator, start_worker
from tests.helpers import unique_dn
from worker.celery_app import celery_config, create_app
from worker.dev.stack import Stack, wait_until
from worker.pipeline.due_polls import DuePolls, due_polls_key
from worker.process.wiring import CeleryDispatcher
from worker.settings import load_settings

NOWHERE = {"CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens; nothing connects


def test_a_worker_consumes_the_queues_most_urgent_first() -> None:
    settings = load_settings({**NOWHERE, "CALLPASS_QUEUE": "calls"})
    app = create_app(settings)
    assert [q.name for q in app.conf.task_queues] == [
        "calls.codes",
        "calls",
        "calls.polls",
        "calls.webhooks",
    ]
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"


def test_rabbitmq_has_no_queue_order_to_set() -> None:
    config = celery_config(load_settings({**NOWHERE, "CALLPASS_BROKER_URL": "amqp://h:5672//"}))
    assert "queue_order_strategy" not in config["broker_transport_options"]


class _Recorder(Celery):
    def __init__(self) -> None:
        super().__init__("recorder", set_as_current=False)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((name, kwargs))


def test_polls_wait_in_the_queues_due_set_and_starts_go_to_the_calls_queue(
    redis_url: str,
) -> None:
    app = _Recorder()
    client = redis.Redis.from_url(redis_url)
    queue = f"calls-{uuid.uuid4().hex[:6]}"  # a due set no worker of the suite runs
    dispatcher = CeleryDispatcher(app, queue, DuePolls(client, due_polls_key(queue)))
    before = time.time()
    dispatcher.send_poll("r:1", "token", 2.0)
    dispatcher.resend_start("t-1", {"dn": "79991234567"}, time.time(), 1, 1.0)
    assert [(name, kw["queue"]) for name, kw in app.sent] == [(START_TASK, queue)]
    due_at = client.zscore(due_polls_key(queue), "token:r:1")
    assert due_at is not None and before + 2.0 <= due_at <= time.time() + 2.0
    client.delete(due_polls_key(queue))


def test_a_code_check_is_answered_before_the_starts_queued_ahead_of_it(
    stack: Stack, worker_env: dict[str, str]
) -> None:
    queue = f"urgency-{uuid.uuid4().hex[:6]}"
    env = {**worker_env, "CALLPASS_QUEUE": queue}
    producer = Celery("urgency-producer", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(env)))
    # Two threads: the starts queued below take seconds to get through.
    proc = start_worker(stack, producer, env, queue, "--concurrency", "2")
    try:
        assert "not their polls" not in proc.log_path.read_text()  # it takes every queue
        results = [enqueue_call(producer, unique_dn("3"), 2) for _ in range(120)]
        check = verify_code(producer, f"unknown-{uuid.uuid4().hex[:6]}", "1234", timeout_s=30)
        placed_before = sum(1 for r in results if r.state in ("PLACED", "SUCCESS"))
        assert check["reason"] == "unknown_request"
        # Taken as soon as a thread was free: behind the few starts the worker had taken.
        assert placed_before < 60, f"{placed_before} of 120 starts went first"
        wait_until(lambda: all(r.state == "SUCCESS" for r in results), 120, "every start settled")
    finally:
        proc.stop()


def test_no_poll_runs_while_starts_wait(stack: Stack, worker_env: dict[str, str]) -> None:
    """Starts that take seconds to get through: the polls of the calls placed first fall due
    meanwhile, and wait until the last start is placed."""
    proc_sim, url = stack.start_simulator("--latency-ms", "100", "--seed", "3")
    sim = Simulator(url)
    queue = f"starts-first-{uuid.uuid4().hex[:6]}"
    env = {**worker_env, "CALLPASS_QUEUE": queue, "CALLPASS_API_URL": url}
    producer = Celery("starts-first-producer", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(env)))
    proc = start_worker(stack, producer, env, queue, "--concurrency", "2")
    try:
        # 60 starts of 100 ms on two threads: 3 s; each call's first poll is due after 1 s.
        results = [enqueue_call(producer, unique_dn("3"), 10) for _ in range(60)]
        wait_until(lambda: all(r.state == "SUCCESS" for r in results), 90, "every call settled")
        last_start = max(sim.arrivals("start_v2"))
        early = [at for at in sim.arrivals("status") if at < last_start]
        # By arrival order at the API, not by when this test looks: a thread with no start
        # left may take a poll while the other places the last call; interleaved, the polls
        # due during those 3 s would be dozens.
        assert len(early) <= 2, f"{len(early)} status requests before the last start arrived"
    finally:
        proc.stop()
        proc_sim.stop()


def test_a_worker_that_takes_starts_but_not_their_polls_says_so(
    stack: Stack, worker_env: dict[str, str]
) -> None:
    queue = f"no-polls-{uuid.uuid4().hex[:6]}"
    env = {**worker_env, "CALLPASS_QUEUE": queue, "CALLPASS_LOG_LEVEL": "WARNING"}
    producer = Celery("no-polls-producer", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(env)))
    proc = start_worker(stack, producer, env, queue, "-Q", f"{queue}.codes,{queue}")
    try:
        wait_until(
            lambda: f"not their polls from {queue}.polls" in proc.log_path.read_text(),
            30,
            "the warning about the poll queue",
        )
    finally:
        proc.stop()
