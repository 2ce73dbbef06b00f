"""Verification flows in-process (fakes: tests/pipeline_fakes.py), against the suite's Redis:
resends and their cooldown and cap, codes of earlier calls, the next step, the fallback task,
test numbers, fraud and spend limits, and the version-2 document.

Time is moved through Redis fields (a verification's ``last_at``), never by sleeping.
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
import redis

from callpass_producer.contracts.outcome import Outcome
from tests.helpers import SCHEMAS
from tests.pipeline_fakes import (
    DN,
    FAKE_PIN,
    FakeClient,
    epoch,
    make_pipeline,
    outcome_of,
    progress_due,
    record_of,
    seed,
    sink_of,
    unique_request,
    within,
)
from worker.api.client import CallStatus
from worker.api.errors import ApiRejectedError
from worker.api.limits import Budget, WindowLimit
from worker.pipeline.call_limits import CallLimits
from worker.pipeline.core import Pipeline
from worker.pipeline.fallback import Fallbacks, fallback_task_id
from worker.pipeline.pins import PinVault
from worker.pipeline.quiet_calls import quiet_callid
from worker.pipeline.store import RequestStore, now
from worker.pipeline.verifications import Verifications, verification_key

OUTCOME_V2 = json.loads((SCHEMAS / "outcome.v2.json").read_text())
COOLDOWNS_S = (30.0, 60.0)


@dataclass
class SentFallbacks:
    sent: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, name: str, queue: str, task_id: str, kwargs: dict[str, Any]) -> None:
        self.sent.append((name, queue, task_id, kwargs))


def flows(records: redis.Redis, client: FakeClient, **overrides: Any) -> Pipeline:
    options: dict[str, Any] = {
        "pins": PinVault(records, b"k" * 32, ttl_s=600, max_attempts=3, verification_ttl_s=600),
        "verifications": Verifications(records, COOLDOWNS_S, max_calls=3, ttl_s=600),
        "fallbacks": Fallbacks(records, SentFallbacks(), default_queue="celery"),
    }
    return make_pipeline(records, client, **{**options, **overrides})


def start(pipeline: Pipeline, dn: str = DN, **kwargs: Any) -> tuple[str, str, str]:
    task_id, request_id = unique_request()
    summary = pipeline.start(task_id, (), {"dn": dn, "request_id": request_id, **kwargs})
    return task_id, request_id, summary


def earlier(records: redis.Redis, verification_id: str, seconds: float) -> None:
    """The verification's last call as if it was admitted ``seconds`` earlier."""
    key = verification_key(verification_id)
    records.hset(key, "last_at", repr(float(records.hget(key, "last_at") or 0) - seconds))


def vault_of(pipeline: Pipeline) -> PinVault:
    assert pipeline.pins is not None
    return pipeline.pins


# -- resends ---------------------------------------------------------------------------------


def test_a_resend_waits_out_a_growing_cooldown_and_stops_at_the_cap(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    verification_id = "v-" + uuid.uuid4().hex
    assert start(pipeline, verification_id=verification_id)[2] == "placed"
    task_id, _, summary = start(pipeline, verification_id=verification_id, resend=True)
    assert summary == "rate_limited"
    refused = outcome_of(pipeline, task_id)
    jsonschema.validate(refused, OUTCOME_V2)
    allowed_at = float(records.hget(verification_key(verification_id), "last_at") or 0) + 30
    assert (refused["outcome"], refused["next_step"]) == ("rate_limited", "retry_later")
    assert refused["next_step_at"] == refused["retry_at"]
    assert epoch(refused["retry_at"]) == within(allowed_at, 0.01)
    assert client.starts == 1  # refused without a call
    earlier(records, verification_id, 30)
    assert start(pipeline, verification_id=verification_id, resend=True)[2] == "placed"
    earlier(records, verification_id, 59)  # the second resend waits 60 s
    assert start(pipeline, verification_id=verification_id, resend=True)[2] == "rate_limited"
    earlier(records, verification_id, 1)
    assert start(pipeline, verification_id=verification_id, resend=True)[2] == "placed"
    earlier(records, verification_id, 3600)
    task_id, _, summary = start(pipeline, verification_id=verification_id, resend=True)
    capped = outcome_of(pipeline, task_id)
    assert (summary, capped["retry_at"], capped["next_step"]) == (
        "rate_limited",
        None,
        "other_channel",
    )
    assert "3 calls" in capped["api_message"]
    assert client.starts == 3


def test_a_redelivered_resend_is_the_same_request_not_another_resend(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    verification_id = "v-" + uuid.uuid4().hex
    start(pipeline, verification_id=verification_id)
    earlier(records, verification_id, 30)
    task_id, request_id, summary = start(pipeline, verification_id=verification_id, resend=True)
    assert summary == "placed"
    again = {"dn": DN, "request_id": request_id, "verification_id": verification_id}
    assert pipeline.start(task_id, (), {**again, "resend": True}) == "placed"  # resumed
    assert client.starts == 2
    assert records.hget(verification_key(verification_id), "calls") == b"2"


@pytest.mark.parametrize(
    ("case", "field_name"),
    [("unknown", "verification_id"), ("other number", "dn"), ("finished", "verification_id")],
)
def test_a_resend_that_names_no_open_verification_of_this_number_is_invalid(
    records: redis.Redis, case: str, field_name: str
) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    verification_id = "v-" + uuid.uuid4().hex
    if case != "unknown":
        start(pipeline, verification_id=verification_id)
        earlier(records, verification_id, 3600)
    if case == "finished":
        assert vault_of(pipeline).verify(verification_id, FAKE_PIN).reason == "ok"
    dn = "79161234568" if case == "other number" else DN
    starts = client.starts
    task_id, _, summary = start(pipeline, dn, verification_id=verification_id, resend=True)
    doc = outcome_of(pipeline, task_id)
    assert (summary, doc["error"]["field"], doc["next_step"]) == (
        "invalid",
        field_name,
        "ask_for_number" if field_name == "dn" else "none",
    )
    assert client.starts == starts


def test_a_new_verification_with_an_id_in_use_is_refused(records: redis.Redis) -> None:
    pipeline = flows(records, FakeClient())
    verification_id = "v-" + uuid.uuid4().hex
    start(pipeline, verification_id=verification_id)
    task_id, _, summary = start(pipeline, verification_id=verification_id)
    assert summary == "invalid"
    assert "resend: true" in outcome_of(pipeline, task_id)["error"]["rule"]


def test_codes_of_every_live_call_check_and_attempts_count_per_verification(
    records: redis.Redis,
) -> None:
    pipeline = flows(records, FakeClient())
    verification_id = "v-" + uuid.uuid4().hex
    start(pipeline, verification_id=verification_id)
    earlier(records, verification_id, 30)
    start(pipeline, verification_id=verification_id, resend=True)
    vault = vault_of(pipeline)
    checks = [vault.verify(verification_id, code).reason for code in ("0000", "0001", "0002")]
    assert checks == ["mismatch", "mismatch", "mismatch"]
    # Two calls, still three attempts in all: the right code is refused now.
    assert vault.verify(verification_id, FAKE_PIN).reason == "too_many_attempts"


# -- documents, next step, fallback ----------------------------------------------------------


def test_a_request_without_version_2_arguments_keeps_the_version_1_document(
    records: redis.Redis,
) -> None:
    pipeline = flows(records, FakeClient(start_error=ApiRejectedError("destination not allowed")))
    task_id, _, _ = start(pipeline)
    doc = outcome_of(pipeline, task_id)
    assert doc["version"] == 1
    assert "next_step" not in doc and "verification_id" not in doc


def test_a_call_that_needs_another_channel_sends_the_fallback_task_once(
    records: redis.Redis,
) -> None:
    client = FakeClient(statuses=[CallStatus("c", "USER_BUSY", Outcome.BUSY)])
    pipeline = flows(records, client)
    fallback = {"fallback_task": "sms.send_code", "fallback_queue": "sms"}
    task_id, request_id, _ = start(pipeline, **fallback)
    token = record_of(pipeline, request_id).get("poll_token")
    assert pipeline.poll(request_id, token) == "busy"
    assert pipeline.poll(request_id, token) == "settled"  # a redelivered poll
    redelivered = {"dn": DN, "request_id": request_id, **fallback}
    assert pipeline.start(task_id, (), redelivered) == "settled"
    pipeline.publisher.outcome_if_settled(request_id)  # as the sweeper would
    sent = _fallbacks(pipeline).sent
    assert len(sent) == 1
    name, queue, message_id, kwargs = sent[0]
    assert (name, queue, message_id) == (
        "sms.send_code",
        "sms",
        fallback_task_id(request_id, task_id),
    )
    assert kwargs["verification_id"] == request_id and kwargs["next_step"] == "other_channel"
    assert kwargs["outcome"]["outcome"] == "busy" and kwargs["outcome"]["pin"] is None
    assert outcome_of(pipeline, task_id)["next_step"] == "other_channel"


def test_a_call_that_rang_sends_no_fallback(records: redis.Redis) -> None:
    client = FakeClient(statuses=[CallStatus("c", "NORMAL_CLEARING", Outcome.ANSWERED)])
    pipeline = flows(records, client)
    task_id, request_id, _ = start(pipeline, fallback_task="sms.send_code")
    assert pipeline.poll(request_id, record_of(pipeline, request_id).get("poll_token")) != ""
    assert outcome_of(pipeline, task_id)["next_step"] == "wait_for_code"
    assert _fallbacks(pipeline).sent == []


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"resend": True}, "verification_id"),
        ({"fallback_queue": "sms"}, "fallback_queue"),
        ({"fallback_task": "callpass.start_call"}, "fallback_task"),
        ({"fallback_task": "not a name"}, "fallback_task"),
        ({"limit_keys": {"IP": "x"}}, "limit_keys"),
        ({"limit_keys": {"ip": ""}}, "limit_keys"),
        ({"verification_id": "has space"}, "verification_id"),
    ],
)
def test_bad_version_2_arguments_settle_invalid_naming_the_field(
    records: redis.Redis, kwargs: dict[str, Any], field_name: str
) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    task_id, _, summary = start(pipeline, **kwargs)
    doc = outcome_of(pipeline, task_id)
    jsonschema.validate(doc, OUTCOME_V2)
    assert (summary, doc["error"]["field"], client.starts) == ("invalid", field_name, 0)


# -- test numbers ----------------------------------------------------------------------------


def test_a_test_number_settles_with_its_fixed_pin_and_never_reaches_the_api(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    pipeline = flows(records, client, test_pins={DN: "7777"})
    task_id, request_id, summary = start(pipeline, verification_id="v-" + uuid.uuid4().hex)
    assert summary == "test number"
    doc = outcome_of(pipeline, task_id)
    assert (doc["outcome"], doc["pin"], doc["raw_result"]) == ("answered", "7777", "TEST_NUMBER")
    assert sink_of(pipeline).count(task_id, "PLACED") == 1
    assert client.starts == 0 and client.status_requests == []
    assert vault_of(pipeline).verify(doc["verification_id"], "7777").reason == "ok"
    assert record_of(pipeline, request_id).get("poll_token") == ""  # no poll chain


# -- fraud and spend limits ------------------------------------------------------------------


def test_a_limit_key_counts_calls_across_numbers_and_is_kept_hashed(records: redis.Redis) -> None:
    client = FakeClient()
    ip = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex}"
    limits = CallLimits(records, b"h" * 32, key_limits=(("ip", WindowLimit(1, 3600)),))
    pipeline = flows(records, client, call_limits=limits)
    _, first, summary = start(pipeline, limit_keys={"ip": ip, "account": "42"})
    assert summary == "placed"
    task_id, _, summary = start(pipeline, "79161234569", limit_keys={"ip": ip})
    doc = outcome_of(pipeline, task_id)
    assert (summary, doc["next_step"]) == ("rate_limited", "retry_later")
    assert "'ip'" in doc["api_message"] and ip not in json.dumps(doc)
    assert epoch(doc["retry_at"]) == within(now() + 3600)
    assert client.starts == 1
    record = {k.decode(): v.decode() for k, v in records.hgetall(key(first)).items()}
    assert ip not in json.dumps(record)
    kept = json.loads(record["limit_keys"])
    assert sorted(kept) == ["account", "ip"]
    assert all(len(digest) == 32 and digest not in (ip, "42") for digest in kept.values())
    assert not any(ip in k.decode() for k in records.scan_iter("callpass:limit:*"))


def test_a_prefix_limit_and_a_day_budget_refuse_without_a_call(records: redis.Redis) -> None:
    client = FakeClient()
    prefix = "7" + str(uuid.uuid4().int % 10**9).zfill(9)
    limits = CallLimits(
        records,
        b"h" * 32,
        prefix_limits=((prefix, WindowLimit(2, 60)),),
        budgets=(Budget(prefix, "day", 1),),
    )
    pipeline = flows(records, client, call_limits=limits)
    task_id, request_id, summary = start(pipeline, prefix + "1")
    assert summary == "placed"
    # The same request delivered again is counted once: the budget is not spent twice.
    assert pipeline.start(task_id, (), {"dn": prefix + "1", "request_id": request_id}) == "placed"
    task_id, _, summary = start(pipeline, prefix + "2")
    doc = outcome_of(pipeline, task_id)
    assert (summary, doc["outcome"]) == ("rate_limited", "rate_limited")
    assert "day's call budget" in doc["api_message"]
    assert doc["retry_at"].endswith("T00:00:00.000Z")
    assert client.starts == 1


def key(request_id: str) -> str:
    return RequestStore.key(request_id)


def _fallbacks(pipeline: Pipeline) -> SentFallbacks:
    assert pipeline.fallbacks is not None and isinstance(pipeline.fallbacks.send, SentFallbacks)
    return pipeline.fallbacks.send


def test_a_resend_under_its_first_calls_request_id_is_refused_not_resumed(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    verification_id = "v-" + uuid.uuid4().hex
    first_task, request_id, _ = start(pipeline, verification_id=verification_id)
    earlier(records, verification_id, 30)
    task_id = "t-" + uuid.uuid4().hex
    again = {"dn": DN, "request_id": request_id, "verification_id": verification_id}
    assert pipeline.start(task_id, (), {**again, "resend": True}) == "invalid"
    doc = outcome_of(pipeline, task_id)
    assert (doc["error"]["field"], client.starts) == ("request_id", 1)
    assert "of its own" in doc["error"]["rule"]
    # The first call is untouched: its own redelivery still resumes it.
    assert pipeline.start(first_task, (), again) == "placed"
    assert sink_of(pipeline).count(task_id, "PLACED") == 0


def test_a_verification_out_of_attempts_places_no_more_calls(records: redis.Redis) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    verification_id = "v-" + uuid.uuid4().hex
    start(pipeline, verification_id=verification_id)
    for code in ("0000", "0001", "0002"):
        vault_of(pipeline).verify(verification_id, code)
    earlier(records, verification_id, 30)
    task_id, _, summary = start(pipeline, verification_id=verification_id, resend=True)
    assert (summary, client.starts) == ("invalid", 1)
    assert "attempts are used up" in outcome_of(pipeline, task_id)["error"]["rule"]


def test_a_request_a_limit_refuses_uses_none_of_its_verifications_calls(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    tenant = {"tenant": uuid.uuid4().hex}
    limits = CallLimits(records, b"h" * 32, key_limits=(("tenant", WindowLimit(1, 3600)),))
    pipeline = flows(records, client, call_limits=limits)
    start(pipeline, limit_keys=tenant)  # the tenant's one call of the hour
    verification_id = "v-" + uuid.uuid4().hex
    _, _, summary = start(pipeline, verification_id=verification_id, limit_keys=tenant)
    assert summary == "rate_limited"
    assert not records.exists(verification_key(verification_id))  # no call counted in it
    # The same id starts its verification later, unrefused: it was never taken.
    assert start(pipeline, verification_id=verification_id)[2] == "placed"
    assert records.hget(verification_key(verification_id), "calls") == b"1"


def test_a_fallback_another_process_took_and_never_sent_is_sent_after_its_lease(
    records: redis.Redis,
) -> None:
    client = FakeClient(statuses=[CallStatus("c", "USER_BUSY", Outcome.BUSY)])
    pipeline = flows(records, client)
    task_id, request_id, _ = start(pipeline, fallback_task="sms.send_code")
    # Another process took the fallback a moment ago, then died before sending it.
    records.hset(key(request_id), "fallback_taken_at", repr(now()))
    assert pipeline.poll(request_id, record_of(pipeline, request_id).get("poll_token")) == "busy"
    assert _fallbacks(pipeline).sent == []
    assert progress_due(records, request_id) is not None  # still looked after
    pipeline.store.expect_progress(request_id, now() - 1)
    pipeline.sweep()
    assert _fallbacks(pipeline).sent == []  # the lease holds: looked at again after it
    assert progress_due(records, request_id) == within(now() + 35)
    records.hset(key(request_id), "fallback_taken_at", repr(now() - 60))
    pipeline.store.expect_progress(request_id, now() - 1)
    pipeline.sweep()
    assert [sent[2] for sent in _fallbacks(pipeline).sent] == [
        fallback_task_id(request_id, task_id)
    ]
    assert progress_due(records, request_id) is None


def test_a_test_call_whose_settle_was_lost_is_settled_by_its_poll_not_asked_about(
    records: redis.Redis,
) -> None:
    client = FakeClient()
    pipeline = flows(records, client)
    task_id, request_id = seed(
        records, pipeline, "placed", callid=quiet_callid(), poll_token="tok", placed_at=repr(now())
    )
    assert pipeline.poll(request_id, "tok") == "test number"
    assert client.status_requests == []
    assert outcome_of(pipeline, task_id)["raw_result"] == "TEST_NUMBER"
