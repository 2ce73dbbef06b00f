"""A call is placed promptly or not at all: unreachable API, resends that are safe, deadlines."""

from __future__ import annotations

import json
import math
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery

from callpass_producer import enqueue_call
from tests.conftest import OwnWorker, Simulator
from tests.helpers import settle, unique_dn
from worker.dev.stack import Proc, Stack, free_port, wait_until


def test_a_request_older_than_the_placement_deadline_expires_without_a_call(
    app: Celery, sim: Simulator, worker: object
) -> None:
    dn = unique_dn("1")
    result = app.send_task(
        "callpass.start_call",
        kwargs={"dn": dn, "timeout": 5},
        queue="callpass",
        headers={"callpass_requested_at": time.time() - 60},  # enqueued a minute ago
    )
    doc = settle(result)
    assert doc["outcome"] == "expired" and doc["call_placed"] is False
    assert sim.starts_to(dn) == 0


def test_a_start_that_never_reached_the_api_is_sent_again_once_it_is_back(
    stack: Stack, app: Celery, own_worker: OwnWorker
) -> None:
    """Connection refused is provably safe to resend: the call is placed once the API is up."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/"
    with own_worker("unreachable", CALLPASS_API_URL=api, CALLPASS_HTTP_ATTEMPTS="1") as proc:
        sim_proc = None
        try:
            request_id = f"late-{uuid.uuid4()}"
            dn = unique_dn("1")
            result = enqueue_call(app, dn, 5, request_id=request_id, queue="unreachable")
            wait_until(lambda: "not sent" in proc.log_path.read_text(), 30, "a refused start")
            # The deferred start waits in the worker: `inspect scheduled` shows it masked.
            node = f"unreachable@{socket.gethostname()}"

            def scheduled() -> list[object]:
                answer = app.control.inspect(destination=[node], timeout=1).scheduled() or {}
                return [e for e in answer.get(node, []) if e["request"]["id"] == result.id]

            entries = wait_until(scheduled, 30, "the deferred start in `inspect scheduled`")
            assert dn not in json.dumps(entries) and dn[:4] in json.dumps(entries)
            sim_proc, url = stack.start_simulator(port=port)
            doc = settle(result)
            assert doc["outcome"] == "answered"
            assert Simulator(url).starts_for(request_id) == 1
        finally:
            if sim_proc is not None:
                sim_proc.stop()


@pytest.mark.parametrize(
    "header",
    [math.nan, math.inf, -1.0, 1e308, "soon", {"at": 1}, True],
    ids=["nan", "inf", "negative", "huge", "text", "object", "bool"],
)
def test_a_hostile_requested_at_header_is_ignored_and_the_request_settles(
    app: Celery, sim: Simulator, worker: Proc, header: object
) -> None:
    """A header that is not a sane time counts as absent: the deadline runs from receipt, the
    request settles once (no settle can raise), requested_at is never after placed_at."""
    dn = unique_dn("1")
    result = app.send_task(
        "callpass.start_call",
        kwargs={"dn": dn, "timeout": 2},
        queue="callpass",
        headers={"callpass_requested_at": header, "callpass_attempt": header},
    )
    doc = settle(result)
    assert doc["outcome"] == "answered"
    assert doc["requested_at"] is not None and doc["requested_at"] <= doc["placed_at"]
    assert sim.starts_for(result.id) == 1
    wait_until(
        lambda: (
            f"header callpass_requested_at ignored: {type(header).__name__}"
            in worker.log_path.read_text(errors="replace")
        ),
        10,
        "the log line for the ignored header",
    )


def test_a_producer_clock_minutes_ahead_neither_delays_the_deadline_nor_inverts_times(
    app: Celery, sim: Simulator, worker: Proc
) -> None:
    """Two minutes ahead is no time of ours: the message counts from receipt."""
    dn = unique_dn("1")
    result = app.send_task(
        "callpass.start_call",
        kwargs={"dn": dn, "timeout": 2},
        queue="callpass",
        headers={"callpass_requested_at": time.time() + 120},
    )
    doc = settle(result)
    assert doc["requested_at"] <= doc["placed_at"]
    requested = datetime.fromisoformat(doc["requested_at"].replace("Z", "+00:00")).timestamp()
    assert requested < time.time() + 1


def test_an_expires_header_never_puts_revoked_over_the_request(
    app: Celery, sim: Simulator, worker: Proc
) -> None:
    """Celery would revoke a message past its ``expires`` and store REVOKED, with no outcome;
    the placement deadline decides lateness instead, so the request settles."""
    dn = unique_dn("1")
    result = app.send_task(
        "callpass.start_call",
        kwargs={"dn": dn, "timeout": 2},
        queue="callpass",
        expires=datetime.now(UTC) - timedelta(seconds=5),
    )
    doc = settle(result)
    assert result.state == "SUCCESS" and doc["outcome"] == "answered"
    assert sim.starts_for(result.id) == 1
