"""Checking the code a user typed: digests only, constant-time, capped, consumed on success."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from celery import Celery

import worker.pipeline.pins
from callpass_producer import enqueue_call, verify_code, wait_for_pin
from callpass_producer.contracts.verify import CodeReason
from tests.conftest import OwnWorker, Simulator
from tests.helpers import settle, unique_dn
from worker.dev.stack import wait_until
from worker.pipeline.pins import LEGACY_PIN_PREFIX, PinVault, VerificationCall, derive_key
from worker.pipeline.verifications import verification_key


@pytest.fixture
def vault(records: redis.Redis) -> PinVault:
    return PinVault(
        records, derive_key("k" * 32), ttl_s=600, max_attempts=3, verification_ttl_s=3600
    )


def keep(vault: PinVault, request_id: str, pin: str, verification_id: str = "") -> None:
    """Keep ``pin`` as the placed call of ``request_id`` (in its own verification of one,
    unless ``verification_id`` names another, which admits the request first, as a resend's
    admission does)."""
    key = verification_key(verification_id)
    if verification_id and vault._redis.exists(key):
        vault._redis.hset(key, "req:" + request_id, 1)
    vault.store(VerificationCall(verification_id or request_id, request_id, "d" * 32, "7999"), pin)


def stored_pins(client: redis.Redis, verification_id: str) -> list[list[Any]]:
    raw = client.hget(verification_key(verification_id), "pins")
    return json.loads(raw) if raw else []


VERIFY_SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "verify_code.v1.json").read_text()
)


def rid() -> str:
    return f"code-{uuid.uuid4()}"


def test_a_correct_code_is_ok_once_then_consumed(vault: PinVault) -> None:
    request_id = rid()
    keep(vault, request_id, "0446")
    assert vault.verify(request_id, "0446").model_dump(mode="json") == {
        "valid": True,
        "reason": "ok",
        "attempts_left": 2,
    }
    assert vault.verify(request_id, "0446").reason == "expired"


def test_wrong_codes_count_down_to_too_many_attempts(vault: PinVault) -> None:
    request_id = rid()
    keep(vault, request_id, "0446")
    answers = [vault.verify(request_id, "0447") for _ in range(3)]
    assert [(a.reason, a.attempts_left) for a in answers] == [
        ("mismatch", 2),
        ("mismatch", 1),
        ("mismatch", 0),
    ]
    # Even the right code is refused now: 853 possible pins must not be brute-forced.
    assert vault.verify(request_id, "0446").model_dump(mode="json") == {
        "valid": False,
        "reason": "too_many_attempts",
        "attempts_left": 0,
    }


FULLWIDTH_0446 = "\uff10\uff14\uff14\uff16"


@pytest.mark.parametrize("code", ["", "04a6", "446", "1234567", FULLWIDTH_0446, 446, None, " 0446"])
def test_malformed_codes_are_refused_without_spending_an_attempt(
    vault: PinVault, code: object
) -> None:
    request_id = rid()
    keep(vault, request_id, "0446")
    answer = vault.verify(request_id, code).model_dump(mode="json")
    assert answer == {"valid": False, "reason": "malformed_code", "attempts_left": 3}
    assert vault.verify(request_id, "0446").reason == "ok"


def test_unknown_and_expired_requests_are_told_apart(records: redis.Redis) -> None:
    vault = PinVault(
        records, derive_key("k" * 32), ttl_s=1, max_attempts=3, verification_ttl_s=3600
    )
    assert vault.verify(rid(), "0446").reason == "unknown_request"
    request_id = rid()
    keep(vault, request_id, "0446")
    [(_, _, expires_at)] = stored_pins(records, request_id)
    wait_until(lambda: time.time() > expires_at, 10, "the pin's TTL")
    assert vault.verify(request_id, "0446").model_dump(mode="json") == {
        "valid": False,
        "reason": "expired",
        "attempts_left": 0,
    }


def test_only_a_keyed_digest_is_stored_and_compared_in_constant_time(
    vault: PinVault, records: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = rid()
    keep(vault, request_id, "0446")
    stored = records.hgetall(verification_key(request_id))
    assert b"0446" not in b"".join(stored.values())
    other = rid()
    keep(vault, other, "0446")
    assert stored_pins(records, other)[0][1] != stored_pins(records, request_id)[0][1]  # id in MAC
    # A resend in the same verification: both calls' pins live, both compared every time.
    keep(vault, rid(), "0999", verification_id=request_id)
    calls: list[tuple[Any, Any]] = []
    real = worker.pipeline.pins.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(worker.pipeline.pins.hmac, "compare_digest", spy)
    vault.verify(request_id, "0447")
    assert len(calls) == 2
    calls.clear()
    assert vault.verify(request_id, "0446").reason == "ok"  # the first of two matches
    assert len(calls) == 2


def test_a_code_of_an_earlier_call_checks_and_attempts_are_shared(vault: PinVault) -> None:
    verification_id = rid()
    keep(vault, verification_id, "0446")
    keep(vault, rid(), "0811", verification_id=verification_id)
    answers = [vault.verify(verification_id, code) for code in ("0001", "0002", "0446")]
    # Three attempts per verification, however many calls it had: the third is the last.
    assert [(a.reason, a.attempts_left) for a in answers] == [
        ("mismatch", 2),
        ("mismatch", 1),
        ("ok", 0),
    ]
    assert vault.verify(verification_id, "0811").reason == "expired"  # a correct code ended it


def test_only_the_latest_calls_pins_check(records: redis.Redis) -> None:
    vault = PinVault(
        records, derive_key("k" * 32), ttl_s=600, max_attempts=5, verification_ttl_s=3600,
        live_calls=2,
    )  # fmt: skip
    verification_id = rid()
    for pin in ("0101", "0202", "0303"):
        keep(vault, rid(), pin, verification_id=verification_id)
    assert vault.verify(verification_id, "0101").reason == "mismatch"  # dropped: 3rd call
    assert vault.verify(verification_id, "0202").reason == "ok"


def test_a_pin_kept_by_an_earlier_version_still_checks(
    vault: PinVault, records: redis.Redis
) -> None:
    request_id = rid()
    digest = vault._digest(request_id, "0446")
    records.hset(LEGACY_PIN_PREFIX + request_id, mapping={"digest": digest, "attempts": 0})
    records.expire(LEGACY_PIN_PREFIX + request_id, 60)
    assert vault.verify(request_id, "0447").reason == "mismatch"
    assert vault.verify(request_id, "0446").model_dump(mode="json") == {
        "valid": True,
        "reason": "ok",
        "attempts_left": 1,
    }
    assert not records.exists(LEGACY_PIN_PREFIX + request_id)


def test_reasons_are_the_documented_ones() -> None:
    assert {reason.value for reason in CodeReason} == {
        "ok", "mismatch", "expired", "too_many_attempts", "unknown_request", "malformed_code",
    }  # fmt: skip


@pytest.mark.usefixtures("worker")
def test_a_producer_checks_the_code_through_the_worker(app: Celery) -> None:
    request_id = rid()
    result = enqueue_call(app, unique_dn("3"), 3, request_id=request_id)
    placed = wait_for_pin(result, 10)
    assert placed is not None
    wrong = "0129" if placed["pin"] != "0129" else "0128"  # outside the caller pool
    answers = [
        verify_code(app, request_id, wrong),
        verify_code(app, request_id, placed["pin"]),
        verify_code(app, rid(), placed["pin"]),
    ]
    assert [a["reason"] for a in answers] == ["mismatch", "ok", "unknown_request"]
    for answer in answers:
        jsonschema.validate(answer, VERIFY_SCHEMA)
    settle(result)


def test_pins_can_be_kept_from_leaving_the_worker(
    app: Celery, sim: Simulator, own_worker: OwnWorker
) -> None:
    with own_worker("nopins", CALLPASS_PINS_LEAVE_WORKER="false"):
        request_id = rid()
        result = enqueue_call(app, unique_dn("1"), 5, request_id=request_id, queue="nopins")
        placed = wait_for_pin(result, 10)
        assert placed is not None and placed["pin"] is None and placed["callid"]
        doc = settle(result)
        assert doc["pin"] is None and doc["callid"] == placed["callid"]
        pin = next(c for c in sim.calls() if c["callid"] == doc["callid"])["pin"]
        answer = app.send_task("callpass.verify_code", args=[request_id, pin], queue="nopins").get(
            timeout=10
        )
        assert answer["reason"] == "ok"


def test_a_request_whose_id_is_another_verifications_adds_no_pin_to_it(vault: PinVault) -> None:
    verification_id = rid()
    keep(vault, rid(), "0446", verification_id=verification_id)
    # A request of version 1 under that very id, to another number: its pin stays out.
    keep(vault, verification_id, "0999")
    assert vault.verify(verification_id, "0999").reason == "mismatch"
    assert vault.verify(verification_id, "0446").reason == "ok"
