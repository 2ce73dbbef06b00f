"""The "hostile messages" row: foreign serialisers and hostile header values among ordinary
requests, some delivered on time and some only after their placement deadline."""

from __future__ import annotations

import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaos.harness import Harness, Request, Row
from chaos.hostile import (
    FOREIGN_KINDS,
    HOSTILE_HEADERS,
    foreign_body,
    json_body,
    publish_raw,
    raw_message,
)
from worker.settings import load_settings

if TYPE_CHECKING:
    from pathlib import Path

    from chaos.sizes import Size

__all__ = ["hostile_messages"]

#: Short, so the late half can wait it out: a call placed past it (plus 1 s) is a problem.
PLACE_DEADLINE_S = 6.0
SETTLE_S = 120.0
#: One worker writes text logs, the other JSON: no number may show in either.
WORKER_FORMATS = {"w0": "text", "w1": "json"}


def _start_workers(h: Harness) -> None:
    for name, log_format in WORKER_FORMATS.items():
        h.env["CALLPASS_LOG_FORMAT"] = log_format  # read when the worker starts
        h.start_worker(name)


@dataclass
class Sent:
    """What the row sent besides ordinary requests."""

    #: task id → the field the refusal of its foreign body must name
    foreign: dict[str, str] = field(default_factory=dict)
    #: request ids whose callpass_requested_at is hostile: the worker cannot know when they
    #: were enqueued, so (README) their deadline counts from when a worker first saw them
    untimed: set[str] = field(default_factory=set)
    count: int = 0


def _send(h: Harness, queue: str, count: int, sent: Sent) -> list[str]:
    """``count`` requests: a third ordinary, a third in foreign serialisers, a third JSON with
    hostile headers; returns their request ids."""
    ids = []
    for _ in range(count):
        i, sent.count = sent.count, sent.count + 1
        if i % 3 == 0:
            ids += [r.request_id for r in h.enqueue()]
            continue
        dn = f"7916{h.rng.randrange(10**7):07d}"
        task_id = str(uuid.uuid4())
        request_id = f"hostile-{uuid.uuid4().hex[:12]}"
        kwargs: dict[str, Any] = {"dn": dn, "timeout": 3, "request_id": request_id}
        if i % 3 == 1:
            body = foreign_body(FOREIGN_KINDS[(i // 3) % len(FOREIGN_KINDS)], kwargs)
            envelope = raw_message(task_id, body.body, body.content_type, body.encoding, queue)
            sent.foreign[task_id] = body.field
            request_id = task_id  # an unreadable body: answered under the task id
        else:
            headers = HOSTILE_HEADERS[(i // 3) % len(HOSTILE_HEADERS)]
            envelope = raw_message(
                task_id, json_body(kwargs), "application/json", "utf-8", queue, headers
            )
            if "callpass_requested_at" in headers:
                sent.untimed.add(request_id)
        h.requests.append(Request(task_id, request_id, dn, time.time()))
        publish_raw(h.redis, queue, envelope)
        ids.append(request_id)
    return ids


def _failures(h: Harness) -> int:
    keys = [f"celery-task-meta-{r.task_id}" for r in h.requests]
    metas = [json.loads(raw) for raw in h.redis.mget(keys) if raw]
    return sum(1 for meta in metas if meta.get("status") == "FAILURE")


def _numbers_in_logs(h: Harness) -> list[str]:
    text = "".join(p.read_text(errors="replace") for p in h.stack.run_dir.glob("w*.log"))
    return [r.dn for r in h.requests if r.dn in text]


def _late_calls(h: Harness, since: dict[str, float]) -> list[dict[str, Any]]:
    """Calls placed more than the deadline (+1 s) after ``since`` their request."""
    return [
        c
        for c in h.calls()
        if c["request_id"] in since
        and c["started_at"] > since[c["request_id"]] + PLACE_DEADLINE_S + 1
    ]


def _check(h: Harness, row: Row, sent: Sent, since: dict[str, float]) -> None:
    docs = h.documents()
    wrong = [
        t
        for t, name in sent.foreign.items()
        if t in docs
        and (docs[t]["outcome"] != "invalid" or (docs[t]["error"] or {}).get("field") != name)
    ]
    row.problems += [f"foreign message {t}: {docs[t]['outcome']} {docs[t]['error']}" for t in wrong]
    if failed := _failures(h):
        row.problems.append(f"{failed} tasks ended in FAILURE")
    if late := _late_calls(h, since):
        row.problems.append(f"{len(late)} calls placed after their placement deadline")
    if shown := _numbers_in_logs(h):
        row.problems.append(f"{len(shown)} numbers in clear in the worker logs")


def hostile_messages(run_dir: Path, size: Size) -> Row:
    """Half the batch on time; half sent while the workers are down, then taken while the API
    is down until past the deadline: each request settles once, none fails or dials late, and
    no log line of either format shows a number."""
    began = time.monotonic()
    deadline = {"CALLPASS_PLACE_DEADLINE_S": f"{PLACE_DEADLINE_S:g}"}
    h = Harness(run_dir, workers=0, worker_env=deadline)
    queue = load_settings(h.env).queue
    sent = Sent()
    try:
        _start_workers(h)
        _send(h, queue, size.hostile_requests // 2, sent)
        for name in WORKER_FORMATS:
            h.kill_worker(name, signal.SIGTERM)
        late = _send(h, queue, size.hostile_requests - size.hostile_requests // 2, sent)
        time.sleep(PLACE_DEADLINE_S + 2)  # the scenario itself: messages waiting too long
        # Starts are refused until past the deadline counted from the workers' first sight:
        # a request whose deadline a header switched off or moved would be placed then.
        h.stop_simulator_for(PLACE_DEADLINE_S + 4)
        seen_from = time.time()
        _start_workers(h)
        since = {r.request_id: r.enqueued_at for r in h.requests}
        since.update({rid: seen_from for rid in sent.untimed.intersection(late)})
        notes = (
            f"{len(sent.foreign)} in foreign serialisers, {len(HOSTILE_HEADERS)} kinds of "
            f"hostile header; half delivered past the {PLACE_DEADLINE_S:g} s deadline with "
            "the API down; text + JSON logs"
        )
        row = h.verdict("hostile messages", SETTLE_S, notes, began)
        _check(h, row, sent, since)
        return row
    finally:
        h.close()
