"""The due set and its runner, in-process against a real Redis: polls run when due, once per
lease, beside a pool that runs starts first; a failed or abandoned poll falls due again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from worker.dev.stack import wait_until
from worker.pipeline.due_polls import DuePoll, DuePolls, due_polls_key
from worker.pipeline.poller import HANDED_ON
from worker.pipeline.store import INFLIGHT_KEY, RequestStore
from worker.process.poll_runner import PollRunner, StartsInFlight


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def queue() -> str:
    return f"due-{uuid.uuid4().hex[:8]}"  # a due set and start list of this test alone


@pytest.fixture
def due(client: redis.Redis, queue: str) -> Iterator[DuePolls]:
    yield DuePolls(client, due_polls_key(queue), yield_to=(queue,))
    client.delete(due_polls_key(queue), queue)


class Recorder:
    """Runs polls as the pipeline would, noting each (request id, token) and when."""

    def __init__(
        self,
        fail_first: int = 0,
        hold: threading.Event | None = None,
        then: Callable[[DuePoll], str] = lambda poll: "settled",
    ) -> None:
        """``then``: what the poll does after running (its answer: the pipeline's summary)."""
        self.ran: list[tuple[str, str, float]] = []
        self._then = then
        self._fail_left = fail_first
        self._hold = hold
        self._lock = threading.Lock()

    def __call__(self, request_id: str, token: str) -> str:
        if self._hold is not None:
            self._hold.wait(10)
        with self._lock:
            if self._fail_left:
                self._fail_left -= 1
                raise redis.ConnectionError("Redis went away")
            self.ran.append((request_id, token, time.time()))
        return self._then(DuePoll(request_id, token))


def runner(due: DuePolls, run: Recorder, **options: object) -> PollRunner:
    settings: dict[str, object] = {"concurrency": 4, "lease_s": 30.0, "yield_max_s": 30.0}
    settings.update(options)
    return PollRunner(due, run, **settings)  # type: ignore[arg-type]


def test_take_leases_the_due_polls_and_says_when_the_next_is_due(due: DuePolls) -> None:
    at = time.time()
    due.add(DuePoll("r:1", "aa"), at - 1)
    due.add(DuePoll("r-2", "bb"), at + 5)
    taken = due.take(at, at + 30, 10, yield_until=at - 30)
    assert taken.polls == [DuePoll("r:1", "aa")]  # a request id may hold the separator
    assert taken.next_due == pytest.approx(at + 5)
    # Leased: not taken again before the lease ends, and taken again after it.
    assert due.take(at + 1, at + 31, 10, yield_until=at - 29).polls == []
    assert due.take(at + 31, at + 61, 10, yield_until=at).polls == [
        DuePoll("r-2", "bb"),
        DuePoll("r:1", "aa"),
    ]
    due.done(DuePoll("r:1", "aa"))
    assert due.count() == 1


def test_take_yields_to_waiting_starts_up_to_the_bound(
    due: DuePolls, client: redis.Redis, queue: str
) -> None:
    at = time.time()
    due.add(DuePoll("late", "aa"), at - 60)
    due.add(DuePoll("due", "bb"), at - 1)
    client.lpush(queue, "a start message")
    taken = due.take(at, at + 30, 10, yield_until=at - 30)
    assert taken.polls == [DuePoll("late", "aa")]  # only the one past the bound
    again = due.take(at, at + 30, 10, yield_until=at - 30)
    assert again.polls == [] and again.yielding
    client.delete(queue)
    assert due.take(at, at + 30, 10, yield_until=at - 30).polls == [DuePoll("due", "bb")]


def test_take_yielding_with_nothing_due_says_when_the_first_poll_is(
    due: DuePolls, client: redis.Redis, queue: str
) -> None:
    """Starts wait but no poll is due: the runner sleeps until one is, instead of looking
    again every few milliseconds through the burst."""
    at = time.time()
    due.add(DuePoll("later", "aa"), at + 5)
    client.lpush(queue, "a start message")
    taken = due.take(at, at + 30, 10, yield_until=at - 30)
    assert taken.polls == [] and not taken.yielding
    assert taken.next_due == pytest.approx(at + 5)


def test_take_yields_when_the_caller_says_its_pool_is_full(due: DuePolls) -> None:
    at = time.time()
    due.add(DuePoll("due", "aa"), at - 1)
    assert due.take(at, at + 30, 10, yield_until=at - 30, must_yield=True).yielding
    assert due.take(at, at + 30, 10, yield_until=at - 30).polls == [DuePoll("due", "aa")]


def test_the_runner_runs_each_poll_when_due_and_removes_it(due: DuePolls) -> None:
    run = Recorder()
    poll_runner = runner(due, run)
    poll_runner.start()
    try:
        added = time.time()
        due.add(DuePoll("soon", "aa"), added + 0.3)
        due.add(DuePoll("now", "bb"), added)
        wait_until(lambda: len(run.ran) == 2, 10, "both polls run")
        ran = {request_id: at for request_id, _, at in run.ran}
        assert ran["now"] < ran["soon"] and ran["soon"] >= added + 0.3
        wait_until(lambda: due.count() == 0, 5, "both polls leave the due set")
    finally:
        poll_runner.stop()


def _chain(client: redis.Redis, request_id: str, token: str) -> None:
    client.hset(RequestStore.key(request_id), "poll_token", token)


def test_hand_on_moves_the_chain_to_the_next_poll_and_retires_this_one(
    due: DuePolls, client: redis.Redis
) -> None:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    _chain(client, request_id, "aa")
    at = time.time()
    due.add(DuePoll(request_id, "aa"), at)
    assert due.hand_on(DuePoll(request_id, "aa"), "bb", at + 2.5, at + 300)
    assert client.zrange(due.key, 0, -1, withscores=True) == [
        (f"bb:{request_id}".encode(), at + 2.5)
    ]
    assert client.hget(RequestStore.key(request_id), "poll_token") == b"bb"
    assert client.zscore(INFLIGHT_KEY, request_id) == at + 300
    client.delete(RequestStore.key(request_id))
    client.zrem(INFLIGHT_KEY, request_id)


@pytest.mark.parametrize(
    ("live_token", "settled"),
    [("live", False), ("aa", True)],  # a duplicate carried the chain on; or settled it
)
def test_a_poll_whose_chain_went_on_without_it_hands_nothing_on_but_leaves_the_set(
    due: DuePolls, client: redis.Redis, live_token: str, settled: bool
) -> None:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    _chain(client, request_id, live_token)
    if settled:
        client.hset(RequestStore.key(request_id), "outcome", "{}")
    due.add(DuePoll(request_id, "aa"), time.time())
    assert not due.hand_on(DuePoll(request_id, "aa"), "bb", time.time(), time.time() + 300)
    assert due.count() == 0 and client.zscore(INFLIGHT_KEY, request_id) is None
    assert client.hget(RequestStore.key(request_id), "poll_token") == live_token.encode()
    client.delete(RequestStore.key(request_id))


def test_a_poll_that_handed_on_is_not_removed_again_by_the_runner(
    due: DuePolls, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    _chain(client, request_id, "aa")
    later = time.time() + 60
    removed: list[DuePoll] = []
    monkeypatch.setattr(due, "done", removed.append)  # a round trip the hand-on made moot

    def hand_on(poll: DuePoll) -> str:
        due.hand_on(poll, "bb", later, later + 300)
        return HANDED_ON

    run = Recorder(then=hand_on)
    poll_runner = runner(due, run)
    poll_runner.start()
    try:
        due.add(DuePoll(request_id, "aa"), time.time())
        wait_until(lambda: len(run.ran) == 1, 10, "the poll run")
    finally:
        poll_runner.stop()
    assert client.zrange(due.key, 0, -1) == [f"bb:{request_id}".encode()]  # the next poll
    assert removed == []
    client.delete(RequestStore.key(request_id))
    client.zrem(INFLIGHT_KEY, request_id)


def test_a_failed_poll_falls_due_again(due: DuePolls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.process.poll_runner.RETRY_S", 0.2)
    run = Recorder(fail_first=1)
    poll_runner = runner(due, run)
    poll_runner.start()
    try:
        due.add(DuePoll("flaky", "aa"), time.time())
        wait_until(lambda: len(run.ran) == 1, 10, "the poll run again after its failure")
        wait_until(lambda: due.count() == 0, 5, "the poll leaves the due set")
    finally:
        poll_runner.stop()


def test_a_poll_that_keeps_failing_waits_longer_each_time(
    due: DuePolls, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.process.poll_runner.RETRY_S", 0.2)
    run = Recorder(fail_first=2)
    poll_runner = runner(due, run)
    poll_runner.start()
    try:
        added = time.time()
        due.add(DuePoll("failing", "aa"), added)
        # First failure: due again 0.2 s later; second: 0.4 s after that.
        wait_until(lambda: len(run.ran) == 1, 10, "the poll run after two failures")
        assert run.ran[0][2] >= added + 0.6
    finally:
        poll_runner.stop()


def test_a_runner_told_to_stop_taking_leaves_due_polls_to_the_others(due: DuePolls) -> None:
    run = Recorder()
    poll_runner = runner(due, run)
    poll_runner.start()
    poll_runner.stop_taking()
    due.add(DuePoll("for-another", "aa"), time.time())
    poll_runner.stop()
    assert run.ran == [] and due.count() == 1


def test_a_poll_whose_runner_died_is_run_by_another_after_its_lease(due: DuePolls) -> None:
    at = time.time()
    due.add(DuePoll("orphan", "aa"), at)
    # A runner took it and died: its lease ends in half a second.
    assert due.take(at, at + 0.5, 10, yield_until=at - 30).polls == [DuePoll("orphan", "aa")]
    run = Recorder()
    poll_runner = runner(due, run)
    poll_runner.start()
    try:
        wait_until(lambda: len(run.ran) == 1, 10, "the orphaned poll run")
        assert run.ran[0][2] >= at + 0.5
    finally:
        poll_runner.stop()


def test_the_runner_holds_no_more_polls_than_its_threads(
    due: DuePolls, client: redis.Redis
) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    poll_runner = runner(due, run, concurrency=2)
    poll_runner.start()
    try:
        at = time.time()
        for i in range(5):
            due.add(DuePoll(f"r-{i}", "aa"), at)
        # Two leased (score moved to the lease's end), three still due.
        wait_until(lambda: _still_due(client, due) == 3, 5, "two polls taken")
        hold.set()
        wait_until(lambda: len(run.ran) == 5, 10, "every poll run")
    finally:
        hold.set()
        poll_runner.stop()


def _still_due(client: redis.Redis, due: DuePolls) -> int:
    """Polls due now and not taken (a taken one is scored at its lease's end)."""
    return int(client.zcount(due.key, "-inf", time.time()))


def test_stop_waits_for_the_running_polls(due: DuePolls, client: redis.Redis) -> None:
    hold = threading.Event()
    run = Recorder(hold=hold)
    poll_runner = runner(due, run)
    poll_runner.start()
    due.add(DuePoll("running", "aa"), time.time())
    wait_until(lambda: _still_due(client, due) == 0, 5, "the poll taken")
    threading.Timer(0.3, hold.set).start()
    poll_runner.stop()
    assert [r[0] for r in run.ran] == ["running"] and due.count() == 0


def test_starts_in_flight_counts_the_running_starts() -> None:
    starts = StartsInFlight()
    with starts:
        with starts:
            assert starts.count == 2
        assert starts.count == 1
    assert starts.count == 0
