"""A producer with no Celery at all: a hand-built protocol-2 message published with redis-py.

This is the recipe the README gives producers in other languages; the outcome is read back
from the result backend's key, also with plain redis-py.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis

from worker.dev.stack import wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def publish_start_call(client: redis.Redis, task_id: str, kwargs: dict[str, Any]) -> None:
    """Exactly the message a producer in any language pushes to the `callpass` list."""
    body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None}])  # fmt: skip
    message = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "callpass.start_call",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "argsrepr": "()",
            "kwargsrepr": "{'dn': '<masked>'}",
            "callpass_requested_at": time.time(),
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "callpass"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    client.lpush("callpass", json.dumps(message))


def read_result(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    raw = client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw else None


@pytest.mark.usefixtures("worker")
def test_a_hand_built_message_gets_pin_and_outcome(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    task_id = str(uuid.uuid4())
    publish_start_call(client, task_id, {"dn": "79990009101", "timeout": 3})

    def state(wanted: str) -> dict[str, Any] | None:
        meta = read_result(client, task_id)
        return meta if meta and meta["status"] in (wanted, "SUCCESS") else None

    placed = wait_until(lambda: state("PLACED"), 20, "the PLACED state")
    assert placed["result"]["pin"] and placed["result"]["callid"]
    done = wait_until(lambda: state("SUCCESS"), 30, "the outcome")
    doc = done["result"]
    jsonschema.validate(doc, json.loads((SCHEMAS / "outcome.v1.json").read_text()))
    assert doc["outcome"] == "answered" and doc["request_id"] == task_id


@pytest.mark.usefixtures("worker")
def test_a_hand_built_resend_is_refused_in_its_cooldown_with_a_version_2_document(
    records: redis.Redis,
) -> None:
    """Version-2 arguments travel in the same kwargs; the answer is a version-2 document."""
    verification_id = f"raw-{uuid.uuid4()}"
    dn = f"7999000{uuid.uuid4().int % 10**7:07d}1"
    first, resend = str(uuid.uuid4()), str(uuid.uuid4())
    publish_start_call(records, first, {"dn": dn, "timeout": 3, "verification_id": verification_id})
    wait_until(lambda: (read_result(records, first) or {}).get("status") in ("PLACED", "SUCCESS"),
               20, "the first call")  # fmt: skip
    publish_start_call(
        records, resend, {"dn": dn, "verification_id": verification_id, "resend": True}
    )
    done = wait_until(
        lambda: (m := read_result(records, resend)) and m["status"] == "SUCCESS" and m, 20, "it"
    )
    doc = done["result"]
    jsonschema.validate(doc, json.loads((SCHEMAS / "outcome.v2.json").read_text()))
    assert (doc["outcome"], doc["next_step"], doc["verification_id"]) == (
        "rate_limited",
        "retry_later",
        verification_id,
    )
