"""The webhook store's Lua against a real Redis: leases, attempt numbers, lock owners."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from worker.dev.stack import wait_until
from worker.webhooks.store import DUE_KEY, EVENT_PREFIX, WebhookStore


@pytest.fixture
def store_url(redis_url: str) -> str:
    """A database of its own: the suite's workers move due events in database 0."""
    return redis_url.rsplit("/", 1)[0] + "/3"


@pytest.fixture
def store(store_url: str) -> Iterator[WebhookStore]:
    client = redis.Redis.from_url(store_url)
    yield WebhookStore(client, pending_ttl_s=3600, delivered_ttl_s=600, dead_ttl_s=1200)
    client.close()


def new_event(store: WebhookStore, due_in_s: float = 0.0) -> str:
    event_id = f"msg_{uuid.uuid4().hex}"
    fields = {"type": "call.completed", "request_id": "r", "url": "https://x/", "body": "{}"}
    assert store.add(event_id, fields, time.time() + due_in_s)
    assert not store.add(event_id, fields, time.time())  # the same id is stored once
    return event_id


def test_a_taken_event_is_leased_and_falls_due_again_if_nothing_is_recorded(
    store: WebhookStore,
) -> None:
    event_id = new_event(store)
    assert (event_id, 0) in store.take_due(lease_s=0.3)
    assert event_id not in dict(store.take_due(lease_s=0.3))  # leased: not taken twice
    wait_until(lambda: event_id in dict(store.take_due(lease_s=60)), 5, "the lease ending")


def test_only_the_lock_owner_records_an_attempt(store: WebhookStore) -> None:
    event_id = new_event(store)
    assert store.begin(event_id, 0, lock_s=0.2, owner="slow")
    assert store.begin(event_id, 0, lock_s=60, owner="other") == {}  # locked
    wait_until(lambda: store.begin(event_id, 0, lock_s=60, owner="fast"), 5, "lock expiry")
    assert not store.delivered(event_id, 0, "slow", 200)  # its lock was taken over
    assert store.delivered(event_id, 0, "fast", 200)
    fields = store.load(event_id)
    assert fields["state"] == "delivered"
    assert "body" not in fields  # a delivered event is only a marker
    assert store.begin(event_id, 1, lock_s=60, owner="late") == {}


def test_a_stale_attempt_number_changes_nothing(store: WebhookStore) -> None:
    event_id = new_event(store)
    assert store.begin(event_id, 0, lock_s=60, owner="a")
    assert store.retry_at(event_id, 0, "a", time.time() + 100, "HTTP 503")
    assert store.begin(event_id, 0, lock_s=60, owner="b") == {}  # attempt 0 is done
    assert store.begin(event_id, 1, lock_s=60, owner="b")["last_error"] == "HTTP 503"


def test_dead_then_replayed_with_a_fresh_schedule(store: WebhookStore) -> None:
    event_id = new_event(store)
    store.begin(event_id, 0, lock_s=60, owner="a")
    assert store.dead(event_id, 0, "a", "HTTP 410 Gone from x")
    assert event_id in {e.event_id for e in store.dead_events(100_000)}
    assert store.replay(event_id)
    assert not store.replay(event_id)  # pending now, not dead
    assert (event_id, 0) in store.take_due(lease_s=60)
    assert event_id not in {e.event_id for e in store.dead_events(100_000)}


def test_taking_an_event_refreshes_its_ttl(store: WebhookStore, store_url: str) -> None:
    client = redis.Redis.from_url(store_url)
    event_id = new_event(store)
    client.expire(EVENT_PREFIX + event_id, 5)
    store.take_due(lease_s=60)
    assert int(client.ttl(EVENT_PREFIX + event_id)) > 3000
    assert client.zscore(DUE_KEY, event_id) is not None
    client.close()


def test_beginning_an_attempt_renews_its_lease(store: WebhookStore, store_url: str) -> None:
    client = redis.Redis.from_url(store_url)
    event_id = new_event(store)
    store.take_due(lease_s=1)  # a message that waited in the queue almost as long
    assert store.begin(event_id, 0, lock_s=60, owner="a")
    # The mover's lease now counts from the attempt's start, not from the send.
    assert float(client.zscore(DUE_KEY, event_id) or 0) > time.time() + 50
    assert event_id not in dict(store.take_due(lease_s=60))
    client.close()


def test_a_deferred_delivery_renews_its_lease_only_while_nobody_makes_it(
    store: WebhookStore, store_url: str
) -> None:
    client = redis.Redis.from_url(store_url)
    event_id = new_event(store)
    store.take_due(lease_s=1)
    assert store.extend_lease(event_id, 0, lease_s=60)
    assert float(client.zscore(DUE_KEY, event_id) or 0) > time.time() + 50
    assert not store.extend_lease(event_id, 1, lease_s=60)  # not the attempt that is due
    assert store.begin(event_id, 0, lock_s=60, owner="a")
    assert not store.extend_lease(event_id, 0, lease_s=60)  # being made elsewhere
    assert store.delivered(event_id, 0, "a", 200)
    assert not store.extend_lease(event_id, 0, lease_s=60)  # made
    client.close()
