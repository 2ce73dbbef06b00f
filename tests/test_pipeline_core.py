"""The pipeline's start branches in-process (fakes and helpers: tests/pipeline_fakes.py):
a fresh request, a claim lost to a concurrent delivery, redeliveries, each API answer to a
start, webhooks. Poll and sweep: tests/test_pipeline_core_poll.py; stored-value hygiene and
the outbox: tests/test_pipeline_hygiene.py.
"""

import uuid
from typing import Any

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
    FakeClient,
    FakeSink,
    FakeWebhooks,
    HookedLimits,
    assert_next_poll_due,
    dispatcher_of,
    epoch,
    make_pipeline,
    outcome_of,
    placed_info,
    progress_due,
    record_of,
    redeliver,
    seed,
    sink_of,
    start_new,
    unique_request,
    within,
)
from worker.api.errors import (
    ApiRejectedError,
    AuthError,
    ConnectError,
    DeadlinePassedError,
    InvalidRequestError,
    OutcomeUnknownError,
    PermanentError,
    ServerError,
)
from worker.pipeline.core import Pipeline
from worker.pipeline.document import build_outcome
from worker.pipeline.outbox import DUE_KEY, note_key
from worker.pipeline.pins import PinVault
from worker.pipeline.schedule import START_RETRY_DELAYS_S
from worker.pipeline.store import RequestStore, dn_digest, now

# -- start: a fresh request ------------------------------------------------------------------


def test_a_fresh_request_is_dialled_once_published_and_its_poll_chain_started(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    task_id, request_id, summary = start_new(pipeline)

    assert summary == "placed"
    assert client.starts == 1
    state, meta = sink_of(pipeline).last(task_id)
    assert state == "PLACED"
    assert meta["pin"] == FAKE_PIN
    record = record_of(pipeline, request_id)
    assert record.state == "placed"
    assert record.get("callid") == meta["callid"]
    [(polled_id, token, delay)] = dispatcher_of(pipeline).polls
    assert polled_id == request_id
    assert record.get("poll_token") == token
    assert_next_poll_due(delay, elapsed_s=0.0)
    assert progress_due(records, request_id) == within(now() + delay + PROGRESS_SLACK_S)


def test_claiming_a_request_clears_its_outbox_note(records: redis.Redis) -> None:
    pipeline = make_pipeline(records, FakeClient())
    assert pipeline.outbox is not None
    task_id, request_id = unique_request()
    pipeline.outbox.note(task_id, {"dn": DN, "request_id": request_id}, now())
    assert pipeline.start(task_id, (), {"dn": DN, "request_id": request_id}) == "placed"
    assert records.exists(note_key(task_id)) == 0
    assert records.zscore(DUE_KEY, task_id) is None


def test_a_pin_kept_in_the_vault_is_there_before_placed_and_never_published(
    records: redis.Redis,
) -> None:
    vault = PinVault(records, b"k" * 32, ttl_s=600, max_attempts=3, verification_ttl_s=600)
    checks: list[bool] = []

    class CheckingSink(FakeSink):
        def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None:
            checks.append(vault.verify(meta["request_id"], FAKE_PIN).valid)
            super().publish_placed(task_id, meta)

    sink = CheckingSink()
    pipeline = make_pipeline(records, FakeClient(), sink=sink, pins=vault, pins_leave_worker=False)
    task_id, _, summary = start_new(pipeline)
    assert summary == "placed"
    assert checks == [True]  # a producer may check a code the moment it sees PLACED
    assert sink.last(task_id)[1]["pin"] is None


@pytest.mark.parametrize(
    ("kwargs", "expected_id"),
    [({"request_id": "r-valid-id"}, "r-valid-id"), ({"request_id": "not valid!"}, None)],
)
def test_an_unparsable_request_is_invalid_under_its_own_id_if_it_has_one(
    records: redis.Redis, kwargs: dict[str, Any], expected_id: str | None
) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    task_id = "t-" + uuid.uuid4().hex
    assert pipeline.start(task_id, (), kwargs) == "invalid"  # no dn
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == "invalid"
    assert doc["request_id"] == (expected_id or task_id)
    assert client.starts == 0


def test_a_request_past_its_placement_deadline_expires_undialled(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    task_id, request_id, summary = start_new(pipeline, requested_at=now() - PLACE_DEADLINE_S - 1)
    assert summary == "expired"
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["api_message"]) == ("expired", "placement deadline passed")
    assert doc["call_placed"] is False
    assert record_of(pipeline, request_id).state == "settled"
    assert progress_due(records, request_id) is None
    assert client.starts == 0


def test_a_number_over_its_limit_is_rate_limited_with_a_retry_time(records: redis.Redis) -> None:
    client = FakeClient()
    asked: list[tuple[str, str, float | None]] = []

    def admit(digest: str, request_id: str) -> float:
        asked.append((digest, request_id, progress_due(records, request_id)))
        return 7.0

    pipeline = make_pipeline(records, client, call_limits=HookedLimits(records, admit))
    task_id, request_id, summary = start_new(pipeline)
    assert summary == "rate_limited"
    [(digest, asked_for, due_at_claim)] = asked
    assert (digest, asked_for) == (dn_digest(DN), request_id)
    # The claim gave the request until its deadline, the start's longest run and the slack.
    expected_due = now() + PLACE_DEADLINE_S + MAX_START_S + PROGRESS_SLACK_S
    assert due_at_claim == within(expected_due)
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == "rate_limited"
    assert epoch(doc["retry_at"]) == within(now() + 7.0)
    assert client.starts == 0


# -- start: the claim lost to a concurrent delivery ------------------------------------------


def test_a_claim_lost_to_a_delivery_that_placed_the_call_resumes_its_call(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    sink = FakeSink()

    def other_delivery_places(digest: str, request_id: str) -> float:
        [task_id] = RequestStore(records, ttl_s=600).task_ids(request_id)
        sink.publish_placed(task_id, placed_info("c-theirs", now()))
        key = RequestStore.key(request_id)
        records.hset(key, mapping={"state": "placed", "callid": "c-theirs", "placed_at": now()})
        return 0.0

    pipeline = make_pipeline(
        records, client, sink=sink, call_limits=HookedLimits(records, other_delivery_places)
    )
    task_id, request_id, summary = start_new(pipeline)

    assert summary == "placed"
    assert client.starts == 0
    assert sink.count(task_id, "PLACED") == 2  # theirs, and again on resuming
    assert len(dispatcher_of(pipeline).polls) == 1  # they left no chain: ours starts it
    assert record_of(pipeline, request_id).get("callid") == "c-theirs"


def test_a_claim_lost_to_a_delivery_that_settled_publishes_its_outcome(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    store = RequestStore(records, ttl_s=600)

    def other_delivery_settles(digest: str, request_id: str) -> float:
        store.settle(request_id, build_outcome(Outcome.API_ERROR, completed_at=now()))
        return 0.0

    pipeline = make_pipeline(
        records, client, store=store, call_limits=HookedLimits(records, other_delivery_settles)
    )
    task_id, _, summary = start_new(pipeline)
    assert summary == "settled"
    assert outcome_of(pipeline, task_id)["outcome"] == "api_error"
    assert client.starts == 0


def test_a_record_that_vanishes_under_the_claim_is_an_error(records: redis.Redis) -> None:
    def record_expires(digest: str, request_id: str) -> float:
        records.delete(RequestStore.key(request_id))
        return 0.0

    client = FakeClient()
    pipeline = make_pipeline(records, client, call_limits=HookedLimits(records, record_expires))
    with pytest.raises(RuntimeError, match="claim changed under us"):
        start_new(pipeline)
    assert client.starts == 0


# -- start: a redelivery resumes what the record says ----------------------------------------


def test_a_redelivery_of_a_settled_request_publishes_the_standing_outcome(
    records: redis.Redis,
) -> None:
    client = FakeClient(start_error=AuthError("token refused", 401))
    pipeline = make_pipeline(records, client)
    task_id, request_id, summary = start_new(pipeline)
    assert summary == "auth_failed"
    first = outcome_of(pipeline, task_id)

    assert redeliver(pipeline, task_id, request_id) == "settled"
    assert outcome_of(pipeline, task_id) == first
    assert sink_of(pipeline).count(task_id, "SUCCESS") == 2
    assert client.starts == 1


def test_a_second_task_for_a_placed_request_gets_its_placed_info(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    _, request_id, _ = start_new(pipeline)
    other_task = "t-" + uuid.uuid4().hex

    assert pipeline.start(other_task, (), {"dn": DN, "request_id": request_id}) == "placed"
    state, meta = sink_of(pipeline).last(other_task)
    assert state == "PLACED"
    assert meta["callid"] == record_of(pipeline, request_id).get("callid")
    assert client.starts == 1
    assert len(dispatcher_of(pipeline).polls) == 1  # the chain is live: no second one


def test_a_redelivery_of_a_placed_request_without_a_chain_starts_one(
    records: redis.Redis,
) -> None:
    pipeline = make_pipeline(records, FakeClient())
    task_id, request_id, _ = start_new(pipeline)
    key = RequestStore.key(request_id)
    records.hset(key, mapping={"poll_token": "", "placed_at": repr(now() - 5)})

    assert redeliver(pipeline, task_id, request_id) == "placed"
    polls = dispatcher_of(pipeline).polls
    assert len(polls) == 2
    assert_next_poll_due(polls[-1][2], elapsed_s=5.0)
    assert record_of(pipeline, request_id).get("poll_token") == polls[-1][1]


def test_a_placed_request_without_placed_info_republishes_nothing(records: redis.Redis) -> None:
    pipeline = make_pipeline(records, FakeClient())
    task_id, request_id, _ = start_new(pipeline)
    sink_of(pipeline).writes.clear()  # as if the result had expired
    assert redeliver(pipeline, task_id, request_id) == "placed"
    assert sink_of(pipeline).writes == []


def test_a_redelivery_while_another_dials_looks_again_once_it_must_be_done(
    records: redis.Redis,
) -> None:
    pipeline = make_pipeline(records, FakeClient())
    task_id, request_id = seed(records, pipeline, "dialing", dialing_at=repr(now() - 10))

    assert redeliver(pipeline, task_id, request_id, attempt=2) == "dialing elsewhere"
    [resent] = dispatcher_of(pipeline).starts
    assert (resent.task_id, resent.attempt) == (task_id, 2)
    assert resent.countdown_s == within(MAX_START_S - 10 + 1.0)
    assert record_of(pipeline, request_id).state == "dialing"


def test_a_concurrent_delivery_during_the_start_defers_itself(records: redis.Redis) -> None:
    summaries: list[str] = []
    pipeline: Pipeline | None = None

    def duplicate_arrives() -> None:
        assert pipeline is not None
        [task_id] = pipeline.store.task_ids(request_id)
        summaries.append(redeliver(pipeline, task_id, request_id))

    client = FakeClient(during_start=duplicate_arrives)
    pipeline = make_pipeline(records, client)
    task_id, request_id = unique_request()
    assert pipeline.start(task_id, (), {"dn": DN, "request_id": request_id}) == "placed"
    assert summaries == ["dialing elsewhere"]
    assert client.starts == 1
    assert dispatcher_of(pipeline).starts[0].countdown_s == within(MAX_START_S + 1)


def test_a_dead_dialers_call_is_recovered_from_its_placed_info(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    dead_since = repr(now() - MAX_START_S - 1)
    task_id, request_id = seed(records, pipeline, "dialing", dialing_at=dead_since)
    sink_of(pipeline).publish_placed(task_id, placed_info("c-dead", now() - 3))

    assert redeliver(pipeline, task_id, request_id) == "placed"
    record = record_of(pipeline, request_id)
    assert (record.state, record.get("callid")) == ("placed", "c-dead")
    assert sink_of(pipeline).count(task_id, "PLACED") == 2
    [(_, token, delay)] = dispatcher_of(pipeline).polls
    assert record.get("poll_token") == token
    assert_next_poll_due(delay, elapsed_s=3.0)
    assert client.starts == 0


def test_two_recoverers_of_one_dead_dialer_leave_its_call_placed(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    dead_since = repr(now() - MAX_START_S - 1)
    task_id, request_id = seed(records, pipeline, "dialing", dialing_at=dead_since)
    sink_of(pipeline).publish_placed(task_id, placed_info("c-dead", now() - 3))
    # Both read the record while it was still dialing; the first one recovers the call.
    seen_by_both = record_of(pipeline, request_id)
    pipeline.dialer.recover(seen_by_both)
    pipeline.dialer.recover(seen_by_both)

    record = record_of(pipeline, request_id)
    assert (record.state, record.get("callid")) == ("placed", "c-dead")
    assert record.outcome is None
    assert len(dispatcher_of(pipeline).polls) == 1
    assert client.starts == 0


def test_a_dead_dialer_without_placed_info_settles_unknown(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = make_pipeline(records, client)
    dead_since = repr(now() - MAX_START_S - 1)
    task_id, request_id = seed(records, pipeline, "dialing", dialing_at=dead_since)

    assert redeliver(pipeline, task_id, request_id) == "settled"
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == "unknown"
    assert doc["call_placed"] is None
    assert "stopped while the start request was in flight" in doc["api_message"]
    assert client.starts == 0


# -- start: what the API answers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "summary", "api_message", "call_placed"),
    [
        (OutcomeUnknownError("no answer to the start", "read timeout"), "unknown", True, None),
        (AuthError("token refused", 401), "auth_failed", True, False),
        (ApiRejectedError("destination not allowed"), "api_error", True, False),
        (PermanentError("method gone", 410), "api_error", True, False),
        (InvalidRequestError("dn", "too short"), "invalid", False, False),
    ],
)
def test_a_start_the_api_refuses_or_may_have_taken_settles_once(
    records: redis.Redis,
    error: Exception,
    summary: str,
    api_message: bool,
    call_placed: bool | None,
) -> None:
    client = FakeClient(start_error=error)
    pipeline = make_pipeline(records, client)
    task_id, request_id, result = start_new(pipeline)

    assert result == summary
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == summary
    assert doc["call_placed"] is call_placed
    assert doc["api_message"] == (str(error) if api_message else None)
    if isinstance(error, InvalidRequestError):
        assert doc["error"] == {"field": "dn", "rule": "too short"}
    assert record_of(pipeline, request_id).state == "settled"
    assert progress_due(records, request_id) is None
    assert dispatcher_of(pipeline).starts == [] and dispatcher_of(pipeline).polls == []
    assert client.starts == 1


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(0, START_RETRY_DELAYS_S[0]), (1, START_RETRY_DELAYS_S[1]), (9, START_RETRY_DELAYS_S[-1])],
)
def test_a_start_that_never_reached_the_api_is_deferred_with_backoff(
    records: redis.Redis, attempt: int, delay: float
) -> None:
    client = FakeClient(start_error=ConnectError("connection refused"))
    pipeline = make_pipeline(records, client)
    task_id, request_id, summary = start_new(pipeline, attempt=attempt)

    assert summary == "start deferred"
    [resent] = dispatcher_of(pipeline).starts
    assert (resent.task_id, resent.attempt, resent.countdown_s) == (task_id, attempt + 1, delay)
    assert record_of(pipeline, request_id).state == "claimed"  # free for the next try
    assert progress_due(records, request_id) == within(now() + delay + PROGRESS_SLACK_S)
    assert sink_of(pipeline).writes == []


def test_a_deferred_start_expires_when_its_next_try_would_be_too_late(
    records: redis.Redis,
) -> None:
    client = FakeClient(start_error=ServerError("unavailable", 503))
    pipeline = make_pipeline(records, client)
    requested_at = now() - PLACE_DEADLINE_S + 3  # 3 s left: a 1 s wait fits, a 4 s one not
    task_id, request_id, summary = start_new(pipeline, requested_at=requested_at)
    assert summary == "start deferred"
    [resent] = dispatcher_of(pipeline).starts
    assert resent.requested_at == requested_at

    assert redeliver(pipeline, task_id, request_id, attempt=2) == "expired"
    doc = outcome_of(pipeline, task_id)
    assert doc["outcome"] == "expired"
    assert doc["api_message"] == "API unreachable until deadline: unavailable"
    assert len(dispatcher_of(pipeline).starts) == 1
    assert client.starts == 2


def test_a_start_not_sent_because_its_deadline_passed_expires(records: redis.Redis) -> None:
    client = FakeClient(start_error=DeadlinePassedError("placement deadline passed"))
    pipeline = make_pipeline(records, client)
    task_id, _, summary = start_new(pipeline, requested_at=now() - PLACE_DEADLINE_S + 0.5)
    assert summary == "expired"
    assert outcome_of(pipeline, task_id)["outcome"] == "expired"
    assert dispatcher_of(pipeline).starts == []


# -- start: webhooks -------------------------------------------------------------------------


def test_a_request_naming_a_webhook_stores_its_placed_event(records: redis.Redis) -> None:
    webhooks = FakeWebhooks()
    pipeline = make_pipeline(records, FakeClient(), webhooks=webhooks)
    url = "https://hooks.example.test/x"
    _, request_id, summary = start_new(pipeline, webhook_url=url)
    assert summary == "placed"
    assert record_of(pipeline, request_id).get("webhook_url") == url
    assert webhooks.events == [(PLACED_EVENT, url, request_id)]


def test_a_settled_request_with_a_webhook_stores_its_completed_event(
    records: redis.Redis,
) -> None:
    due_while_publishing: list[float | None] = []
    sink = FakeSink(
        on_outcome=lambda doc: due_while_publishing.append(progress_due(records, doc["request_id"]))
    )
    webhooks = FakeWebhooks()
    client = FakeClient(start_error=ApiRejectedError("destination not allowed"))
    pipeline = make_pipeline(records, client, sink=sink, webhooks=webhooks)
    url = "https://hooks.example.test/x"
    _, request_id, summary = start_new(pipeline, webhook_url=url)
    assert summary == "api_error"
    assert webhooks.events == [(COMPLETED_EVENT, url, request_id)]
    # In flight until the event is stored, so a sweep finishes it after a crash; then not.
    assert due_while_publishing == [within(now() + PROGRESS_SLACK_S)]
    assert progress_due(records, request_id) is None


def test_disabled_webhooks_store_no_event(records: redis.Redis) -> None:
    webhooks = FakeWebhooks(enabled=False)
    pipeline = make_pipeline(
        records, FakeClient(start_error=AuthError("no", 401)), webhooks=webhooks
    )
    _, _, summary = start_new(pipeline)
    assert summary == "auth_failed"
    assert webhooks.events == []
