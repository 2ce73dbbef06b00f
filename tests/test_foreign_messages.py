"""Messages in a serialiser the worker does not accept, against a real worker and Redis.

Each gets an ``invalid`` outcome under its task id (the producer does not wait forever), none
ends in FAILURE, the worker stays up, and the number in the body shows in no log line, in the
text and the JSON log format alike.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from chaos.hostile import FOREIGN_KINDS, foreign_body, publish_raw, raw_message
from tests.conftest import OwnWorker
from worker.dev.stack import wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
#: The three the issue names first; the others are Celery's other dead ends.
NAMED_KINDS = ("pickle", "yaml", "raw")


def _meta(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    raw = client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw else None


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_foreign_serialisers_are_answered_and_never_logged(
    own_worker: OwnWorker, redis_url: str, app: Celery, log_format: str
) -> None:
    queue = f"foreign-{log_format}"
    client = redis.Redis.from_url(redis_url)
    with own_worker(queue, CALLPASS_LOG_FORMAT=log_format) as proc:
        sent: dict[str, tuple[str, str, str]] = {}  # task id → kind, number, refused field
        for i, kind in enumerate(FOREIGN_KINDS):
            dn = f"7916{uuid.uuid4().int % 10**7:07d}"
            foreign = foreign_body(kind, {"dn": dn, "timeout": 3, "request_id": f"f-{i}"})
            task_id = str(uuid.uuid4())
            envelope = raw_message(
                task_id, foreign.body, foreign.content_type, foreign.encoding, queue
            )
            publish_raw(client, queue, envelope)
            sent[task_id] = (kind, dn, foreign.field)

        def all_answered() -> bool:
            return all(_meta(client, task_id) for task_id in sent)

        wait_until(all_answered, 30, "an answer for every foreign message")
        schema = json.loads((SCHEMAS / "outcome.v1.json").read_text())
        for task_id, (kind, _dn, field) in sent.items():
            meta = _meta(client, task_id)
            assert meta is not None
            assert meta["status"] == "SUCCESS", (kind, meta)
            doc = meta["result"]
            jsonschema.validate(doc, schema)
            assert doc["outcome"] == "invalid" and doc["call_placed"] is False, (kind, doc)
            assert doc["error"]["field"] == field, (kind, doc)
            assert doc["request_id"] == task_id
        # The producer's own view: AsyncResult.get() returns the document.
        first = next(iter(sent))
        assert AsyncResult(first, app=app).get(timeout=10)["outcome"] == "invalid"
        # Acked once answered: nothing left on the queue or unacked, and the worker is up.
        wait_until(lambda: client.llen(queue) == 0, 10, "the queue drained")
        assert proc.alive(), proc.log_tail()
        log_text = proc.log_path.read_text(errors="replace")
    for kind, dn, _field in sent.values():
        assert dn not in log_text, f"{kind}: number {dn} in clear in the {log_format} log"
    assert "Unrecoverable error" not in log_text
    if log_format == "json":
        for line in log_text.splitlines():
            if line.startswith("{"):
                json.loads(line)  # every line of ours stays one JSON object


def test_headers_celery_cannot_read_are_answered_under_the_correlation_id(
    own_worker: OwnWorker, redis_url: str
) -> None:
    """A non-string task id (Celery ran it as request "5" or "None") and a malformed time
    limit (Celery's consumer crashed) are refused, answered and acked."""
    queue = "foreign-headers"
    client = redis.Redis.from_url(redis_url)
    body = json.dumps([[], {"dn": "79161230001", "timeout": 3}, {}]).encode()
    cases = {"id": {"id": 5}, "id-null": {"id": None}, "headers": {"timelimit": "x"}}
    with own_worker(queue) as proc:
        sent = {}
        for name, headers in cases.items():
            task_id = str(uuid.uuid4())
            envelope = raw_message(task_id, body, "application/json", "utf-8", queue, headers)
            publish_raw(client, queue, envelope)
            sent[task_id] = name.removesuffix("-null")
        # No task header at all (protocol 1): Celery decodes the body itself, fails, and
        # used to log it whole in its "Can't decode message body" line.
        task_id = str(uuid.uuid4())
        pickled = foreign_body("pickle", {"dn": "79161230002", "timeout": 3})
        envelope = json.loads(
            raw_message(task_id, pickled.body, pickled.content_type, pickled.encoding, queue)
        )
        del envelope["headers"]["task"]
        publish_raw(client, queue, json.dumps(envelope))
        sent[task_id] = "content_type"
        # An unregistered task name: Celery's own answer (FAILURE NotRegistered) and its own
        # log line, which printed the body; a protocol-0 pickle writes "V79161230003".
        unregistered = str(uuid.uuid4())
        pickled = foreign_body("pickle0", {"dn": "79161230003", "timeout": 3})
        envelope = json.loads(
            raw_message(unregistered, pickled.body, pickled.content_type, pickled.encoding, queue)
        )
        envelope["headers"]["task"] = "callpass.no_such_task"
        publish_raw(client, queue, json.dumps(envelope))
        wait_until(lambda: _meta(client, unregistered), 30, "Celery's NotRegistered answer")
        wait_until(lambda: all(_meta(client, t) for t in sent), 30, "every answer")
        for task_id, field in sent.items():
            meta = _meta(client, task_id)
            assert meta is not None and meta["status"] == "SUCCESS"
            assert meta["result"]["error"]["field"] == field, meta
        assert proc.alive(), proc.log_tail()
        assert _meta(client, "5") is None and _meta(client, "None") is None
        log_text = proc.log_path.read_text(errors="replace")
    for dn in ("79161230001", "79161230002", "79161230003"):
        assert dn not in log_text, dn
    assert "Received unregistered task" in log_text  # Celery's line is there, without the body
