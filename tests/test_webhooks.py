"""Signed webhooks against a real receiver on loopback, through the real worker and Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from celery import Celery
from referencing import Registry, Resource

from callpass_producer import enqueue_call
from chaos.receiver import Delivery, Receiver
from tests.conftest import WEBHOOK_SECRETS, OwnWorker
from tests.helpers import callpass, settle, unique_dn
from worker.celery_app import celery_config
from worker.dev.stack import wait_until
from worker.settings import load_settings
from worker.webhooks.events import event_id_for
from worker.webhooks.signature import verify_delivery

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / name).read_text()))


REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s))
    for s in (schema(n) for n in ("placed.v1.json", "outcome.v1.json", "outcome.v2.json"))
)


def validate(instance: dict[str, Any], name: str) -> None:
    jsonschema.Draft202012Validator(schema(name), registry=REGISTRY).validate(instance)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(WEBHOOK_SECRETS)
    yield r
    r.stop()


def call(app: Celery, url: str, digit: str = "1", **kwargs: Any) -> tuple[str, Any]:
    request_id = f"hook-{uuid.uuid4()}"
    result = enqueue_call(
        app, unique_dn(digit), 3, request_id=request_id, webhook_url=url, **kwargs
    )
    return request_id, result


def deliveries_for(
    receiver: Receiver, path: str, count: int, timeout_s: float = 30
) -> list[Delivery]:
    return wait_until(
        lambda: (lambda got: got if len(got) >= count else None)(receiver.received(path)),
        timeout_s,
        f"{count} deliveries to {path}",
    )


def dead_event(event_id: str, env: dict[str, str]) -> dict[str, Any] | None:
    """The event as ``callpass webhooks dead --json`` lists it, if it is dead."""
    out = callpass("webhooks", "dead", "--json", "--limit", "100000", env=env)
    listed = (json.loads(line) for line in out.stdout.splitlines())
    return next((e for e in listed if e["event_id"] == event_id), None)


def test_both_events_arrive_signed_schema_valid_and_match_the_result(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    request_id, result = call(app, receiver.url + "/ok/both")
    doc = settle(result)
    accepted = wait_until(
        lambda: (lambda a: a if len(a) == 2 else None)(receiver.accepted("/ok/both")),
        30,
        "both events",
    )
    by_type = {d.event["type"]: d for d in accepted.values() if d.event}
    placed, completed = by_type["call.placed"], by_type["call.completed"]
    validate(placed.event or {}, "call.placed.v1.json")
    validate(completed.event or {}, "call.completed.v1.json")
    assert completed.event and completed.event["data"] == doc
    assert placed.event and placed.event["data"]["callid"] == doc["callid"]
    assert placed.event["data"]["pin"] == doc["pin"]
    # Signed with both secrets of the rotation: a receiver holding either one accepts it.
    for secret in WEBHOOK_SECRETS:
        verify_delivery(completed.headers, completed.body, secret)
    assert completed.webhook_id == event_id_for("call.completed", request_id, result.id)
    assert completed.headers["content-type"] == "application/json"


def test_a_failing_receiver_gets_retries_with_the_same_id_and_fresh_signatures(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    # Each event fails twice with 503, then is accepted: three attempts per webhook-id.
    call(app, receiver.url + "/flaky/2/503")
    got = deliveries_for(receiver, "/flaky/2/503", 6)
    ids = {d.webhook_id for d in got}
    assert len(ids) == 2
    for webhook_id in ids:
        attempts = [d for d in got if d.webhook_id == webhook_id]
        assert [d.status for d in attempts] == [503, 503, 200]
        assert all(d.event is not None for d in attempts), [d.error for d in attempts]
        assert len({d.body for d in attempts}) == 1  # the same event each time


def test_retry_after_is_honoured_over_a_shorter_schedule(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    # The schedule says 1 s; the receiver asks for 3 s with a 429.
    call(app, receiver.url + "/flaky/1/429?retry_after=3", digit="2")
    got = deliveries_for(receiver, "/flaky/1/429", 4)
    for webhook_id in {d.webhook_id for d in got}:
        first, second = [d for d in got if d.webhook_id == webhook_id][:2]
        assert (first.status, second.status) == (429, 200)
        assert second.received_at - first.received_at >= 3.0


def test_410_stops_at_once_and_the_event_is_dead_lettered(
    app: Celery, worker: Any, receiver: Receiver, worker_env: dict[str, str]
) -> None:
    request_id, result = call(app, receiver.url + "/status/410")
    settle(result)
    got = deliveries_for(receiver, "/status/410", 2)
    completed_id = event_id_for("call.completed", request_id, result.id)
    listed = wait_until(lambda: dead_event(completed_id, worker_env), 30, "the dead event listed")
    assert listed["attempts"] == 1
    assert "410" in listed["last_error"]
    # Nothing more arrives for either event: one attempt each.
    assert sorted(d.status for d in receiver.received("/status/410")) == [410, 410]
    assert {d.webhook_id for d in got} == {
        completed_id,
        event_id_for("call.placed", request_id, result.id),
    }


def test_after_the_last_attempt_an_event_is_dead_and_replay_delivers_it_once(
    app: Celery, worker: Any, receiver: Receiver, worker_env: dict[str, str]
) -> None:
    name = uuid.uuid4().hex
    request_id, result = call(app, f"{receiver.url}/switch/{name}", digit="2")
    settle(result)
    completed_id = event_id_for("call.completed", request_id, result.id)

    wait_until(lambda: dead_event(completed_id, worker_env), 60, "the event dead-lettered")
    # The schedule "0,1,1,1" is four attempts; every one was refused with 503.
    attempts = [d for d in receiver.received("/switch/") if d.webhook_id == completed_id]
    assert [d.status for d in attempts] == [503] * 4

    receiver.switch_on(name)
    replay = callpass("webhooks", "replay", completed_id, env=worker_env)
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 event(s)" in replay.stdout
    delivered = wait_until(
        lambda: receiver.accepted("/switch/").get(completed_id), 30, "the replayed event"
    )
    assert delivered.event and delivered.event["data"]["request_id"] == request_id
    assert dead_event(completed_id, worker_env) is None
    again = callpass("webhooks", "replay", completed_id, env=worker_env)
    assert again.returncode == 1
    assert "not a dead event" in again.stderr


def test_redirects_are_not_followed(app: Celery, worker: Any, receiver: Receiver) -> None:
    call(app, receiver.url + "/redirect")
    got = deliveries_for(receiver, "/redirect", 8)  # 2 events x 4 attempts, all 302
    assert {d.status for d in got} == {302}
    assert receiver.received("/ok/redirected") == []


def test_a_request_enqueued_twice_gets_each_event_once(
    app: Celery, worker: Any, receiver: Receiver
) -> None:
    request_id = f"hook-{uuid.uuid4()}"
    dn = unique_dn("1")
    first = enqueue_call(app, dn, 3, request_id=request_id, webhook_url=receiver.url + "/ok/twice")
    second = enqueue_call(app, dn, 3, request_id=request_id, webhook_url=receiver.url + "/ok/twice")
    assert settle(first) == settle(second)
    wait_until(lambda: len(receiver.accepted("/ok/twice")) == 2, 30, "two events")
    redis_client = redis.Redis.from_url(app.conf.broker_url)
    # Deliveries are at least once; with no failure there is exactly one per event.
    assert len(receiver.received("/ok/twice")) == 2
    redis_client.close()


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://example.com/hook", "https"),
        ("https://10.0.0.7/hook", "private"),
        ("https://[::1]/hook", "loopback"),
        ("https://a..example.com/hook", "not a valid DNS name"),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
    ],
)
def test_unsafe_webhook_urls_are_refused_before_any_call(
    app: Celery, worker: Any, sim: Any, url: str, rule: str
) -> None:
    dn = unique_dn("1")
    doc = settle(enqueue_call(app, dn, 3, webhook_url=url))
    assert doc["outcome"] == "invalid"
    assert doc["error"]["field"] == "webhook_url"
    assert rule in doc["error"]["rule"]
    assert sim.starts_to(dn) == 0


def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    app: Celery, own_worker: OwnWorker, receiver: Receiver, worker_env: dict[str, str]
) -> None:
    # "localhost" passes the URL checks (http allowed to it) but resolves to 127.0.0.1,
    # which this worker does not allow: refused when connecting, never sent.
    with own_worker(
        "hooks-guarded",
        CALLPASS_WEBHOOK_HTTP_HOSTS="localhost",
        CALLPASS_WEBHOOK_ALLOWED_NETWORKS="",
        CALLPASS_PINS_LEAVE_WORKER="false",
    ):
        request_id, result = call(
            app, f"http://localhost:{receiver.port}/ok/guarded", queue="hooks-guarded"
        )
        doc = settle(result)
        assert doc["outcome"] == "answered"  # the call itself is unaffected
        completed_id = event_id_for("call.completed", request_id, result.id)
        dead = wait_until(
            lambda: dead_event(completed_id, worker_env), 30, "the refused event dead-lettered"
        )
    assert "destination refused" in dead["last_error"]
    assert "loopback" in dead["last_error"]
    assert dead["attempts"] == 1
    assert receiver.received() == []


def test_with_pins_kept_in_the_worker_the_placed_event_has_no_pin(
    app: Celery, own_worker: OwnWorker, receiver: Receiver
) -> None:
    with own_worker("hooks-nopin", CALLPASS_PINS_LEAVE_WORKER="false"):
        _, result = call(app, receiver.url + "/ok/nopin", queue="hooks-nopin")
        doc = settle(result)
        accepted = wait_until(
            lambda: (lambda a: a if len(a) == 2 else None)(receiver.accepted("/ok/nopin")),
            30,
            "both events",
        )
    events = {d.event["type"]: d.event for d in accepted.values() if d.event}
    assert doc["pin"] is None
    assert events["call.placed"]["data"]["pin"] is None
    assert events["call.completed"]["data"]["pin"] is None
    validate(events["call.placed"], "call.placed.v1.json")


def test_calls_and_deliveries_each_land_in_their_own_queue_once(
    worker_env: dict[str, str], redis_url: str
) -> None:
    # A queue no worker consumes: the messages stay where routing put them.
    settings = load_settings({**worker_env, "CALLPASS_QUEUE": f"probe-{uuid.uuid4().hex}"})
    producer = Celery("routing-probe", set_as_current=False)
    producer.config_from_object(celery_config(settings))
    calls, hooks = settings.queue, settings.effective_webhook_queue
    client = redis.Redis.from_url(redis_url)
    try:
        with producer.connection_for_write() as conn:  # bind both queues, as a worker does
            for queue in producer.amqp.queues.values():
                queue(conn.default_channel).declare()
        producer.send_task("callpass.start_call", kwargs={"dn": "x"}, queue=calls)
        producer.send_task("callpass.deliver_webhook", args=["msg_x", 0], queue=hooks)
        assert (client.llen(calls), client.llen(hooks)) == (1, 1)
    finally:
        client.delete(calls, hooks, *client.keys(f"_kombu.binding.{calls}*"))
        client.close()
