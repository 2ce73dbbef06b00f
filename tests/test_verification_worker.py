"""Verification flows through a real worker, Redis and the simulator: a verification's life
across resends, the cap, shared attempts, the fallback task run by a product's own worker,
fraud and spend limits, test numbers, and the conversion metrics.

One worker of this module's own (short cooldowns, limits on prefixes no other test dials).
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import redis
from celery import Celery

from callpass_producer import Verification, Verifier
from chaos.product_app import RUNS_KEY
from tests.conftest import Simulator, start_worker
from tests.helpers import SCHEMAS, unique_dn
from tests.pipeline_fakes import epoch
from tests.test_observability import sample, scrape
from worker.dev.stack import Stack, child_env, free_port, wait_until
from worker.pipeline.fallback import fallback_task_id

QUEUE = "flows-" + uuid.uuid4().hex[:8]
PRODUCT_QUEUE = "product-sms-" + uuid.uuid4().hex[:8]
TEST_NUMBER, TEST_PIN = "79995550000001", "2468"
#: Numbers under these prefixes are dialed by this module alone.
BUDGET_PREFIX, WINDOW_PREFIX = "79997", "79998"
OUTCOME_V2 = json.loads((SCHEMAS / "outcome.v2.json").read_text())
COOLDOWNS_S = (2.0, 3.0)


@pytest.fixture(scope="module")
def flows_worker(stack: Stack, app: Celery, worker_env: dict[str, str]) -> Iterator[int]:
    """The module's worker; yields its metrics port."""
    port = free_port()
    env = {
        **worker_env,
        "CALLPASS_QUEUE": QUEUE,
        "CALLPASS_METRICS_PORT": str(port),
        "CALLPASS_RESEND_COOLDOWNS_S": ",".join(str(c) for c in COOLDOWNS_S),
        "CALLPASS_TEST_NUMBERS": f"{TEST_NUMBER}:{TEST_PIN}",
        "CALLPASS_KEY_LIMITS": "tenant=1/3600",
        "CALLPASS_CALL_BUDGETS": f"{BUDGET_PREFIX}/day=1",
        "CALLPASS_PREFIX_LIMITS": f"{WINDOW_PREFIX}=1/3600",
        "CALLPASS_DN_LIMITS": "",
    }
    proc = start_worker(stack, app, env, QUEUE)
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def verifier(redis_url: str, flows_worker: int) -> Iterator[Verifier]:
    v = Verifier(redis_url, queue=QUEUE)
    yield v
    v.close()


@pytest.fixture(scope="module")
def product_worker(stack: Stack, redis_url: str) -> Iterator[redis.Redis]:
    """The product's own worker, running its fallback task ``product.send_sms``."""
    argv = [sys.executable, "-m", "celery", "-A", "chaos.product_app", "worker"]
    argv += ["-Q", PRODUCT_QUEUE, "-P", "threads", "-c", "2", "--without-mingle"]
    env = child_env({"PRODUCT_REDIS_URL": redis_url})
    with open(stack.run_dir / "product.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


def wait_past(at_iso: str) -> None:
    """Wait (with a deadline) until the clock is past an outcome's ``retry_at``."""
    at = epoch(at_iso)
    wait_until(lambda: time.time() > at, 30, f"the clock past {at_iso}")


def wrong_code(pin: str) -> str:
    return "0129" if pin != "0129" else "0128"  # outside the caller pool


def test_one_verification_across_a_resend_as_the_producer_sees_it(
    verifier: Verifier, sim: Simulator
) -> None:
    dn = unique_dn("3")  # rings until its timeout: no answer
    first = verifier.start(dn, timeout=3, verification_id=f"signup-{uuid.uuid4()}")
    first_placed = verifier.pin(first)
    assert first_placed is not None
    early = verifier.outcome(verifier.resend(first, dn, timeout=3))
    jsonschema.validate(early, OUTCOME_V2)
    assert (early["outcome"], early["next_step"]) == ("rate_limited", "retry_later")
    wait_past(early["retry_at"])
    second = verifier.resend(first, dn, timeout=3)
    second_placed = verifier.pin(second)
    assert second_placed is not None
    wrong = verifier.check_code(first, wrong_code(first_placed["pin"]))
    # The user read the first call's caller ID: its code checks too.
    right = verifier.check_code(first, first_placed["pin"])
    assert (wrong["reason"], wrong["attempts_left"]) == ("mismatch", 2)
    assert (right["valid"], right["reason"], right["attempts_left"]) == (True, "ok", 1)
    docs = [verifier.outcome(first), verifier.outcome(second)]
    for doc in docs:
        jsonschema.validate(doc, OUTCOME_V2)
    assert [d["verification_id"] for d in docs] == [first.verification_id] * 2
    assert [d["next_step"] for d in docs] == ["wait_for_code"] * 2
    after = verifier.outcome(verifier.resend(first, dn, timeout=3))
    assert (after["outcome"], after["error"]["field"]) == ("invalid", "verification_id")
    assert [sim.starts_for(v.request_id) for v in (first, second)] == [1, 1]
    assert sim.starts_to(dn) == 2


def test_the_cap_stops_resends_and_attempts_count_across_calls(
    verifier: Verifier, sim: Simulator
) -> None:
    dn = unique_dn("1")
    first = verifier.start(dn, timeout=3, verification_id=f"cap-{uuid.uuid4()}")
    pins = [_pin(verifier, first)]
    for _cooldown in COOLDOWNS_S:
        waited = verifier.outcome(verifier.resend(first, dn, timeout=3))
        assert waited["outcome"] == "rate_limited"
        wait_past(waited["retry_at"])
        pins.append(_pin(verifier, verifier.resend(first, dn, timeout=3)))
    capped = verifier.outcome(verifier.resend(first, dn, timeout=3))
    assert (capped["outcome"], capped["retry_at"], capped["next_step"]) == (
        "rate_limited",
        None,
        "other_channel",
    )
    assert sim.starts_to(dn) == 3
    wrong = wrong_code(pins[0])
    reasons = [verifier.check_code(first, wrong)["reason"] for _ in range(3)]
    assert reasons == ["mismatch"] * 3  # three calls, still three attempts in all
    assert {verifier.check_code(first, pin)["reason"] for pin in pins} == {"too_many_attempts"}


def test_the_fallback_task_runs_once_under_redelivery(
    verifier: Verifier, product_worker: redis.Redis
) -> None:
    dn = unique_dn("2")  # busy: the call did not reach the phone
    fallback = {"fallback_task": "product.send_sms", "fallback_queue": PRODUCT_QUEUE}
    busy = verifier.start(dn, timeout=3, **fallback)
    assert verifier.outcome(busy)["next_step"] == "other_channel"
    # The same request delivered again (a second message with its request id) settles again.
    again = verifier.start(dn, timeout=3, request_id=busy.request_id, **fallback)
    assert verifier.outcome(again)["outcome"] == "busy"
    # A later request's fallback arrives seconds after any the redelivery could have sent.
    later = verifier.start(unique_dn("7"), timeout=3, **fallback)
    assert verifier.outcome(later)["next_step"] == "other_channel"
    wait_until(lambda: len(_runs(product_worker, later.request_id)) == 1, 90, "the fallback")
    [run] = _runs(product_worker, busy.request_id)
    assert run["task_id"] == fallback_task_id(busy.request_id, busy.task_id)
    assert (run["verification_id"], run["next_step"]) == (busy.request_id, "other_channel")
    assert run["outcome"]["outcome"] == "busy" and run["outcome"]["pin"] is None


def test_limits_and_budgets_refuse_without_reaching_the_api(
    verifier: Verifier, sim: Simulator
) -> None:
    tenant = {"tenant": uuid.uuid4().hex}
    first = verifier.start(unique_dn("1"), timeout=3, limit_keys=tenant)
    _pin(verifier, first)  # placed: the key's one call in the hour is spent
    keyed = verifier.start(unique_dn("1"), timeout=3, limit_keys=tenant)  # another number
    spend = [verifier.start(f"{BUDGET_PREFIX}{n}{uuid.uuid4().int % 10**7:07d}") for n in (1, 2)]
    burst = [verifier.start(f"{WINDOW_PREFIX}{n}{uuid.uuid4().int % 10**7:07d}") for n in (1, 2)]
    docs = [verifier.outcome(v) for v in (first, keyed, *spend, *burst)]
    assert [d["outcome"] for d in docs].count("rate_limited") == 3
    assert docs[1]["outcome"] == "rate_limited" and "'tenant'" in docs[1]["api_message"]
    refused_spend = [d for d in docs[2:4] if d["outcome"] == "rate_limited"]
    assert len(refused_spend) == 1 and "budget" in refused_spend[0]["api_message"]
    assert refused_spend[0]["retry_at"].endswith("T00:00:00.000Z")
    refused_burst = [d for d in docs[4:] if d["outcome"] == "rate_limited"]
    assert len(refused_burst) == 1 and "CALLPASS_PREFIX_LIMITS" in refused_burst[0]["api_message"]
    assert sim.starts_for(keyed.request_id) == 0
    assert sum(sim.starts_for(v.request_id) for v in spend) == 1
    assert sum(sim.starts_for(v.request_id) for v in burst) == 1


def test_a_test_number_settles_with_its_pin_and_never_reaches_the_simulator(
    verifier: Verifier, sim: Simulator
) -> None:
    v = verifier.start(TEST_NUMBER, timeout=3, verification_id=f"review-{uuid.uuid4()}")
    placed = verifier.pin(v)
    assert placed is not None and placed["pin"] == TEST_PIN
    doc = verifier.outcome(v)
    assert (doc["outcome"], doc["raw_result"], doc["next_step"]) == (
        "answered",
        "TEST_NUMBER",
        "wait_for_code",
    )
    assert verifier.check_code(v, TEST_PIN)["reason"] == "ok"
    assert sim.starts_to(TEST_NUMBER) == 0


def test_the_conversion_metrics_match_the_run(verifier: Verifier, flows_worker: int) -> None:
    before = scrape(flows_worker)
    converted, abandoned = (verifier.start(unique_dn("1"), timeout=3) for _ in range(2))
    pin = _pin(verifier, converted)
    _pin(verifier, abandoned)
    checks = [
        verifier.check_code(abandoned, wrong_code(pin)),
        verifier.check_code(converted, pin),
        verifier.check_code(converted, "12a4"),
    ]
    assert [c["reason"] for c in checks] == ["mismatch", "ok", "malformed_code"]

    def delta(name: str, **labels: str) -> float:
        return sample(scrape(flows_worker), name, **labels) - sample(before, name, **labels)

    wait_until(lambda: delta("callpass_code_checks_total", reason="ok") == 1, 10, "the counters")
    prefix = unique_dn("1")[:4]
    assert delta("callpass_verifications_started_total", prefix=prefix) == 2
    assert delta("callpass_verifications_converted_total", prefix=prefix) == 1
    assert delta("callpass_code_checks_total", reason="mismatch") == 1
    assert delta("callpass_code_checks_total", reason="malformed_code") == 1


def _pin(verifier: Verifier, verification: Verification) -> str:
    placed = verifier.pin(verification)
    assert placed is not None
    return str(placed["pin"])


def _runs(client: redis.Redis, request_id: str) -> list[dict[str, Any]]:
    runs = [json.loads(raw) for raw in client.lrange(RUNS_KEY, 0, -1)]
    return [run for run in runs if run["request_id"] == request_id]
