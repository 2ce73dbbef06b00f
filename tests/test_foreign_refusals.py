"""What the consumer decides about a message it may not be able to read (no processes).

Property: whatever the content type, encoding, body and task id, the check never raises; a
message it lets through is one Celery can unpack as ``[args, kwargs, embed]``; a refused one is
answered with a schema-valid ``invalid`` document naming the field, and acked only after the
answer is stored.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from celery.exceptions import InvalidTaskError
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message

from worker.broker.foreign_messages import (
    ForeignMessageConsumer,
    Refusal,
    answer_for,
    read_task_id,
    refusal_for,
    refusal_from_error,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "outcome.v1.json").read_text()
)
START = "callpass.start_call"
PICKLE = "application/x-python-serialize"


def message(
    body: bytes,
    content_type: str = "application/json",
    encoding: str = "utf-8",
    headers: dict[str, Any] | None = None,
    correlation_id: object = "t-1",
) -> Message:
    return Message(
        body=body,
        content_type=content_type,
        content_encoding=encoding,
        headers={"id": "t-1", "task": START} if headers is None else headers,
        properties={"correlation_id": correlation_id},
        accept=["application/json"],
    )


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (pickle.dumps(((), {"dn": "79161234567"}, {})), PICKLE, "content_type"),
        (b"- []\n- {dn: '79161234567'}\n- {}\n", "application/x-yaml", "content_type"),
        (b"\x0b79161234567", "application/data", "content_type"),
        (b"79161234567", "", "content_type"),
        (b'[[], {"dn": "79161234567"}, {', "application/json", "body"),
        (b'[[], {"dn": "\xff"}, {}]', "application/json", "body"),
        (b'{"dn": "79161234567"}', "application/json", "body"),
        (b'[[], [], {}]', "application/json", "body"),
        (b'[5, {}, {}]', "application/json", "body"),
        (b'[[], {}, "x"]', "application/json", "body"),
        (b'[[], {}, {"callbacks": 5}]', "application/json", "body"),
    ],
)  # fmt: skip
def test_what_celery_cannot_run_is_refused_naming_the_field(
    body: bytes, content_type: str, field: str
) -> None:
    refusal = refusal_for(message(body, content_type))
    assert refusal is not None and refusal.field == field


def test_a_task_id_that_is_not_a_string_is_refused_and_answered_by_correlation_id() -> None:
    m = message(b"[[], {}, {}]", headers={"id": 5, "task": START}, correlation_id="corr-1")
    refusal = refusal_for(m)
    assert refusal is not None and refusal.field == "id"
    assert read_task_id(m) == "corr-1"


def test_well_formed_messages_pass() -> None:
    assert refusal_for(message(b'[[], {"dn": "79161234567"}, null]')) is None
    assert refusal_for(message(b'[[], {}, {"callbacks": null, "chord": null}]')) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(json_values, json_values, json_values).map(lambda t: json.dumps(t).encode()),
)
content_types = st.sampled_from(
    ["application/json", "application/x-python-serialize", "application/x-yaml",
     "application/data", "application/text", "", "text/plain"]
)  # fmt: skip
task_ids = st.one_of(st.text(max_size=300), json_values)


@settings(max_examples=500, deadline=None)
@given(bodies, content_types, st.sampled_from(["utf-8", "binary", "latin-1"]), task_ids)
def test_any_message_is_either_runnable_or_answered(
    body: bytes, content_type: str, encoding: str, task_id: Any
) -> None:
    m = message(body, content_type, encoding, {"id": task_id, "task": START}, task_id)
    refusal = refusal_for(m)
    if refusal is None:
        args, kwargs, embed = m.decode()  # what Celery's request and tracer do with it
        assert isinstance(args, list) and isinstance(kwargs, dict)
        assert embed is None or isinstance(embed, dict)
        return
    readable_id = read_task_id(m)
    assert readable_id is None or isinstance(readable_id, str)
    doc = answer_for(START, readable_id or "t-1", refusal)
    assert doc is not None
    jsonschema.validate(doc, SCHEMA)
    assert doc["outcome"] == "invalid" and doc["error"]["field"] == refusal.field


class _Backend:
    def __init__(self, fail: bool) -> None:
        self.fail, self.stored = fail, {}

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        if self.fail:
            raise ConnectionError("backend down")
        return {"status": "PENDING"}

    def store_result(self, task_id: str, result: Any, state: str) -> None:
        self.stored[task_id] = (state, result)


class _Message:
    headers = {"id": "t-1", "task": START}  # noqa: RUF012 - a stub
    properties: dict[str, Any] = {}  # noqa: RUF012
    acked = 0

    def ack_log_error(self, logger: Any, errors: Any) -> None:
        self.acked += 1


def _consumer(backend: _Backend) -> Any:
    later: list[tuple[float, Any, tuple[Any, ...]]] = []
    timer = SimpleNamespace(call_after=lambda s, fun, args: later.append((s, fun, args)))
    fake = SimpleNamespace(app=SimpleNamespace(backend=backend), timer=timer, later=later)
    fake.connection_errors = fake.channel_errors = ()
    fake._store_once = lambda t, a: ForeignMessageConsumer._store_once(fake, t, a)
    fake._answer_then_ack = lambda m, r, n: ForeignMessageConsumer._answer_then_ack(fake, m, r, n)
    return fake


def test_the_ack_waits_until_the_answer_is_stored() -> None:
    backend = _Backend(fail=True)
    consumer, msg = _consumer(backend), _Message()
    refusal = Refusal("content_type", "must be JSON (application/json)")
    consumer._answer_then_ack(msg, refusal, 0)
    assert msg.acked == 0 and not backend.stored  # kept: redelivered if this worker dies
    assert len(consumer.later) == 1  # and tried again later
    backend.fail = False
    delay, fun, args = consumer.later.pop()
    assert delay >= 1
    fun(*args)
    assert backend.stored["t-1"][0] == "SUCCESS" and msg.acked == 1


def test_errors_celery_raises_name_the_field() -> None:
    assert refusal_from_error(ContentDisallowed("pickle")).field == "content_type"
    assert refusal_from_error(DecodeError("bad")).field == "body"
    assert refusal_from_error(InvalidTaskError("invalid ETA value 'x': …")).field == "eta"
    assert refusal_from_error(InvalidTaskError("invalid expires value 'x'")).field == "expires"
    assert refusal_from_error(ValueError("?")).field == "message"


@pytest.mark.parametrize(
    "eta", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "soon", 5, ["x"]]
)
def test_an_eta_celery_cannot_schedule_is_refused_naming_it(eta: object) -> None:
    """Celery's strategy would store FAILURE (OverflowError) for these, not an answer."""
    headers = {"id": "t-1", "task": START, "eta": eta}
    refusal = refusal_for(message(b'[[], {"dn": "79161234567"}, null]', headers=headers))
    assert refusal is not None and refusal.field == "eta"


def test_a_schedulable_eta_passes() -> None:
    headers = {"id": "t-1", "task": START, "eta": "2026-12-01T10:00:00.123456+00:00"}
    assert refusal_for(message(b'[[], {"dn": "79161234567"}, null]', headers=headers)) is None
