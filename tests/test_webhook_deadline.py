"""A receiver that trickles its answer cannot hold a worker's threads: each delivery attempt
has a total deadline, and only a few deliveries run at once, so calls are still placed."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery

from callpass_producer import enqueue_call
from chaos.receiver import TRICKLE_EVERY_S, Delivery, Receiver
from tests.conftest import TEST_WORKER_ENV, WEBHOOK_SECRETS, Simulator, start_worker
from tests.helpers import settle, unique_dn
from worker.dev.stack import Stack, wait_until
from worker.webhooks.deadline import attempt_deadline
from worker.webhooks.delivery import WebhookDeliverer
from worker.webhooks.destinations import DestinationPolicy
from worker.webhooks.events import event_id_for
from worker.webhooks.guard import guarded_session
from worker.webhooks.signature import parse_secret
from worker.webhooks.store import DUE_KEY, WebhookStore

#: The suite's workers derive their deadline from CALLPASS_WEBHOOK_TIMEOUT_S (twice it).
SUITE_DEADLINE_S = 2 * float(TEST_WORKER_ENV["CALLPASS_WEBHOOK_TIMEOUT_S"])
#: Past the deadline, generous: a loaded machine records the hang-up a little late.
SLACK_S = 3.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(WEBHOOK_SECRETS)
    yield r
    r.stop()


LOOPBACK = DestinationPolicy(
    http_hosts=("127.0.0.1",), allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)
)


@pytest.fixture
def store_client(redis_url: str) -> Iterator[redis.Redis]:
    """A database of its own: the suite's workers move due events in database 0."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4")
    yield client
    client.close()


def test_a_guarded_post_ends_by_the_deadline_while_the_receiver_trickles(
    receiver: Receiver,
) -> None:
    session = guarded_session(LOOPBACK)
    began = time.monotonic()
    # Each read gets a byte within 0.6 s, so a 1 s read time-out alone would never end it.
    with attempt_deadline(2.0) as deadline, pytest.raises(requests.RequestException):
        session.post(receiver.url + "/trickle/1", data=b"{}", timeout=(1.0, 1.0), stream=True)
    assert deadline.fired
    assert time.monotonic() - began < 2.0 + 1.0
    # Outside a deadline the same session works as before.
    assert session.post(receiver.url + "/ok/after", data=b"{}", timeout=2).status_code == 200


def test_a_tls_receiver_that_trickles_is_cut_off_too(tmp_path: Path) -> None:
    # TLS reads happen inside the ssl module: the socket under it is what gets shut.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            with contextlib.suppress(OSError):
                for byte in b"HTTP/1.1 200 OK\r\nx-pad: " + b"x" * 150:
                    tls.sendall(bytes([byte]))
                    time.sleep(TRICKLE_EVERY_S)

    threading.Thread(target=trickle, daemon=True).start()
    session = guarded_session(LOOPBACK)
    began = time.monotonic()
    try:
        with attempt_deadline(2.0) as deadline, pytest.raises(requests.RequestException):
            session.post(f"https://127.0.0.1:{port}/", data=b"{}", timeout=1.0, verify=str(cert))
    finally:
        listener.close()
    assert deadline.fired
    assert time.monotonic() - began < 2.0 + 1.0


def deliverer(
    store: WebhookStore, slots: threading.BoundedSemaphore, deferred: list[Any]
) -> WebhookDeliverer:
    return WebhookDeliverer(
        store=store,
        keys=[parse_secret(WEBHOOK_SECRETS[0])],
        schedule_s=[0, 1],
        timeout_s=1.0,
        policy=LOOPBACK,
        session=lambda: guarded_session(LOOPBACK),
        lock_s=30.0,
        deadline_s=2.0,
        slots=slots,
        defer=lambda *args: deferred.append(args),
    )


def test_a_delivery_beyond_the_concurrency_is_deferred_not_counted(
    store_client: redis.Redis, receiver: Receiver
) -> None:
    store = WebhookStore(store_client, pending_ttl_s=3600, delivered_ttl_s=600, dead_ttl_s=600)
    event_id = f"msg_{uuid.uuid4().hex}"
    fields = {"type": "call.completed", "request_id": "r", "url": receiver.url + "/ok/defer"}
    store.add(event_id, {**fields, "body": "{}"}, time.time())
    store.take_due(lease_s=1)
    slots = threading.BoundedSemaphore(1)
    deferred: list[Any] = []
    hooks = deliverer(store, slots, deferred)
    slots.acquire()  # the one slot is busy
    assert hooks.deliver(event_id, 0) == "deferred"
    assert [(e, a) for e, a, _ in deferred] == [(event_id, 0)]
    assert 1.0 <= deferred[0][2] <= 2.0  # a short countdown
    assert store.load(event_id)["attempt"] == "0"  # not counted as an attempt
    assert float(store_client.zscore(DUE_KEY, event_id) or 0) > time.time() + 20  # lease renewed
    assert receiver.received("/ok/defer") == []
    slots.release()
    assert hooks.deliver(event_id, 0) == "delivered"
    assert hooks.deliver(event_id, 0) == "stale"  # the deferred copy finds it made


def attempts_of(
    receiver: Receiver, webhook_id: str, count: int, timeout_s: float
) -> list[Delivery]:
    def enough() -> list[Delivery] | None:
        got = [d for d in receiver.received("/trickle/") if d.webhook_id == webhook_id]
        return got if len(got) >= count else None

    return wait_until(enough, timeout_s, f"{count} attempts of {webhook_id}")


def test_a_trickling_receiver_is_cut_off_at_the_deadline_and_tried_again(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    request_id = f"trickle-{uuid.uuid4()}"
    result = enqueue_call(
        app, unique_dn("1"), 3, request_id=request_id, webhook_url=receiver.url + "/trickle/1"
    )
    settle(result)
    completed_id = event_id_for("call.completed", request_id, result.id)
    # Without a total deadline the first attempt lasts as long as the receiver trickles (90 s).
    first, second = attempts_of(receiver, completed_id, 2, 30)[:2]
    assert first.status == 0, "the worker waited for the whole trickled answer"
    assert first.ended_at - first.received_at <= SUITE_DEADLINE_S + SLACK_S
    # Counted as a failed attempt: the next one comes after the schedule's delay (1 s).
    assert second.status == 200
    assert second.received_at - first.received_at >= 1.0
    log = worker.log_path.read_text(errors="replace")
    assert f"webhook {completed_id}" in log
    assert f"{SUITE_DEADLINE_S:g} s deadline" in log


def test_calls_are_placed_promptly_while_deliveries_trickle(
    stack: Stack,
    app: Celery,
    worker_env: dict[str, str],
    sim: Simulator,
    receiver: Receiver,
) -> None:
    # Four pool threads; without a bound, four trickling deliveries would take every one.
    queue = f"trickle-{uuid.uuid4().hex[:8]}"
    place_deadline_s = 10.0
    env = {
        **worker_env,
        "CALLPASS_QUEUE": queue,
        "CALLPASS_WEBHOOK_CONCURRENCY": "2",
        "CALLPASS_WEBHOOK_DEADLINE_S": "20",
        "CALLPASS_PLACE_DEADLINE_S": str(place_deadline_s),
    }
    proc = start_worker(stack, app, env, queue, "--concurrency", "4")
    try:
        for _ in range(4):  # eight events, each trickling on its first attempt
            enqueue_call(
                app, unique_dn("1"), 3, webhook_url=receiver.url + "/trickle/1", queue=queue
            )
        wait_until(lambda: receiver.trickling >= 2, 30, "deliveries trickling")
        enqueued_at = time.time()
        probes = {f"probe-{uuid.uuid4()}": "" for _ in range(6)}
        results = [
            enqueue_call(app, unique_dn("3"), 3, request_id=request_id, queue=queue)
            for request_id in probes
        ]
        wait_until(
            lambda: all(sim.starts_for(request_id) for request_id in probes),
            place_deadline_s,
            "every call placed while deliveries trickle",
        )
        assert receiver.trickling >= 1, "no delivery was in flight while the calls were placed"
        assert receiver.most_trickling <= 2  # the bound held: the rest were deferred
        started = {c["request_id"]: c["started_at"] for c in sim.calls()}
        assert all(started[r] - enqueued_at < place_deadline_s for r in probes)
        assert all(settle(r)["outcome"] != "expired" for r in results)
    finally:
        proc.stop()
