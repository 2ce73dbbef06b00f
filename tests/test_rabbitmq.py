"""The integration tests again, with RabbitMQ as the broker (quorum queues, native delayed
delivery for deferred starts); Redis stays the store of records, results and due polls.

Runs when a RabbitMQ answers at ``CALLPASS_TEST_AMQP_URL`` (default: guest on 127.0.0.1:5672,
which this project's CI machine runs); skipped otherwise. The queues get names of their own
and are deleted afterwards, so a shared broker keeps nothing of the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from callpass_producer import enqueue_call, wait_for_pin
from chaos.scenarios import Size, worker_killed
from tests.conftest import TEST_WORKER_ENV, Simulator, start_worker
from tests.helpers import settle, unique_dn
from tests.test_pipeline import (
    test_a_call_without_final_status_settles_unknown_after_the_grace,
    test_a_redelivered_start_call_does_not_dial_again,
    test_each_final_result_settles_with_its_outcome,
    test_one_request_id_enqueued_twice_places_one_call_and_answers_both,
    test_pin_is_readable_before_the_final_outcome,
    test_task_events_show_masked_arguments,
)
from worker.celery_app import celery_config, create_app
from worker.dev.stack import Proc, Stack, answers, delete_queues, wait_until
from worker.pipeline.due_polls import due_polls_key
from worker.settings import load_settings

AMQP_URL = os.environ.get("CALLPASS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

__all__ = [  # the imported tests run here again, against RabbitMQ
    "test_a_call_without_final_status_settles_unknown_after_the_grace",
    "test_a_redelivered_start_call_does_not_dial_again",
    "test_each_final_result_settles_with_its_outcome",
    "test_one_request_id_enqueued_twice_places_one_call_and_answers_both",
    "test_pin_is_readable_before_the_final_outcome",
    "test_task_events_show_masked_arguments",
]


pytestmark = [
    pytest.mark.skipif(not answers(AMQP_URL, 5672), reason=f"no RabbitMQ at {AMQP_URL}"),
    pytest.mark.usefixtures("worker"),
]


@pytest.fixture(scope="module")
def worker_env(redis_url: str, sim: Simulator) -> dict[str, str]:
    return {
        "CALLPASS_REDIS_URL": redis_url,
        "CALLPASS_BROKER_URL": AMQP_URL,
        "CALLPASS_API_URL": sim.url,
        "CALLPASS_QUEUE": f"callpass-test-{uuid.uuid4().hex[:8]}",
        **TEST_WORKER_ENV,
    }


@pytest.fixture(scope="module")
def app(worker_env: dict[str, str]) -> Iterator[Celery]:
    producer = Celery("callpass-test-rabbitmq", set_as_current=False)
    producer.config_from_object(celery_config(load_settings(worker_env)))
    yield producer
    delete_queues(producer)  # leave nothing on the shared broker


@pytest.fixture(scope="module")
def worker(stack: Stack, app: Celery, worker_env: dict[str, str]) -> Iterator[Proc]:
    proc = start_worker(stack, app, worker_env, "rabbit-worker")
    yield proc
    proc.stop()


def test_the_queues_are_quorum_queues_and_polls_wait_in_redis(
    app: Celery, worker: Proc, worker_env: dict[str, str]
) -> None:
    """Polls wait in the due set, to the millisecond, not in the broker's delay queues (which
    round to whole seconds) nor unacked in a worker's memory."""
    queue = next(iter(app.amqp.queues.values()))
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    due = redis.Redis.from_url(worker_env["CALLPASS_REDIS_URL"])
    key = due_polls_key(worker_env["CALLPASS_QUEUE"])
    result = enqueue_call(app, unique_dn("3"), 8)
    assert wait_for_pin(result, timeout_s=10) is not None
    # The first poll is a second away: it waits in the due set until then.
    wait_until(lambda: due.zcard(key) > 0, 5, "a poll waiting in the due set")
    doc = settle(result)
    assert doc["outcome"] == "no_answer" and doc["status_requests"] >= 1
    assert "direct exchange" not in worker.log_path.read_text()


def test_workers_killed_mid_call_lose_nothing_and_call_nobody_twice(tmp_path: Path) -> None:
    """The chaos suite's worker-killed scenario (small size) with RabbitMQ as the broker: a
    killed worker's unacked messages go back to the queue at once, and the request records
    keep a redelivered start from dialing again."""
    size = Size.get("small")
    row = worker_killed(tmp_path, size, broker_url=AMQP_URL)
    assert row.notes.startswith(f"{size.kills} SIGKILLs")
    assert (row.lost, row.double_dials, row.problems) == (0, 0, [])
    assert row.settled == row.requests > 0


def test_task_events_go_out_without_confirms_on_the_connection_the_worker_established(
    worker_env: dict[str, str],
) -> None:
    """Celery's worker connects the event connection before the dispatcher gets it; the
    dispatcher's channels still publish without waiting for an ack (see
    worker.broker.event_dispatcher), while the app's own messages keep their confirms."""
    worker_app = create_app(load_settings(worker_env))
    connection = worker_app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1)
        dispatcher = worker_app.events.Dispatcher(connection, hostname="t", enabled=True)
        channel = dispatcher.producer.channel
        assert channel.basic_publish != channel.basic_publish_confirm
        dispatcher.send("worker-heartbeat")  # returns: nothing waits for an ack
        with worker_app.connection_for_write() as other:
            assert (
                other.default_channel.basic_publish == other.default_channel.basic_publish_confirm
            )
    finally:
        connection.release()
