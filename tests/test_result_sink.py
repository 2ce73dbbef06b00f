"""The result sink against a real Redis: Celery's format, one script per write, an outcome
never buried by PLACED info, and producers waiting on the key's channel told."""

from __future__ import annotations

import json
import threading
import time

import redis
from celery import Celery

from worker.process.result_sink import CeleryResultSink


def producer_app(redis_url: str) -> Celery:
    app = Celery("sink-test", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(result_serializer="json", result_accept_content=["json"], result_expires=600)
    return app


def test_placed_info_reads_as_celery_writes_it(redis_url: str) -> None:
    app = producer_app(redis_url)
    CeleryResultSink(app).publish_placed("sink-t1", {"callid": "c-1", "pin": "1234"})
    result = app.AsyncResult("sink-t1")
    assert (result.state, result.info) == ("PLACED", {"callid": "c-1", "pin": "1234"})
    assert 0 < redis.Redis.from_url(redis_url).ttl("celery-task-meta-sink-t1") <= 600


def test_an_outcome_is_never_replaced_by_placed_info(redis_url: str) -> None:
    app, sink = producer_app(redis_url), CeleryResultSink(producer_app(redis_url))
    sink.publish_placed("sink-t2", {"callid": "c-1", "pin": "1234"})
    sink.publish_outcome("sink-t2", {"outcome": "busy"})
    sink.publish_placed("sink-t2", {"callid": "c-2", "pin": "9999"})
    result = app.AsyncResult("sink-t2")
    assert (result.state, result.result) == ("SUCCESS", {"outcome": "busy"})
    assert result.date_done is not None


def test_the_first_outcome_stays(redis_url: str) -> None:
    # As with Celery's store_result: a later answer (a redelivery refused after the record
    # expired, say) never replaces what a producer may already have read.
    app, sink = producer_app(redis_url), CeleryResultSink(producer_app(redis_url))
    sink.publish_outcome("sink-t3", {"outcome": "busy", "callid": "c-3"})
    sink.publish_outcome("sink-t3", {"outcome": "expired"})
    assert app.AsyncResult("sink-t3").result == {"outcome": "busy", "callid": "c-3"}


def test_each_thread_writes_through_its_own_backend(redis_url: str) -> None:
    app, sink = producer_app(redis_url), CeleryResultSink(producer_app(redis_url))
    threads = [
        threading.Thread(target=sink.publish_placed, args=(f"sink-th-{i}", {"callid": f"c-{i}"}))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [app.AsyncResult(f"sink-th-{i}").info for i in range(8)] == [
        {"callid": f"c-{i}"} for i in range(8)
    ]


def test_a_value_that_is_not_celery_meta_is_overwritten(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("celery-task-meta-sink-t4", b"\x80not json")
    CeleryResultSink(producer_app(redis_url)).publish_placed("sink-t4", {"callid": "c-4"})
    assert json.loads(client.get("celery-task-meta-sink-t4") or b"")["status"] == "PLACED"


def test_each_write_is_published_on_the_key_channel(redis_url: str) -> None:
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("celery-task-meta-sink-t5")
    try:
        CeleryResultSink(producer_app(redis_url)).publish_placed("sink-t5", {"callid": "c-5"})
        deadline, message = time.monotonic() + 5, None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
        assert message is not None
        assert json.loads(message["data"])["result"] == {"callid": "c-5"}
    finally:
        pubsub.close()


def test_placed_info_is_read_back_as_written_and_anything_else_is_none(redis_url: str) -> None:
    client, sink = redis.Redis.from_url(redis_url), CeleryResultSink(producer_app(redis_url))
    sink.publish_placed("sink-r1", {"callid": "c-1", "pin": "1234"})
    assert sink.read_placed("sink-r1") == {"callid": "c-1", "pin": "1234"}
    sink.publish_outcome("sink-r1", {"outcome": "busy", "callid": "c-1", "pin": "1234"})
    assert sink.read_placed("sink-r1") == {"outcome": "busy", "callid": "c-1", "pin": "1234"}
    client.set("celery-task-meta-sink-r2", b"\x80not json")
    client.set("celery-task-meta-sink-r3", b'["a list"]')
    client.set("celery-task-meta-sink-r4", b'{"status": "FAILURE", "result": {"x": 1}}')
    assert [sink.read_placed(t) for t in ("sink-r2", "sink-r3", "sink-r4", "sink-none", "")] == [
        None
    ] * 5
