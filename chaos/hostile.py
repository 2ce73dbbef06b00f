"""Hostile task messages, built by hand and pushed onto a queue's Redis list (as a producer in
another language would): foreign serialisers, and hostile values in the headers we read."""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import yaml

from callpass_producer.contracts.names import START_TASK

__all__ = [
    "FOREIGN_KINDS",
    "HOSTILE_HEADERS",
    "Foreign",
    "foreign_body",
    "json_body",
    "publish_raw",
    "raw_message",
]

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class Foreign:
    """A body Celery cannot run, and the refused field the worker must name."""

    content_type: str
    encoding: str
    body: bytes
    field: str


def foreign_body(kind: str, kwargs: dict[str, Any]) -> Foreign:
    """The start_call body ``[[], kwargs, embed]`` in a serialiser the worker does not accept
    (or JSON of the wrong shape, or not JSON at all)."""
    triple = ((), kwargs, _EMBED)
    if kind in ("pickle", "pickle0"):  # protocol 0 writes the number after a letter: V7916…
        body = pickle.dumps(triple, 0 if kind == "pickle0" else pickle.DEFAULT_PROTOCOL)
        return Foreign("application/x-python-serialize", "binary", body, "content_type")
    if kind == "yaml":
        body = yaml.dump([[], kwargs, _EMBED]).encode()
        return Foreign("application/x-yaml", "utf-8", body, "content_type")
    if kind == "raw":  # raw bytes (Celery's consumer crashed on these)
        body = b"\x0b" + str(kwargs.get("dn")).encode() + b"\x80\x04"
        return Foreign("application/data", "binary", body, "content_type")
    if kind == "unknown":
        return Foreign("application/x-callpass", "utf-8", repr(kwargs).encode(), "content_type")
    if kind == "bad-json":
        return Foreign("application/json", "utf-8", json.dumps(kwargs).encode()[:-1], "body")
    if kind == "json-shape":  # JSON, but kwargs alone instead of [args, kwargs, embed]
        return Foreign("application/json", "utf-8", json.dumps(kwargs).encode(), "body")
    raise ValueError(f"unknown foreign kind {kind!r}")


FOREIGN_KINDS = ("pickle", "pickle0", "yaml", "raw", "unknown", "bad-json", "json-shape")

#: Values for the headers the worker reads; none may make a request settle twice, fail, or
#: dial after its placement deadline. (NaN and the infinities are not JSON, but kombu's JSON
#: reader and pickle/YAML producers carry them.)
HOSTILE_HEADERS: list[dict[str, Any]] = [
    {"callpass_requested_at": float("nan")},
    {"callpass_requested_at": float("inf")},
    {"callpass_requested_at": float("-inf")},
    {"callpass_requested_at": "1764208800"},
    {"callpass_requested_at": {"at": 1}},
    {"callpass_requested_at": [1, 2]},
    {"callpass_requested_at": True},
    {"callpass_requested_at": None},
    {"callpass_requested_at": 10**40},
    {"callpass_requested_at": 1e308},
    {"callpass_requested_at": -5},
    {"callpass_requested_at": 0},
    {"callpass_requested_at": "far future"},  # replaced by a time a year ahead when sent
    {"callpass_attempt": float("nan")},
    {"callpass_attempt": -1},
    {"callpass_attempt": 10**40},
    {"callpass_attempt": "3"},
    {"callpass_attempt": {"n": 1}},
    {"callpass_attempt": 2.5},
]


def _concrete(headers: dict[str, Any]) -> dict[str, Any]:
    if headers.get("callpass_requested_at") == "far future":
        return {**headers, "callpass_requested_at": time.time() + 365 * 86400}
    return headers


def raw_message(
    task_id: str,
    body: bytes,
    content_type: str,
    encoding: str,
    queue: str,
    headers: dict[str, Any] | None = None,
) -> str:
    """Celery's protocol-2 envelope as kombu's Redis transport stores it."""
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": {
            "lang": "py",
            "task": START_TASK,
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "argsrepr": "()",
            "kwargsrepr": "{}",
            "callpass_requested_at": time.time(),
            **_concrete(headers or {}),
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message)  # NaN and Infinity as Python writes them: kombu reads them


def publish_raw(client: redis.Redis, queue: str, envelope: str) -> None:
    client.lpush(queue, envelope)


def json_body(kwargs: dict[str, Any]) -> bytes:
    """A well-formed start_call body."""
    return json.dumps([[], kwargs, _EMBED]).encode()
