"""Each part of worker/pipeline on its own (fakes and helpers: tests/pipeline_fakes.py): the
publisher, the settlement, the outcome document, the states the Lua scripts share, admission,
and the parts' dependencies (publishing never reaches back into settling)."""

import ast
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis

from callpass_producer.contracts.events import COMPLETED_EVENT
from callpass_producer.contracts.outcome import Outcome, OutcomeDocument, OutcomeError
from callpass_producer.contracts.placed import PlacedInfo
from tests.pipeline_fakes import (
    DN,
    FAKE_PIN,
    MAX_START_S,
    PLACE_DEADLINE_S,
    PROGRESS_SLACK_S,
    TIMEOUT_S,
    FakeClient,
    FakeDispatcher,
    FakeSink,
    FakeWebhooks,
    placed_info,
    progress_due,
    unique_request,
    within,
)
from worker.masking import mask_dn
from worker.pipeline import due_polls as due_polls_module
from worker.pipeline import store as store_module
from worker.pipeline.admission import Admission, Delivery
from worker.pipeline.dial_checks import DialChecks
from worker.pipeline.dialer import Dialer
from worker.pipeline.document import build_outcome, parse_outcome
from worker.pipeline.poller import Poller
from worker.pipeline.publisher import Publisher
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.settlement import Settler
from worker.pipeline.states import RequestState
from worker.pipeline.store import RequestRecord, RequestStore, dn_digest, now
from worker.sane_values import iso

PIPELINE = Path(__file__).resolve().parent.parent / "worker" / "pipeline"
URL = "https://hooks.example.test/x"


class CountingStore(RequestStore):
    """Counts the reads of request records."""

    loads = 0

    def load(self, request_id: str) -> RequestRecord | None:
        self.loads += 1
        return super().load(request_id)


def claimed(store: RequestStore, *extra_tasks: str, **fields: str) -> tuple[str, str]:
    """A record claimed by one task (and subscribed by ``extra_tasks``); its ids."""
    task_id, request_id = unique_request()
    initial = {
        "task_id": task_id,
        "dn_masked": mask_dn(DN),
        "timeout": str(TIMEOUT_S),
        "requested_at": repr(now() - 5),
        "status_requests": "0",
        "webhook_url": "",
        **fields,
    }
    for subscriber in (task_id, *extra_tasks):
        store.claim(request_id, subscriber, dn_digest(DN), initial, now() + 600)
    return task_id, request_id


def loaded(store: RequestStore, request_id: str) -> RequestRecord:
    record = store.load(request_id)
    assert record is not None
    return record


def placed_doc(request_id: str, callid: str) -> PlacedInfo:
    return PlacedInfo(
        request_id=request_id, callid=callid, pin=FAKE_PIN, placed_at=iso(now()) or "", timeout=10
    )


# -- publisher -------------------------------------------------------------------------------


def test_an_outcome_reaches_every_task_with_its_pin_and_its_event_once(
    records: redis.Redis,
) -> None:
    store, sink, webhooks = RequestStore(records, ttl_s=600), FakeSink(), FakeWebhooks()
    publisher = Publisher(store, sink, webhooks)
    task_id, request_id = claimed(store, "t-second", callid="c-1", webhook_url=URL)
    sink.publish_placed(task_id, placed_info("c-1", now()))
    doc = build_outcome(Outcome.BUSY, completed_at=now(), request_id=request_id, callid="c-1")

    publisher.outcome(loaded(store, request_id), doc)

    for subscriber in (task_id, "t-second"):
        state, published = sink.last(subscriber)
        assert (state, published["outcome"], published["pin"]) == ("SUCCESS", "busy", "1111")
    assert webhooks.events == [(COMPLETED_EVENT, URL, request_id)]


def test_a_pin_goes_back_only_beside_its_own_call(records: redis.Redis) -> None:
    store, sink = RequestStore(records, ttl_s=600), FakeSink()
    task_id, request_id = claimed(store, callid="c-1")
    sink.publish_placed(task_id, placed_info("c-other", now()))
    doc = build_outcome(Outcome.BUSY, completed_at=now(), request_id=request_id, callid="c-1")

    Publisher(store, sink).outcome(loaded(store, request_id), doc)
    assert sink.last(task_id)[1]["pin"] is None


def test_placed_info_published_over_a_settled_request_leaves_the_outcome_last(
    records: redis.Redis,
) -> None:
    store, sink, webhooks = RequestStore(records, ttl_s=600), FakeSink(), FakeWebhooks()
    publisher = Publisher(store, sink, webhooks)
    task_id, request_id = claimed(store, "t-second", webhook_url=URL)
    store.settle(request_id, build_outcome(Outcome.UNKNOWN, completed_at=now()))
    publisher.outcome_if_settled(request_id)

    info = placed_doc(request_id, "c-late")
    publisher.placed(request_id, info)  # a start answered after its request settled

    for subscriber in (task_id, "t-second"):
        assert [state for to, state, _ in sink.writes if to == subscriber] == ["SUCCESS"]
        assert sink.last(subscriber)[1]["outcome"] == "unknown"
    assert webhooks.events == [(COMPLETED_EVENT, URL, request_id)]


def test_republishing_without_stored_placed_info_writes_nothing(records: redis.Redis) -> None:
    store, sink, webhooks = RequestStore(records, ttl_s=600), FakeSink(), FakeWebhooks()
    _, request_id = claimed(store, webhook_url=URL)
    Publisher(store, sink, webhooks).republish_placed(loaded(store, request_id))
    assert sink.writes == [] and webhooks.events == []


def test_republishing_copies_the_stored_placed_info_to_every_task(records: redis.Redis) -> None:
    store, sink = RequestStore(records, ttl_s=600), FakeSink()
    task_id, request_id = claimed(store, "t-second")
    stored = placed_info("c-1", now())
    sink.publish_placed(task_id, stored)
    Publisher(store, sink).republish_placed(loaded(store, request_id))
    assert sink.last("t-second") == ("PLACED", stored)


def test_publishing_and_settling_never_call_back_into_each_other() -> None:
    """The publisher imports no part that settles or drives a request."""
    drivers = {"admission", "dialer", "poller", "settlement", "sweeper", "core"}
    tree = ast.parse((PIPELINE / "publisher.py").read_text())
    imported = {
        node.module.rsplit(".", 1)[-1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported & drivers == set()
    assert "store" in imported  # the check sees the publisher's own imports


# -- settlement ------------------------------------------------------------------------------


def test_a_settle_reads_its_record_once_and_publishes_the_pin(records: redis.Redis) -> None:
    store, sink, webhooks = CountingStore(records, ttl_s=600), FakeSink(), FakeWebhooks()
    publisher = Publisher(store, sink, webhooks)
    task_id, request_id = claimed(store, "t-second", webhook_url=URL)
    records.hset(RequestStore.key(request_id), mapping={"callid": "c-1", "placed_at": now()})
    sink.publish_placed(task_id, placed_info("c-1", now()))
    record, store.loads = loaded(store, request_id), 0

    Settler(store, publisher, PROGRESS_SLACK_S, True).settle(
        record, Outcome.ANSWERED, raw_result="NORMAL_CLEARING"
    )

    assert store.loads == 1
    for subscriber in (task_id, "t-second"):
        doc = sink.last(subscriber)[1]
        assert (doc["outcome"], doc["callid"], doc["pin"]) == ("answered", "c-1", "1111")
    assert webhooks.events == [(COMPLETED_EVENT, URL, request_id)]
    assert progress_due(records, request_id) is None  # the event is stored: not in flight
    stored = loaded(store, request_id)
    assert stored.state == RequestState.SETTLED
    assert stored.outcome is not None and stored.outcome.pin is None  # records keep no pin


def test_a_later_settle_publishes_the_outcome_that_stands(records: redis.Redis) -> None:
    store, sink = RequestStore(records, ttl_s=600), FakeSink()
    settler = Settler(store, Publisher(store, sink), PROGRESS_SLACK_S, False)
    task_id, request_id = claimed(store)
    settler.settle(loaded(store, request_id), Outcome.API_ERROR, api_message="refused")
    first = sink.last(task_id)[1]

    settler.settle(loaded(store, request_id), Outcome.EXPIRED)
    assert sink.last(task_id)[1] == first
    assert sink.count(task_id, "SUCCESS") == 2


def test_a_settle_of_a_vanished_record_still_answers_from_the_snapshot(
    records: redis.Redis,
) -> None:
    store, sink = RequestStore(records, ttl_s=600), FakeSink()
    task_id, request_id = claimed(store)
    record = loaded(store, request_id)
    records.delete(RequestStore.key(request_id))

    Settler(store, Publisher(store, sink), PROGRESS_SLACK_S, False).settle(record, Outcome.EXPIRED)
    doc = sink.last(task_id)[1]
    assert (doc["outcome"], doc["dn_masked"], doc["timeout"]) == ("expired", mask_dn(DN), 10)


# -- the outcome document --------------------------------------------------------------------


def test_the_outcome_document_serialises_in_the_published_field_order() -> None:
    doc = build_outcome(
        Outcome.INVALID,
        completed_at=now(),
        request_id="r-1",
        error=OutcomeError(field="dn", rule="is required"),
    )
    data = doc.model_dump(mode="json")
    assert list(data) == list(OutcomeDocument.model_fields)
    assert data["outcome"] == "invalid"
    assert data["error"] == {"field": "dn", "rule": "is required"}
    assert data["version"] == 1 and data["call_placed"] is False


def test_values_from_outside_that_break_the_contract_are_shown_as_null() -> None:
    doc = build_outcome(
        Outcome.ANSWERED,
        completed_at=now(),
        request_id="t" * 129,  # a foreign task id
        callid="c-1",
        pin="12ab",
        timeout=9 * 10**15,
        status_requests=-3,
    )
    assert (doc.request_id, doc.pin, doc.timeout, doc.status_requests) == (None, None, None, 0)
    assert doc.call_placed is True


def test_a_stored_outcome_that_breaks_the_contract_is_still_read() -> None:
    stored = build_outcome(Outcome.BUSY, completed_at=now()).model_dump(mode="json")
    stored["timeout"] = 500  # written by a version with other bounds
    assert parse_outcome(stored).timeout == 500


# -- states shared with the Lua scripts ------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "script"),
    [
        *((store_module, name) for name in ("_CLAIM", "_COMPARE_AND_SET", "_SETTLE")),
        (store_module, "_BEGIN_POLL"),
        (due_polls_module, "_HAND_ON"),
    ],
)
def test_no_lua_script_spells_a_state(module: object, script: str) -> None:
    text: str = getattr(module, script)
    for state in RequestState:
        assert f"'{state.value}'" not in text and f'"{state.value}"' not in text


# -- admission -------------------------------------------------------------------------------


def admission(records: redis.Redis, sink: FakeSink, **overrides: Any) -> Admission:
    store = RequestStore(records, ttl_s=600)
    options: dict[str, Any] = {
        "store": store,
        "publisher": Publisher(store, sink),
        "default_timeout_s": TIMEOUT_S,
        "place_deadline_s": PLACE_DEADLINE_S,
        "max_start_s": MAX_START_S,
        "progress_slack_s": PROGRESS_SLACK_S,
    }
    return Admission(**{**options, **overrides})


def test_admission_claims_a_fresh_request_and_gives_it_until_its_deadline(
    records: redis.Redis,
) -> None:
    sink = FakeSink()
    task_id, request_id = unique_request()
    admitted = admission(records, sink).admit(
        task_id, (), {"dn": DN, "request_id": request_id}, 1.5
    )
    assert admitted is not None and admitted.dn == DN
    record = admitted.record
    assert (record.state, record.task_id, record.get("requested_at")) == ("claimed", task_id, "1.5")
    expected = now() + PLACE_DEADLINE_S + MAX_START_S + PROGRESS_SLACK_S
    assert progress_due(records, request_id) == within(expected)
    assert sink.writes == []


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"dn": DN, "timeout": 20.0}, "timeout", "must be a whole number of seconds, got float"),
        ({"dn": DN, "webhook_url": URL}, "webhook_url", "webhooks are not configured"),
        ({"dn": "79261234567"}, "dn", "CALLPASS_ALLOWED_PREFIXES"),
    ],
)
def test_admission_refuses_with_the_field_and_the_rule(
    records: redis.Redis, kwargs: dict[str, Any], field: str, rule: str
) -> None:
    sink = FakeSink()
    task_id = "t-" + uuid.uuid4().hex
    admit = admission(records, sink, allowed_prefixes=("7916",))
    assert admit.admit(task_id, (), kwargs, now()) is None
    [(to, state, doc)] = sink.writes
    assert (to, state, doc["outcome"], doc["error"]["field"]) == (
        task_id,
        "SUCCESS",
        "invalid",
        field,
    )
    assert rule in doc["error"]["rule"]


# -- poller and dialer, built by hand --------------------------------------------------------


class Parts(NamedTuple):
    store: RequestStore
    sink: FakeSink
    dispatcher: FakeDispatcher
    client: FakeClient
    poller: Poller
    dialer: Dialer


def parts(records: redis.Redis, client: FakeClient | None = None) -> Parts:
    store, sink, dispatcher = RequestStore(records, ttl_s=600), FakeSink(), FakeDispatcher(records)
    client = client or FakeClient()
    publisher = Publisher(store, sink)
    settler = Settler(store, publisher, PROGRESS_SLACK_S, False)
    poller = Poller(
        lambda: client,
        store,
        dispatcher,
        PollSchedule(),
        publisher,
        settler,
        default_timeout_s=TIMEOUT_S,
        poll_outage_s=300.0,
        progress_slack_s=PROGRESS_SLACK_S,
    )
    dialer = Dialer(
        lambda: client,
        store,
        dispatcher,
        publisher,
        settler,
        poller,
        default_timeout_s=TIMEOUT_S,
        place_deadline_s=PLACE_DEADLINE_S,
        max_start_s=MAX_START_S,
        progress_slack_s=PROGRESS_SLACK_S,
        checks=DialChecks(settler),
        pins=None,
        pins_leave_worker=True,
    )
    return Parts(store, sink, dispatcher, client, poller, dialer)


def test_the_dialer_places_a_claimed_request_once_and_hands_it_to_the_poller(
    records: redis.Redis,
) -> None:
    p = parts(records)
    task_id, request_id = claimed(p.store)
    delivery = Delivery(task_id, DN, {"dn": DN, "request_id": request_id})

    assert p.dialer.advance(loaded(p.store, request_id), delivery) == "placed"
    assert p.dialer.advance(loaded(p.store, request_id), delivery) == "placed"  # a redelivery
    assert p.client.starts == 1
    record = loaded(p.store, request_id)
    assert record.state == RequestState.PLACED
    [(_, token, _)] = p.dispatcher.polls
    assert record.get("poll_token") == token
    assert p.sink.last(task_id)[1]["callid"] == record.get("callid")


def test_the_dialer_gives_a_live_dialer_time_without_dialing(records: redis.Redis) -> None:
    p = parts(records)
    _, request_id = claimed(p.store, state="dialing", dialing_at=repr(now() - 10))
    p.dialer.recover(loaded(p.store, request_id))
    assert loaded(p.store, request_id).state == RequestState.DIALING
    assert progress_due(records, request_id) == within(now() + PROGRESS_SLACK_S)
    assert (p.client.starts, p.sink.writes) == (0, [])


@pytest.mark.parametrize("token", ["live-token", ""])
def test_the_poller_sends_a_quiet_chains_poll_again_or_starts_one(
    records: redis.Redis, token: str
) -> None:
    p = parts(records)
    _, request_id = claimed(
        p.store, state="placed", callid="c-1", placed_at=repr(now() - 2), poll_token=token
    )
    p.poller.repoll(loaded(p.store, request_id))
    [(polled, sent_token, delay)] = p.dispatcher.polls
    assert polled == request_id
    if token:
        assert (sent_token, delay) == (token, 0.0)
        assert progress_due(records, request_id) == within(now() + PROGRESS_SLACK_S)
    else:
        assert loaded(p.store, request_id).get("poll_token") == sent_token
        assert delay > 0
    assert p.client.status_requests == []
