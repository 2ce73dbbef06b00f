"""The pipeline's poll and sweep branches in-process (fakes and helpers: tests/pipeline_fakes.py).

Sweep tests use a Redis database of their own, emptied first: the sweeper scans the whole
in-flight set, and must see only the records a test left overdue on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from callpass_producer.contracts.events import COMPLETED_EVENT, PLACED_EVENT
from callpass_producer.contracts.outcome import Outcome
from tests.pipeline_fakes import (
    DN,
    FAKE_PIN,
    MAX_START_S,
    PLACE_DEADLINE_S,
    PROGRESS_SLACK_S,
    TIMEOUT_S,
    FakeClient,
    FakeWebhooks,
    assert_next_poll_due,
    dispatcher_of,
    make_pipeline,
    outcome_of,
    placed_info,
    progress_due,
    record_of,
    seed,
    sink_of,
    start_new,
    unique_request,
    within,
)
from worker.api.client import CallStatus
from worker.api.errors import (
    AuthError,
    ConnectError,
    InvalidRequestError,
    PermanentError,
    RateLimitedError,
    ServerError,
)
from worker.pipeline.core import Pipeline
from worker.pipeline.poller import OUTAGE_POLL_INTERVAL_S
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.store import RequestStore, now

#: The database the sweep tests have to themselves (the suite's other tests use 0).
SWEEP_DB = 13
#: Past the schedule of a TIMEOUT_S call (timeout + grace), inside the outage allowance.
SCHEDULE_OVER_S = TIMEOUT_S + PollSchedule().grace_s + 1


@pytest.fixture
def own_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, db=SWEEP_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def placed_request(pipeline: Pipeline) -> tuple[str, str, str]:
    """A request placed by ``pipeline``: its task id, request id and live poll token."""
    task_id, request_id, summary = start_new(pipeline)
    assert summary == "placed"
    return task_id, request_id, dispatcher_of(pipeline).polls[-1][1]


def placed_ago(records: redis.Redis, request_id: str, seconds: float) -> None:
    records.hset(RequestStore.key(request_id), "placed_at", repr(now() - seconds))


def overdue(pipeline: Pipeline, request_id: str) -> None:
    pipeline.store.expect_progress(request_id, now() - 1)


# -- poll: messages that make no status request ----------------------------------------------


def test_a_poll_for_a_request_without_record_is_dropped(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    assert pipeline.poll(unique_request()[1], "token") == "no record"
    assert client.status_requests == []
    assert dispatcher_of(pipeline).polls == []


def test_a_poll_for_a_settled_request_publishes_its_outcome_with_the_pin(
    records: redis.Redis,
) -> None:
    client = FakeClient(statuses=[CallStatus("c", "USER_BUSY", Outcome.BUSY)])
    pipeline = make_pipeline(records, client)
    task_id, request_id, token = placed_request(pipeline)
    assert pipeline.poll(request_id, token) == "busy"

    assert pipeline.poll(request_id, token) == "settled"  # a redelivery of that poll
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == "busy"
    assert doc["pin"] == FAKE_PIN  # the record keeps none: taken from the PLACED info
    assert sink_of(pipeline).count(task_id, "SUCCESS") == 2
    assert len(client.status_requests) == 1


def test_a_poll_of_a_stale_chain_drops_itself_uncounted(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    _, request_id, _ = placed_request(pipeline)
    assert pipeline.poll(request_id, "not-the-token") == "stale poll"
    assert client.status_requests == []
    assert record_of(pipeline, request_id).get("status_requests") == "0"
    assert len(dispatcher_of(pipeline).polls) == 1


# -- poll: what the status request answers ---------------------------------------------------


def test_a_final_status_settles_with_the_call_and_its_pin(records: redis.Redis) -> None:
    client = FakeClient(statuses=[CallStatus("c", "NORMAL_CLEARING", Outcome.ANSWERED)])
    pipeline = make_pipeline(records, client)
    task_id, request_id, token = placed_request(pipeline)

    assert pipeline.poll(request_id, token) == "answered"
    record = record_of(pipeline, request_id)
    assert client.status_requests == [record.get("callid")]
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["raw_result"]) == ("answered", "NORMAL_CLEARING")
    assert (doc["callid"], doc["pin"]) == (record.get("callid"), FAKE_PIN)
    assert doc["call_placed"] is True
    assert doc["status_requests"] == 1
    assert record.state == "settled"
    assert progress_due(records, request_id) is None
    assert len(dispatcher_of(pipeline).polls) == 1


def test_a_call_in_progress_hands_the_chain_to_the_next_poll(records: redis.Redis) -> None:
    pipeline = make_pipeline(records, FakeClient())
    _, request_id, token = placed_request(pipeline)
    placed_ago(records, request_id, 3.0)

    assert pipeline.poll(request_id, token) == "polling"
    (_, first, _), (_, second, delay) = dispatcher_of(pipeline).polls
    assert first == token and second != token
    assert_next_poll_due(delay, elapsed_s=3.0)
    record = record_of(pipeline, request_id)
    assert record.get("poll_token") == second
    assert record.get("status_requests") == "1"
    assert progress_due(records, request_id) == within(now() + delay + PROGRESS_SLACK_S)
    assert pipeline.poll(request_id, token) == "stale poll"  # the old chain is dead


class SlowStatusClient(FakeClient):
    """Each status request takes ``seconds`` on a clock of the test's (no sleeping)."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        super().__init__()
        self._clock, self._seconds = clock, seconds

    def get_status(self, callid: str) -> CallStatus:
        self._clock[0] += self._seconds
        return super().get_status(callid)


def test_the_next_poll_keeps_to_the_schedule_however_long_the_status_request_took(
    records: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]  # seconds the test's clock is ahead of the real one
    monkeypatch.setattr("worker.pipeline.store.now", lambda: time.time() + clock[0])
    pipeline = make_pipeline(records, SlowStatusClient(clock, 0.4))
    _, request_id, token = placed_request(pipeline)
    placed_ago(records, request_id, 3.0)
    assert pipeline.poll(request_id, token) == "polling"
    delay = dispatcher_of(pipeline).polls[-1][2]
    planned = PollSchedule().next_delay(3.0, TIMEOUT_S)
    assert planned is not None
    # Due at its planned offset from the placement, not one status request later.
    assert planned - 0.4 - 0.2 < delay <= planned - 0.4 + 0.01


class DuplicatePollClient(FakeClient):
    """While the first status request is out, a duplicate of the same poll runs in full."""

    def __init__(self) -> None:
        super().__init__()
        self.duplicate: Callable[[], str] = lambda: ""
        self.duplicate_said = ""

    def get_status(self, callid: str) -> CallStatus:
        if not self.duplicate_said:
            self.duplicate_said = "running"
            self.duplicate_said = self.duplicate()
        return super().get_status(callid)


def test_of_two_runs_of_one_poll_only_one_carries_the_chain_on(records: redis.Redis) -> None:
    client = DuplicatePollClient()
    pipeline = make_pipeline(records, client)
    _, request_id, token = placed_request(pipeline)
    client.duplicate = lambda: pipeline.poll(request_id, token)
    assert pipeline.poll(request_id, token) == "stale poll"
    assert client.duplicate_said == "polling"
    (_, first, _), (_, second, _) = dispatcher_of(pipeline).polls  # one next poll, not two
    assert first == token and record_of(pipeline, request_id).get("poll_token") == second


@pytest.mark.parametrize(
    "error", [ServerError("bad gateway", 502), ConnectError("refused"), RateLimitedError("429")]
)
def test_a_status_request_that_fails_for_now_keeps_polling(
    records: redis.Redis, error: Exception
) -> None:
    pipeline = make_pipeline(records, FakeClient(statuses=[error]))
    _, request_id, token = placed_request(pipeline)
    assert pipeline.poll(request_id, token) == "polling"
    delay = dispatcher_of(pipeline).polls[-1][2]
    assert_next_poll_due(delay, elapsed_s=0.0)


def test_a_rate_limited_status_request_waits_as_long_as_the_api_says(
    records: redis.Redis,
) -> None:
    pipeline = make_pipeline(records, FakeClient(statuses=[RateLimitedError("429", 429, 30.0)]))
    _, request_id, token = placed_request(pipeline)
    assert pipeline.poll(request_id, token) == "polling"
    assert dispatcher_of(pipeline).polls[-1][2] == 30.0


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("can't find callid", 200),
        AuthError("token refused", 401),
        InvalidRequestError("callid", "must be a UUID"),
    ],
)
def test_a_status_request_that_will_never_succeed_settles_unknown(
    records: redis.Redis, error: Exception
) -> None:
    pipeline = make_pipeline(records, FakeClient(statuses=[error]))
    task_id, request_id, token = placed_request(pipeline)
    assert pipeline.poll(request_id, token) == "unknown"
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["api_message"]) == ("unknown", str(error))
    assert doc["call_placed"] is True
    assert len(dispatcher_of(pipeline).polls) == 1


def test_no_final_status_by_the_end_of_the_schedule_settles_unknown(
    records: redis.Redis,
) -> None:
    pipeline = make_pipeline(records, FakeClient())
    task_id, request_id, token = placed_request(pipeline)
    placed_ago(records, request_id, SCHEDULE_OVER_S)
    assert pipeline.poll(request_id, token) == "unknown"
    doc = outcome_of(pipeline, task_id)
    assert doc["api_message"] == "no final status within timeout + grace"
    assert (doc["pin"], doc["status_requests"]) == (FAKE_PIN, 1)


def test_an_api_outage_past_the_schedule_keeps_polling_within_the_allowance(
    records: redis.Redis,
) -> None:
    pipeline = make_pipeline(records, FakeClient(statuses=[ConnectError("refused")]))
    _, request_id, token = placed_request(pipeline)
    placed_ago(records, request_id, SCHEDULE_OVER_S)
    assert pipeline.poll(request_id, token) == "polling"
    assert dispatcher_of(pipeline).polls[-1][2] == OUTAGE_POLL_INTERVAL_S


def test_an_api_outage_past_the_allowance_settles_unknown(records: redis.Redis) -> None:
    error = ConnectError("refused")
    pipeline = make_pipeline(records, FakeClient(statuses=[error]), poll_outage_s=60.0)
    task_id, request_id, token = placed_request(pipeline)
    placed_ago(records, request_id, SCHEDULE_OVER_S + 60.0)
    assert pipeline.poll(request_id, token) == "unknown"
    assert outcome_of(pipeline, task_id)["api_message"] == str(error)


def test_a_final_status_with_a_webhook_stores_both_events(records: redis.Redis) -> None:
    webhooks = FakeWebhooks()
    client = FakeClient(statuses=[CallStatus("c", "NO_ANSWER", Outcome.NO_ANSWER)])
    pipeline = make_pipeline(records, client, webhooks=webhooks)
    url = "https://hooks.example.test/x"
    _, request_id, _ = start_new(pipeline, webhook_url=url)
    token = dispatcher_of(pipeline).polls[-1][1]

    assert pipeline.poll(request_id, token) == "no_answer"
    assert webhooks.events == [(PLACED_EVENT, url, request_id), (COMPLETED_EVENT, url, request_id)]
    assert progress_due(records, request_id) is None


# -- sweep: producers' notes -----------------------------------------------------------------


def test_an_overdue_outbox_note_is_sent_again(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    assert pipeline.outbox is not None
    task_id = unique_request()[0]
    requested_at = now() - 120  # grace 60 s
    pipeline.outbox.note(task_id, {"dn": DN}, requested_at)
    pipeline.outbox.note(unique_request()[0], {"dn": DN}, now())  # not due yet

    assert pipeline.sweep() == 1
    [resent] = dispatcher_of(pipeline).starts
    assert (resent.task_id, resent.attempt, resent.countdown_s) == (task_id, 0, 0.0)
    assert resent.requested_at == requested_at


# -- sweep: overdue records ------------------------------------------------------------------


def test_an_overdue_request_without_record_is_forgotten(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    request_id = unique_request()[1]
    overdue(pipeline, request_id)
    assert pipeline.sweep() == 1
    assert progress_due(own_db, request_id) is None
    assert pipeline.sweep() == 0


def test_an_overdue_settled_request_is_published_again_and_forgotten(
    own_db: redis.Redis,
) -> None:
    webhooks = FakeWebhooks()
    client = FakeClient(start_error=AuthError("token refused", 401))
    pipeline = make_pipeline(own_db, client, webhooks=webhooks)
    url = "https://hooks.example.test/x"
    task_id, request_id, _ = start_new(pipeline, webhook_url=url)
    overdue(pipeline, request_id)  # as if the process died between settling and the event

    assert pipeline.sweep() == 1
    assert outcome_of(pipeline, task_id)["outcome"] == "auth_failed"
    assert sink_of(pipeline).count(task_id, "SUCCESS") == 2
    assert webhooks.events == [(COMPLETED_EVENT, url, request_id)] * 2  # same id: stored once
    assert progress_due(own_db, request_id) is None


def test_an_overdue_placed_request_gets_its_poll_again(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    task_id, request_id, token = placed_request(pipeline)
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    assert dispatcher_of(pipeline).polls[-1] == (request_id, token, 0.0)
    assert sink_of(pipeline).count(task_id, "PLACED") == 2
    assert progress_due(own_db, request_id) == within(now() + PROGRESS_SLACK_S)


def test_an_overdue_placed_request_without_a_chain_gets_a_new_one(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    _, request_id, _ = placed_request(pipeline)
    own_db.hset(RequestStore.key(request_id), "poll_token", "")
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    polls = dispatcher_of(pipeline).polls
    assert len(polls) == 2
    assert record_of(pipeline, request_id).get("poll_token") == polls[-1][1]


def test_an_overdue_request_still_dialling_is_given_time(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    _, request_id = seed(own_db, pipeline, "dialing", dialing_at=repr(now() - 5))
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    assert record_of(pipeline, request_id).state == "dialing"
    assert progress_due(own_db, request_id) == within(now() + PROGRESS_SLACK_S)


def test_an_overdue_dead_dialers_call_is_recovered(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    dead_since = repr(now() - MAX_START_S - 1)
    task_id, request_id = seed(own_db, pipeline, "dialing", dialing_at=dead_since)
    sink_of(pipeline).publish_placed(task_id, placed_info("c-dead", now() - 3))
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    record = record_of(pipeline, request_id)
    assert (record.state, record.get("callid")) == ("placed", "c-dead")
    [(_, token, _)] = dispatcher_of(pipeline).polls
    assert record.get("poll_token") == token


def test_an_overdue_dead_dialer_without_placed_info_settles_unknown(
    own_db: redis.Redis,
) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    dead_since = repr(now() - MAX_START_S - 1)
    task_id, request_id = seed(own_db, pipeline, "dialing", dialing_at=dead_since)
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["call_placed"]) == ("unknown", None)
    assert progress_due(own_db, request_id) is None


def test_an_overdue_claim_past_its_deadline_expires(own_db: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(own_db, client)
    requested_at = repr(now() - PLACE_DEADLINE_S - 1)
    task_id, request_id = seed(own_db, pipeline, "claimed", requested_at=requested_at)
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["api_message"]) == ("expired", "placement deadline passed")
    assert progress_due(own_db, request_id) is None
    assert client.starts == 0


def test_an_overdue_claim_before_its_deadline_waits_for_it(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    requested_at = now() - 10
    _, request_id = seed(own_db, pipeline, "claimed", requested_at=repr(requested_at))
    overdue(pipeline, request_id)

    assert pipeline.sweep() == 1
    assert record_of(pipeline, request_id).state == "claimed"
    assert progress_due(own_db, request_id) == within(requested_at + PLACE_DEADLINE_S + 1, 0.01)
    assert sink_of(pipeline).writes == []
    assert dispatcher_of(pipeline).starts == []


def test_a_sweep_touches_at_most_its_limit(own_db: redis.Redis) -> None:
    pipeline = make_pipeline(own_db, FakeClient())
    for _ in range(3):
        overdue(pipeline, unique_request()[1])
    assert pipeline.sweep(limit=2) == 2
    assert pipeline.sweep(limit=2) == 1
