"""The whole loop against real parts: producer → Redis → worker → simulator → result backend."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema
import pytest
from celery import Celery

from callpass_producer import enqueue_call, wait_for_pin
from tests.conftest import OwnWorker, Simulator
from tests.helpers import PLACED_SCHEMA, settle, task_events, unique_dn
from worker.dev.stack import Proc, wait_until

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.parametrize(
    ("digit", "timeout", "outcome", "raw"),
    [
        ("1", 5, "answered", "NORMAL_CLEARING"),
        ("2", 5, "busy", "USER_BUSY"),
        ("3", 2, "no_answer", "NO_ANSWER"),
        ("4", 5, "not_answered", "ORIGINATOR_CANCEL"),
        ("9", 5, "rejected", "CALL_REJECTED"),
    ],
)
def test_each_final_result_settles_with_its_outcome(
    app: Celery, sim: Simulator, digit: str, timeout: int, outcome: str, raw: str
) -> None:
    """A call that ends settles once, classified, with the raw result and the pin kept."""
    dn = unique_dn(digit)
    result = enqueue_call(app, dn, timeout)
    doc = settle(result)
    assert doc["outcome"] == outcome
    assert doc["raw_result"] == raw
    assert doc["call_placed"] is True
    assert doc["request_id"] == result.id
    assert doc["dn_masked"] != dn and doc["dn_masked"][-2:] == dn[-2:]
    call = next(c for c in sim.calls() if c["callid"] == doc["callid"])
    assert call["dn"] == dn
    assert sim.starts_for(result.id) == 1
    # The document counts exactly the status requests the API received for this call.
    assert doc["status_requests"] == sim.stats()["status_by_callid"][doc["callid"]]
    assert doc["status_requests"] >= 1


def test_a_call_without_final_status_settles_unknown_after_the_grace(
    app: Celery, sim: Simulator
) -> None:
    """No final status within timeout + grace (3 s here) → unknown; the callid is kept."""
    result = enqueue_call(app, unique_dn("5"), 2)
    doc = settle(result)
    assert doc["outcome"] == "unknown"
    assert doc["callid"] is not None and doc["call_placed"] is True
    assert doc["raw_result"] is None
    assert "timeout + grace" in (doc["api_message"] or "")
    # Polls continued through the grace: more than the single end-of-call poll.
    assert doc["status_requests"] >= 3


def test_destination_not_allowed_settles_as_api_error_without_a_call(
    app: Celery, sim: Simulator
) -> None:
    dn = unique_dn("6")
    doc = settle(enqueue_call(app, dn, 5))
    assert doc["outcome"] == "api_error"
    assert doc["api_message"] == "destination not allowed"
    assert doc["callid"] is None and doc["pin"] is None and doc["call_placed"] is False
    assert sim.starts_to(dn) == 1  # asked once, never again


@pytest.mark.parametrize(
    ("kwargs", "field", "rule_part"),
    [
        ({"dn": "+79991234567", "timeout": 5}, "dn", "without '+'"),
        ({"dn": "7999 123 45 67", "timeout": 5}, "dn", "digits"),
        ({"dn": "89991234567", "timeout": 5}, "dn", "starting with 7"),
        ({"dn": 79991234567, "timeout": 5}, "dn", "must be a string"),
        ({"dn": "7٩٩٩1234567", "timeout": 5}, "dn", "ASCII"),
        ({"dn": "79991234567", "timeout": 1}, "timeout", "between 2 and 99"),
        ({"dn": "79991234567", "timeout": 100}, "timeout", "between 2 and 99"),
        ({"dn": "79991234567", "timeout": 5.5}, "timeout", "whole number"),
        ({"dn": "79991234567", "timeout": True}, "timeout", "whole number"),
        ({"dn": "79991234567", "timeout": "10"}, "timeout", "whole number"),
        ({"timeout": 5}, "dn", "required"),
        ({"dn": "79991234567", "colour": "red"}, "colour", "not an argument"),
    ],
)
def test_bad_input_settles_invalid_and_places_no_call(
    app: Celery, sim: Simulator, kwargs: dict[str, Any], field: str, rule_part: str
) -> None:
    """Bad input gets one `invalid` document naming the field and the rule; nothing is dialed."""
    starts_before = sim.stats()["starts"]
    result = app.send_task("callpass.start_call", kwargs=kwargs, queue="callpass")
    doc = settle(result)
    assert doc["outcome"] == "invalid"
    assert doc["error"]["field"] == field
    assert rule_part in doc["error"]["rule"]
    assert doc["call_placed"] is False
    assert sim.stats()["starts"] == starts_before


def test_positional_arguments_are_refused(app: Celery, sim: Simulator) -> None:
    result = app.send_task("callpass.start_call", args=["79991234567", 5], queue="callpass")
    doc = settle(result)
    assert doc["outcome"] == "invalid"
    assert doc["error"]["field"] == "args"
    assert "keyword" in doc["error"]["rule"]


def test_pin_is_readable_before_the_final_outcome(app: Celery) -> None:
    """The producer reads callid and pin (state PLACED) while the call still rings."""
    result = enqueue_call(app, unique_dn("3"), 6)
    placed = wait_for_pin(result, timeout_s=10)
    assert placed is not None
    jsonschema.validate(placed, PLACED_SCHEMA)
    assert not result.ready()  # the call rings for 6 s; the outcome is not there yet
    doc = settle(result)
    assert (doc["callid"], doc["pin"]) == (placed["callid"], placed["pin"])


def test_a_redelivered_start_call_does_not_dial_again(app: Celery, sim: Simulator) -> None:
    """The same start_call message delivered twice (as after a lost ack) places one call."""
    dn = unique_dn("3")
    task_id = str(uuid.uuid4())
    first = enqueue_call(app, dn, 4, task_id=task_id)
    placed = wait_for_pin(first, timeout_s=10)
    assert placed is not None
    again = enqueue_call(app, dn, 4, task_id=task_id)  # the redelivery, mid-call
    doc = settle(again)
    assert doc["outcome"] == "no_answer"
    assert doc["callid"] == placed["callid"]
    assert sim.starts_to(dn) == 1
    assert sim.starts_for(task_id) == 1
    # Delivered once more after it settled: still one call, same document.
    late = enqueue_call(app, dn, 4, task_id=task_id)
    wait_until(lambda: late.ready(), 20, "re-published outcome")
    assert late.get(timeout=5) == doc
    assert sim.starts_to(dn) == 1


def test_one_request_id_enqueued_twice_places_one_call_and_answers_both(
    app: Celery, sim: Simulator
) -> None:
    """A producer that retries its enqueue with the same request_id gets one call, two answers."""
    dn = unique_dn("1")
    request_id = f"order-{uuid.uuid4()}"
    a = enqueue_call(app, dn, 5, request_id=request_id)
    b = enqueue_call(app, dn, 5, request_id=request_id)
    doc_a, doc_b = settle(a), settle(b)
    assert doc_a == doc_b
    assert doc_a["request_id"] == request_id and doc_a["outcome"] == "answered"
    assert sim.starts_for(request_id) == 1


def test_a_request_id_reused_for_another_number_is_refused(app: Celery, sim: Simulator) -> None:
    request_id = f"reuse-{uuid.uuid4()}"
    first = settle(enqueue_call(app, unique_dn("1"), 5, request_id=request_id))
    other_dn = unique_dn("2")
    second = settle(enqueue_call(app, other_dn, 5, request_id=request_id))
    assert first["outcome"] == "answered"
    assert second["outcome"] == "invalid" and second["error"]["field"] == "request_id"
    assert sim.starts_to(other_dn) == 0


def test_a_rejected_token_settles_auth_failed(
    app: Celery, sim: Simulator, own_worker: OwnWorker
) -> None:
    """A worker whose token the API does not know places nothing and says why."""
    with own_worker("badtoken", CALLPASS_API_TOKEN="f" * 32) as proc:
        dn = unique_dn("1")
        doc = settle(enqueue_call(app, dn, 5, queue="badtoken"))
        assert doc["outcome"] == "auth_failed"
        assert "403" in (doc["api_message"] or "")
        assert sim.starts_to(dn) == 0
        assert "f" * 32 not in proc.log_path.read_text()


def test_numbers_are_masked_and_pins_absent_in_the_worker_log(app: Celery, worker: Proc) -> None:
    """The worker's DEBUG log shows masked numbers only, and never a pin."""
    dn = unique_dn("1")
    result = enqueue_call(app, dn, 5)
    doc = settle(result)
    log = worker.log_path.read_text()
    assert result.id in log  # the request's lines are there ...
    assert dn not in log  # ... but never the full number
    assert doc["dn_masked"] in log
    lines = [line for line in log.splitlines() if result.id in line or doc["callid"] in line]
    assert lines and not any(doc["pin"] in line for line in lines)


def test_task_events_show_masked_arguments(app: Celery) -> None:
    """What Flower receives (task-received events) carries the masked number only."""
    dn = unique_dn("1")
    with task_events(app) as seen:
        result = enqueue_call(app, dn, 5)
        wait_until(
            lambda: any(e.get("uuid") == result.id and e["type"] == "task-received" for e in seen),
            20,
            "task-received event",
        )
    event = next(e for e in seen if e.get("uuid") == result.id and e["type"] == "task-received")
    assert dn not in json.dumps(event)
    assert dn[:4] in event["kwargs"] and "*" in event["kwargs"]
