"""Limits that protect the account and the people called, against a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
import redis
from celery import Celery

from callpass_producer import enqueue_call
from tests.conftest import OwnWorker, Simulator
from tests.helpers import settle, unique_dn
from worker.api.breaker import CircuitBreaker
from worker.api.errors import ConnectError, RateLimitedError
from worker.api.limits import (
    GlobalRateLimiter,
    WindowLimit,
    parse_window_limits,
)
from worker.pipeline.call_limits import CallLimits
from worker.pipeline.store import RequestRecord


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.delete(GlobalRateLimiter.KEY, *client.keys("callpass:breaker:*"))
    return client


def test_the_global_rate_holds_in_every_one_second_window_across_threads(r: redis.Redis) -> None:
    """Three 'workers' asking as fast as they can get at most `rate` slots per second."""
    rate = 20
    stamps: list[float] = []
    lock = threading.Lock()

    def hammer() -> None:
        limiter = GlobalRateLimiter(r, rate, max_wait_s=5)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            limiter.acquire()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    busiest = max(sum(1 for s in stamps if a <= s < a + 1.0) for a in stamps)
    assert busiest <= rate * 1.1
    assert len(stamps) >= rate * 2  # and the limit is a rate, not a stop


def test_a_caller_that_cannot_wait_is_told_when_to_come_back(r: redis.Redis) -> None:
    limiter = GlobalRateLimiter(r, 2, max_wait_s=0.01)
    limiter.acquire()
    limiter.acquire()
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire()
    assert info.value.never_reached_server and 0 < (info.value.retry_after or 0) <= 1.2


def test_destination_limits_count_each_request_once(r: redis.Redis) -> None:
    limits = CallLimits(r, b"h" * 32, dn_limits=(WindowLimit(2, 600), WindowLimit(3, 86_400)))
    digest = uuid.uuid4().hex

    def admit(request_id: str) -> float | None:
        record = RequestRecord(request_id, {"dn_digest": digest})
        refused = limits.refusal(record, "79990000001")
        return None if refused is None else refused.retry_at - time.time()

    assert admit("a") is None
    assert admit("a") is None  # the same request again: not a second call
    assert admit("b") is None
    wait = admit("c")
    assert wait is not None and 590 < wait <= 600


def test_window_limits_are_parsed_strictly() -> None:
    assert parse_window_limits("3/600, 10/86400") == (WindowLimit(3, 600), WindowLimit(10, 86400))
    assert parse_window_limits("") == ()
    for bad in ("3", "3/0", "x/600", "-1/60"):
        with pytest.raises(ValueError, match="CALLS/SECONDS"):
            parse_window_limits(bad)


def test_the_breaker_opens_then_lets_one_probe_through(r: redis.Redis) -> None:
    a = CircuitBreaker(r, threshold=3, window_s=10, cooldown_s=0.3)
    b = CircuitBreaker(r, threshold=3, window_s=10, cooldown_s=0.3)
    for _ in range(3):
        a.before_request()
        a.record(ok=False)
    with pytest.raises(ConnectError, match="circuit open"):
        b.before_request()  # shared: the other worker stops too
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            a.before_request()  # the probe
            break
        except ConnectError:
            time.sleep(0.05)
    else:
        pytest.fail("the circuit never half-opened")
    with pytest.raises(ConnectError):
        b.before_request()  # only one probe at a time
    a.record(ok=True)
    b.before_request()  # closed again


def test_only_the_thread_holding_the_probe_closes_the_circuit(r: redis.Redis) -> None:
    """Another thread's answer (a request let through before the circuit opened) must not be
    taken for the probe's: only the probe's own answer closes the circuit."""
    a = CircuitBreaker(r, threshold=3, window_s=10, cooldown_s=0.3)
    for _ in range(3):
        a.record(ok=False)
    deadline = time.monotonic() + 5
    while True:
        try:
            a.before_request()  # this thread takes the probe
            break
        except ConnectError:
            assert time.monotonic() < deadline, "the circuit never half-opened"
            time.sleep(0.05)
    other = threading.Thread(target=a.record, kwargs={"ok": True})
    other.start()
    other.join()
    b = CircuitBreaker(r, threshold=3, window_s=10, cooldown_s=0.3)
    with pytest.raises(ConnectError):
        b.before_request()  # still half-open: the probe has not answered
    a.record(ok=True)
    b.before_request()  # the probe's answer closes it


def test_failures_between_answers_do_not_open_the_breaker(r: redis.Redis) -> None:
    a = CircuitBreaker(r, threshold=3, window_s=10, cooldown_s=5, reset_every_s=0)
    for _ in range(10):  # a steady share of faults: never three in a row
        a.record(ok=False)
        a.record(ok=False)
        a.record(ok=True)
        a.before_request()
    for _ in range(3):
        a.record(ok=False)
    with pytest.raises(ConnectError, match="circuit open"):
        a.before_request()


@pytest.mark.usefixtures("worker")
def test_a_number_over_its_limit_settles_rate_limited_without_a_call(
    app: Celery, sim: Simulator
) -> None:
    """The default limit is 3 calls per number per 10 minutes; the 4th is refused."""
    dn = unique_dn("8")
    docs = [settle(enqueue_call(app, dn, 5)) for _ in range(4)]
    assert Counter(d["outcome"] for d in docs) == {"answered": 3, "rate_limited": 1}
    refused = docs[-1]
    assert refused["call_placed"] is False and refused["retry_at"] is not None
    assert sim.starts_to(dn) == 3


def test_numbers_outside_the_allowed_prefixes_are_refused(
    app: Celery, sim: Simulator, own_worker: OwnWorker
) -> None:
    with own_worker("allowlist", CALLPASS_ALLOWED_PREFIXES="7999000"):
        outside = "79161230001"
        doc = settle(enqueue_call(app, outside, 5, queue="allowlist"))
        assert doc["outcome"] == "invalid" and doc["error"]["field"] == "dn"
        assert "allowed prefixes" in doc["error"]["rule"]
        assert sim.starts_to(outside) == 0
        assert settle(enqueue_call(app, unique_dn("1"), 5, queue="allowlist"))["outcome"] == (
            "answered"
        )
