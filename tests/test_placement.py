"""A call is placed promptly or not at all: unreachable API, resends that are safe, deadlines."""

from __future__ import annotations

import json
import socket
import time
import uuid

from celery import Celery

from tests.conftest import OwnWorker, Simulator
from tests.test_pipeline import settle, unique_dn
from worker.devstack import Stack, free_port, wait_until
from worker.producer import enqueue_call


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
