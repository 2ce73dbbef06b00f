"""The Python producer helper end to end: start, pin, outcome, code check, with no Celery."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from callpass_producer import InvalidArguments, Verification, Verifier
from tests.helpers import unique_dn


@pytest.fixture
def verifier(redis_url: str, worker: Any) -> Iterator[Verifier]:
    v = Verifier(redis_url)
    yield v
    v.close()


def test_a_verification_from_start_to_code_check(verifier: Verifier, sim: Any) -> None:
    request_id = f"verifier-{uuid.uuid4()}"
    v = verifier.start(unique_dn("1"), timeout=3, request_id=request_id)
    assert v.request_id == request_id
    placed = verifier.pin(v)
    assert placed is not None
    doc = verifier.outcome(v.task_id)  # a task id kept as a string works as well
    assert doc["outcome"] == "answered"
    assert doc["callid"] == placed["callid"]
    wrong = "0000" if placed["pin"] != "0000" else "0001"
    assert verifier.check_code(request_id, wrong) == {
        "valid": False,
        "reason": "mismatch",
        "attempts_left": 2,
    }
    assert verifier.check_code(request_id, placed["pin"])["reason"] == "ok"


def test_a_request_without_a_call_has_no_pin_and_says_why(verifier: Verifier) -> None:
    v = verifier.start(unique_dn("6"), timeout=3)  # the simulator refuses the destination
    assert verifier.pin(v) is None
    assert verifier.outcome(v)["outcome"] == "api_error"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dn": "+79991234567"}, "dn"),
        ({"dn": "79991234567", "timeout": 100}, "timeout"),
        ({"dn": "79991234567", "request_id": "has space"}, "request_id"),
        ({"dn": "79991234567", "webhook_url": "ftp://x"}, "webhook_url"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    verifier: Verifier, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArguments) as exc:
        verifier.start(**kwargs)
    assert exc.value.field == field


def test_waiting_past_the_deadline_raises_timeout(verifier: Verifier) -> None:
    unknown = Verification(task_id=str(uuid.uuid4()), request_id="never-sent")
    with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
        verifier.pin(unknown, timeout_s=0.3)
    with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
        verifier.outcome(unknown, timeout_s=0.3)


def test_beside_a_separate_broker_the_outbox_note_goes_to_the_workers_redis(
    redis_url: str,
) -> None:
    """The sweeper reads notes from CALLPASS_REDIS_URL, whatever the broker is."""
    from worker.producer import verifier_from_settings
    from worker.settings import load_settings

    broker = "amqp://guest:guest@127.0.0.1:5672//"  # never connected to: nothing is sent
    settings = load_settings({"CALLPASS_REDIS_URL": redis_url, "CALLPASS_BROKER_URL": broker})
    verifier = verifier_from_settings(settings)
    try:
        kwargs = verifier._redis.connection_pool.connection_kwargs
        assert f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}" == redis_url
    finally:
        verifier.close()


@pytest.mark.usefixtures("worker")
def test_a_plain_celery_app_reaches_the_workers_queue(redis_url: str) -> None:
    """An app that names no queue sends to Celery's "celery", which no worker reads: the
    helpers send to "callpass" instead."""
    from celery import Celery

    from callpass_producer import enqueue_call, verify_code, wait_for_pin

    app = Celery(broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    result = enqueue_call(app, unique_dn("1"), 3)
    placed = wait_for_pin(result, timeout_s=30)
    assert placed is not None
    assert verify_code(app, placed["request_id"], placed["pin"])["reason"] == "ok"
    app.close()
