"""Every Redis client gives up on a silent Redis within seconds, and a write retried after a
lost reply is not mistaken for a write that lost (the chaos partition rows cut real links)."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
import redis

from worker.celery_app import celery_config
from worker.pipeline.insist import insist
from worker.pipeline.store import RequestStore
from worker.process.wiring import records_redis
from worker.settings import load_settings


def test_broker_backend_and_records_have_time_outs_keepalive_and_no_retry() -> None:
    config = celery_config(load_settings({"CALLPASS_REDIS_URL": "redis://127.0.0.1:1/0"}))
    broker = config["broker_transport_options"]
    assert 0 < broker["socket_timeout"] <= 10
    assert 0 < broker["socket_connect_timeout"] <= 5
    assert broker["socket_keepalive"] is True
    assert broker["socket_keepalive_options"][socket.TCP_KEEPIDLE] <= 30
    assert broker["socket_keepalive_options"][socket.TCP_USER_TIMEOUT] > 0
    assert 0 < broker["health_check_interval"] <= 10
    assert broker["retry_on_timeout"] is False
    assert 0 < config["redis_socket_timeout"] <= 10
    assert 0 < config["redis_socket_connect_timeout"] <= 5
    assert config["redis_socket_keepalive"] is True
    assert config["redis_retry_on_timeout"] is False
    kwargs = records_redis("redis://127.0.0.1:1/0").connection_pool.connection_kwargs
    assert 0 < kwargs["socket_timeout"] <= 10
    assert kwargs["socket_keepalive"] is True
    assert kwargs["retry"].get_retries() == 0  # a timed-out script is never run again


class LostFirstReply:
    """Runs the script, then loses its reply once, as a timed-out socket would."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.lost = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.script(*args, **kwargs)
        if self.lost == 0:
            self.lost += 1
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return result


@pytest.fixture
def store(redis_url: str) -> RequestStore:
    return RequestStore(redis.Redis.from_url(redis_url), ttl_s=60)


def _dialing(store: RequestStore) -> str:
    request_id = f"cas-{uuid.uuid4().hex[:12]}"
    store.claim(request_id, "task-1", "digest", {}, time.time() + 60)
    assert store.compare_and_set(request_id, "state", "claimed", "dialing")
    return request_id


def test_a_placement_whose_reply_was_lost_is_still_taken_for_done(
    store: RequestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker insists on writing "placed" (``worker.pipeline.insist``); the first try landed."""
    request_id = _dialing(store)
    monkeypatch.setattr(store, "_cas", LostFirstReply(store._cas))
    writer = uuid.uuid4().hex
    done = insist(
        lambda: store.compare_and_set(
            request_id, "state", "dialing", "placed", writer_token=writer, callid="c-1"
        )
    )
    assert done is True  # not "placed after the request settled"
    record = store.load(request_id)
    assert record is not None and record.state == "placed" and record.get("callid") == "c-1"


def test_another_writer_still_loses_the_compare_and_set(store: RequestStore) -> None:
    """The token recognises only its own write: a second worker is still refused."""
    request_id = _dialing(store)
    assert store.compare_and_set(request_id, "state", "dialing", "placed", writer_token="a")
    assert store.compare_and_set(request_id, "state", "dialing", "placed", writer_token="a")
    assert not store.compare_and_set(request_id, "state", "dialing", "placed", writer_token="b")
    assert not store.compare_and_set(request_id, "state", "dialing", "placed")
