"""No stored or sent value can make the pipeline raise, and the outbox forgets what it was
told (in-process; fakes and helpers: tests/pipeline_fakes.py)."""

import math
import uuid
from typing import Any

import pytest
import redis

from callpass_producer.contracts.outcome import Outcome
from tests.pipeline_fakes import (
    FakeClient,
    make_pipeline,
    unique_request,
)
from worker.pipeline.document import build_outcome
from worker.pipeline.outbox import DUE_KEY, Outbox, note_key
from worker.pipeline.store import RequestStore, now
from worker.sane_values import MAX_CLOCK_SKEW_S, iso, sane_count, sane_float, sane_time

# -- start: a start that lands after its request settled, stored-value hygiene, outbox -------


def test_a_start_that_succeeds_after_its_request_settled_republishes_the_outcome(
    records: redis.Redis,
) -> None:
    task_id, request_id = unique_request()
    store = RequestStore(records, ttl_s=600)

    def duplicate_settles_meanwhile() -> None:
        doc = build_outcome(Outcome.UNKNOWN, completed_at=now(), request_id=request_id)
        store.settle(request_id, doc)

    client = FakeClient(during_start=duplicate_settles_meanwhile)
    pipeline = make_pipeline(records, client, store=store)
    summary = pipeline.start(task_id, (), {"dn": "79161234567", "request_id": request_id})

    assert summary == "placed late"
    state, doc = pipeline.sink.last(task_id)  # type: ignore[attr-defined]
    # The PLACED info went out on top of the outcome; the outcome must be what stays.
    assert state == "SUCCESS"
    assert doc["outcome"] == "unknown"
    assert client.starts == 1


@pytest.mark.parametrize("stored", ["nan", "inf", "-inf", "1e400", "garbage", "9e15"])
def test_no_stored_time_makes_settling_raise(records: redis.Redis, stored: str) -> None:
    task_id, request_id = unique_request()
    pipeline = make_pipeline(records, FakeClient())
    pipeline.start(task_id, (), {"dn": "79161234567", "request_id": request_id})
    key = RequestStore.key(request_id)
    records.hset(key, mapping={"requested_at": stored, "placed_at": stored, "timeout": stored})

    record = pipeline.store.load(request_id)
    assert record is not None
    pipeline.settler.settle(record, Outcome.ANSWERED, raw_result="NORMAL_CLEARING")

    state, doc = pipeline.sink.last(task_id)  # type: ignore[attr-defined]
    assert state == "SUCCESS"
    assert doc["outcome"] == "answered"
    assert doc["requested_at"] is None
    assert doc["placed_at"] is None


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"dn": "79161234567", "webhook_url": "https://hooks.example.test/x"}, "webhook_url"),
        ({"dn": "49301234567"}, "dn"),
        ({"dn": "12"}, "dn"),
    ],
)
def test_every_refusal_before_the_claim_clears_the_outbox_note(
    records: redis.Redis, kwargs: dict[str, Any], field_name: str
) -> None:
    task_id, request_id = unique_request()
    pipeline = make_pipeline(records, FakeClient(), allowed_prefixes=("7",))
    assert pipeline.outbox is not None
    pipeline.outbox.note(task_id, kwargs, now())

    assert pipeline.start(task_id, (), {**kwargs, "request_id": request_id}) == "invalid"

    assert pipeline.sink.last(task_id)[1]["error"]["field"] == field_name  # type: ignore[attr-defined]
    assert records.exists(note_key(task_id)) == 0
    assert records.zscore(DUE_KEY, task_id) is None


def test_a_reused_request_id_clears_the_outbox_note(records: redis.Redis) -> None:
    first_task, request_id = unique_request()
    pipeline = make_pipeline(records, FakeClient())
    pipeline.start(first_task, (), {"dn": "79161234567", "request_id": request_id})
    other_task = "t-" + uuid.uuid4().hex
    assert pipeline.outbox is not None
    pipeline.outbox.note(other_task, {"dn": "79169999999"}, now())

    kwargs = {"dn": "79169999999", "request_id": request_id}
    assert pipeline.start(other_task, (), kwargs) == "invalid"
    assert records.exists(note_key(other_task)) == 0


def test_outbox_notes_expire(records: redis.Redis) -> None:
    outbox = Outbox(records, grace_s=60.0, ttl_s=120.0)
    task_id = "t-" + uuid.uuid4().hex
    outbox.note(task_id, {"dn": "79161234567"}, now())
    ttl_ms = records.pttl(note_key(task_id))
    assert 0 < ttl_ms <= 120_000
    with pytest.raises(ValueError, match="ttl_s"):
        Outbox(records, grace_s=60.0, ttl_s=60.0)


def test_an_expired_note_is_dropped_from_the_due_set(records: redis.Redis) -> None:
    outbox = Outbox(records, grace_s=60.0)
    task_id = "t-" + uuid.uuid4().hex
    outbox.note(task_id, {"dn": "79161234567"}, now() - 3600)
    records.delete(note_key(task_id))  # what the expiry does
    assert task_id not in [entry[0] for entry in outbox.overdue(1000)]
    assert records.zscore(DUE_KEY, task_id) is None


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -1.0, 10**400, True, "1700000000", None, [1], {"a": 1}],
)
def test_insane_header_times_count_as_absent(value: object) -> None:
    assert sane_time(value, now(), source="header x") is None


def test_sane_header_times_are_kept_and_clamped_to_now() -> None:
    at = now()
    assert sane_time(at - 35, at) == at - 35
    assert sane_time(at + MAX_CLOCK_SKEW_S / 2, at) == at  # a little skew: taken as now
    assert sane_time(at + MAX_CLOCK_SKEW_S * 2, at) is None


def test_counts_and_floats() -> None:
    assert sane_count(True, 10) == 0
    assert sane_count(-1, 10) == 0
    assert sane_count(10**30, 10) == 0
    assert sane_count(3, 10) == 3
    assert sane_float(b"1.5") == 1.5
    assert sane_float("nan") is None


@pytest.mark.parametrize("ts", [math.nan, math.inf, -1.0, 1e300])
def test_iso_never_raises(ts: float) -> None:
    assert iso(ts) is None


def test_a_long_visibility_time_out_gives_notes_a_longer_life(records: redis.Redis) -> None:
    """Grace is the visibility time-out + 15 s; an hour's default must not refuse 3,600 s."""
    outbox = Outbox(records, grace_s=3615.0)
    task_id = "t-" + uuid.uuid4().hex
    outbox.note(task_id, {"dn": "79161234567"}, now())
    assert records.pttl(note_key(task_id)) > 3615 * 1000
