"""A known token and known numbers through the whole pipeline, then a search of everything the
run left behind: the worker's and Flower's logs, Flower's task API, and every key in Redis.

* The API token appears nowhere: not in a log line, not in Flower, not in any Redis key or value
  (broker messages included, their base64 bodies decoded).
* Full phone numbers appear in no log line and nowhere in Flower; the masked forms do.
* A pin appears only in the result of its own request (``celery-task-meta-<start_call id>``:
  the ``PLACED`` state, then the outcome document): in no log line, nowhere in Flower, in no
  other Redis key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis
import requests
from celery import Celery

from callpass_producer import enqueue_call
from chaos.receiver import Delivery, Receiver
from tests.conftest import WEBHOOK_SECRETS, start_worker
from tests.helpers import unique_dn
from worker.dev.stack import Stack, child_env, free_port, wait_until

QUEUE = "secrets"
WORKER = "secrets"
FINAL_STATES = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED"}


def pin_pattern(pin: str) -> re.Pattern[str]:
    """The pin as a value of its own: not four digits inside a UUID, a time stamp or a number.

    A leaked pin reads ``"pin": "0864"``, ``pin=0864`` or ``pin 0864``; the same digits inside
    ``…-0864-…`` (a UUID group) or ``1764208800.0864`` are something else.
    """
    return re.compile(rf"(?<![\w.\-]){re.escape(pin)}(?![\w\-]|\.\d)")


@dataclass
class Run:
    """What the run produced and where it looked."""

    token: str
    dns: list[str]
    docs: dict[str, dict[str, Any]]  # start_call task id → outcome document
    logs: dict[str, str]  # name → text
    flower: dict[str, str]  # URL → body
    flower_without_login: int  # status of /api/tasks without the login
    webhooks: list[Delivery]  # what the receiver got

    @property
    def pins(self) -> dict[str, str]:
        """pin → the start_call task id whose request got it."""
        return {doc["pin"]: task_id for task_id, doc in self.docs.items() if doc.get("pin")}

    @property
    def callids(self) -> set[str]:
        return {doc["callid"] for doc in self.docs.values() if doc.get("callid")}


# --- dumping Redis ---------------------------------------------------------------------------

_BASE64_RE = re.compile(r"[A-Za-z0-9+/]{12,}={0,2}")


def _decoded_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, plus what base64 strings decode to (kombu keeps
    message bodies base64-encoded, so a plain search would not see into them)."""
    if isinstance(value, str):
        yield value
        if _BASE64_RE.fullmatch(value):
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return
            yield decoded
            yield from _expand(decoded)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _decoded_strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded_strings(item)


def _expand(text: str) -> Iterator[str]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return
    yield from _decoded_strings(parsed)


def _text(value: bytes | str | float | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _dump_value(client: redis.Redis, key: bytes) -> list[str]:
    """The value at ``key`` as lines: one per string, hash field (``field: value``), member or
    stream entry, each followed by its decodings."""
    kind = _text(client.type(key))
    lines: list[str]
    if kind == "string":
        lines = [_text(client.get(key))]
    elif kind == "hash":
        fields = cast(dict[bytes, bytes], client.hgetall(key))
        lines = [f"{_text(k)}: {_text(v)}" for k, v in fields.items()]
    elif kind == "list":
        lines = [_text(v) for v in cast(list[bytes], client.lrange(key, 0, -1))]
    elif kind == "set":
        lines = [_text(v) for v in cast(set[bytes], client.smembers(key))]
    elif kind == "zset":
        members = cast(list[tuple[bytes, float]], client.zrange(key, 0, -1, withscores=True))
        lines = [f"{_text(m)} {score}" for m, score in members]
    elif kind == "stream":
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key))
        lines = [f"{_text(k)}: {_text(v)}" for _, entry in entries for k, v in entry.items()]
    else:  # expired between SCAN and TYPE ("none")
        lines = []
    out: list[str] = []
    for line in lines:
        out.append(line)
        # A hash field's value, or the whole line, may be JSON (messages, outcome documents).
        value = line.split(": ", 1)[1] if kind in ("hash", "stream") and ": " in line else line
        out.extend(_expand(value))
    return out


def dump_redis(url: str) -> dict[str, str]:
    """Every key of the suite's Redis (all databases in use) and its value, as text."""
    keyspace = redis.Redis.from_url(url).info("keyspace")
    dbs = sorted({0, *(int(name[2:]) for name in keyspace if name.startswith("db"))})
    dumped: dict[str, str] = {}
    for db in dbs:
        conn = redis.Redis.from_url(url, db=db)
        for key in conn.scan_iter(count=1000):
            name = key.decode("utf-8", errors="replace")
            dumped[f"db{db}:{name}"] = "\n".join(_dump_value(conn, key))
    return dumped


# --- the run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(stack: Stack, app: Celery, worker_env: dict[str, str], redis_url: str) -> Run:
    token = secrets.token_hex(32)
    sim_proc, sim_url = stack.start_simulator("--token", token)
    env = {
        **worker_env,
        "CALLPASS_API_URL": sim_url,
        "CALLPASS_API_TOKEN": token,
        "CALLPASS_QUEUE": QUEUE,
        "CALLPASS_LOG_LEVEL": "DEBUG",
    }
    worker = start_worker(stack, app, env, WORKER)
    node = f"{WORKER}@{socket.gethostname()}"
    port = free_port()
    password = secrets.token_hex(16)
    auth = ("callpass", password)
    # Flower with the worker's environment (token included), as compose runs it.
    flower_env = {k: v for k, v in child_env(env).items() if not k.startswith("FLOWER_")}
    flower_env["CALLPASS_FLOWER_BASIC_AUTH"] = f"callpass:{password}"  # the login from settings
    flower = stack.start_flower(flower_env, port)
    base = f"http://127.0.0.1:{port}"
    receiver = Receiver(WEBHOOK_SECRETS)
    # A receiver's own token in the query: it must not reach a log line either.
    hook = f"{receiver.url}/ok/secrets?key=receiver-key-{secrets.token_hex(8)}"
    try:

        def get(path: str) -> Any:
            response = requests.get(base + path, auth=auth, timeout=10)
            response.raise_for_status()
            return response.json()

        def worker_seen() -> bool:
            # Heartbeats are events: once Flower counts this worker online, it captures events.
            metrics = requests.get(base + "/metrics", timeout=5).text
            return f'flower_worker_online{{worker="{node}"}} 1.0' in metrics

        wait_until(worker_seen, 30, "Flower receiving the worker's events")
        without_login = requests.get(base + "/api/tasks", timeout=5).status_code

        dns = [unique_dn("1"), unique_dn("2"), unique_dn("6"), unique_dn("4"), unique_dn("3")]
        answered, busy, refused, invalid_plus, invalid_timeout = dns
        results = [
            enqueue_call(app, answered, 5, queue=QUEUE, webhook_url=hook),
            enqueue_call(app, busy, 5, queue=QUEUE, webhook_url=hook),
            enqueue_call(app, refused, 5, queue=QUEUE),
            enqueue_call(app, "+" + invalid_plus, 5, queue=QUEUE),  # invalid: '+'
            enqueue_call(app, invalid_timeout, 1, queue=QUEUE),  # invalid: timeout
        ]
        docs = {r.id: dict(r.get(timeout=60)) for r in results}
        outcomes = [docs[r.id]["outcome"] for r in results]
        assert outcomes == ["answered", "busy", "api_error", "invalid", "invalid"]
        # Both placed calls' events delivered: their bodies (with the pin) then leave Redis.
        wait_until(lambda: len(receiver.accepted("/ok/secrets")) == 4, 30, "4 webhook events")

        def flower_done() -> dict[str, Any] | None:
            listed = cast(dict[str, Any], get("/api/tasks"))
            ours = [t for t in listed.values() if t.get("worker") == node]
            if not set(docs) <= set(listed) or any(t["state"] not in FINAL_STATES for t in ours):
                return None
            return listed

        listed = wait_until(flower_done, 30, "Flower listing every task of the run, finished")
        pages: dict[str, str] = {"/api/tasks": json.dumps(listed)}
        for task_id in listed:
            pages[f"/api/task/info/{task_id}"] = json.dumps(get(f"/api/task/info/{task_id}"))
        pages["/api/workers"] = json.dumps(get("/api/workers?refresh=1"))
        logs = {
            worker.log_path.name: worker.log_path.read_text(errors="replace"),
            flower.log_path.name: flower.log_path.read_text(errors="replace"),
        }
        return Run(
            token=token,
            dns=dns,
            docs=docs,
            logs=logs,
            flower=pages,
            webhooks=receiver.received(),
            flower_without_login=without_login,
        )
    finally:
        receiver.stop()
        flower.stop()
        worker.stop()
        sim_proc.stop()


@pytest.fixture(scope="module")
def redis_dump(run: Run, redis_url: str) -> dict[str, str]:
    return dump_redis(redis_url)


def _lines_with(needle: str | re.Pattern[str], texts: dict[str, str]) -> list[str]:
    found = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            hit = needle.search(line) if isinstance(needle, re.Pattern) else needle in line.lower()
            if hit:
                found.append(f"{name}:{number}: {line[:300]}")
    return found


# --- the statements --------------------------------------------------------------------------


def test_the_run_covered_what_it_should(run: Run) -> None:
    """The searches below only mean something if the run produced what they look for."""
    assert len(run.pins) == 2  # answered and busy placed calls
    worker_log = next(t for n, t in run.logs.items() if n.startswith(WORKER))
    for task_id in run.docs:
        assert task_id in worker_log
        assert any(task_id in body for body in run.flower.values())


def test_the_token_appears_nowhere(run: Run, redis_dump: dict[str, str]) -> None:
    token = run.token
    assert _lines_with(token, run.logs) == []
    assert [url for url, body in run.flower.items() if token in body.lower()] == []
    leaks = [key for key, value in redis_dump.items() if token in key or token in value.lower()]
    assert leaks == []
    assert len(run.webhooks) == 4
    assert [d for d in run.webhooks if token in repr(d.headers) or token in d.body.decode()] == []


def test_flower_asks_for_the_login_from_the_settings(run: Run) -> None:
    """CALLPASS_FLOWER_BASIC_AUTH protects Flower's API (its /metrics stays open)."""
    assert run.flower_without_login == 401


def test_a_receivers_query_string_stays_out_of_logs_and_flower(run: Run) -> None:
    assert all("?key=receiver-key-" in d.path for d in run.webhooks)
    assert _lines_with("receiver-key-", run.logs) == []
    # Flower shows the task arguments masked: the URL is an argument, its query is not shown.
    assert [url for url, body in run.flower.items() if "receiver-key-" in body] == []


def test_full_numbers_appear_nowhere_in_logs_or_flower_only_masked(run: Run) -> None:
    for dn in run.dns:
        assert _lines_with(dn, run.logs) == [], dn
        assert [url for url, body in run.flower.items() if dn in body] == [], dn
    worker_log = next(t for n, t in run.logs.items() if n.startswith(WORKER))
    flower_text = "\n".join(run.flower.values())
    for doc in run.docs.values():
        masked = doc.get("dn_masked")
        if masked:
            assert masked in worker_log
            assert masked in flower_text


def test_each_pin_only_in_its_own_result(run: Run, redis_dump: dict[str, str]) -> None:
    for pin, task_id in run.pins.items():
        pattern = pin_pattern(pin)
        assert _lines_with(pattern, run.logs) == [], pin
        assert [url for url, body in run.flower.items() if pattern.search(body)] == [], pin
        holders = {key for key, value in redis_dump.items() if pattern.search(value)}
        own = f"db0:celery-task-meta-{task_id}"
        assert own in holders  # the producer reads it there (PLACED, then the outcome)
        ours = run.callids | set(run.docs)
        others = holders - {own} - _other_requests_pins(redis_dump, holders, pin, ours)
        found = {key: _lines_with(pattern, {key: redis_dump[key]}) for key in sorted(others)}
        assert found == {}, f"pin {pin} (task {task_id}) also held in {found}"


def _other_requests_pins(
    dump: dict[str, str], keys: set[str], pin: str, ours: set[str]
) -> set[str]:
    """Keys where the pin is another call's own pin that happens to have the same digits.

    The suite's Redis holds every other test's results; a four-digit pin collides now and then.
    A key that names none of our requests or calls and holds a JSON object whose ``pin`` is
    these digits next to *another* ``callid`` holds that call's pin, not a leak of ours.
    """
    explained = set()
    for key in keys:
        text = dump[key]
        if any(ref in key or ref in text for ref in ours):
            continue
        if any(_pin_of_another_call(obj, pin, ours) for obj in _json_objects(text)):
            explained.add(key)
    return explained


def _json_objects(text: str) -> Iterator[Any]:
    for line in text.splitlines():
        for candidate in (line, line.partition(": ")[2]):  # a string, or a hash field's value
            try:
                yield json.loads(candidate)
            except ValueError:
                continue


def _pin_of_another_call(value: Any, pin: str, ours: set[str]) -> bool:
    if isinstance(value, dict):
        if value.get("pin") == pin and value.get("callid") not in ours | {None}:
            return True
        return any(_pin_of_another_call(v, pin, ours) for v in value.values())
    if isinstance(value, list):
        return any(_pin_of_another_call(v, pin, ours) for v in value)
    return False


# --- the search itself is not blind ------------------------------------------------------------


def test_the_pin_pattern_finds_a_pin_and_not_digits_inside_other_values() -> None:
    pattern = pin_pattern("0864")
    for leak in ('{"pin": "0864"}', "pin=0864&x", "pin 0864.", "'0864'", "0864"):
        assert pattern.search(leak), leak
    for other in ("ab12-0864-cd34", "1764208800.0864", "10864", "08641", "x0864", "0864y"):
        assert not pattern.search(other), other


def test_the_redis_dump_sees_into_base64_message_bodies() -> None:
    body = json.dumps([[], {"dn": "79990001231", "note": "canary-7f3a"}, {}])
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "properties": {"body_encoding": "base64"},
    }
    unacked = json.dumps([envelope, "", "secrets"])  # kombu's unacked hash holds these
    assert any("canary-7f3a" in piece for piece in _expand(unacked))


def test_another_calls_equal_pin_is_not_taken_for_ours() -> None:
    mine = {"callid": "c-ours", "pin": "0864"}
    theirs = {"callid": "c-theirs", "pin": "0864"}
    dump = {
        "db0:celery-task-meta-t-theirs": json.dumps({"status": "SUCCESS", "result": theirs}),
        "db0:callpass:req:t-theirs": "outcome: " + json.dumps(theirs),
        "db0:callpass:req:t-ours": "outcome: " + json.dumps(mine),
        "db0:somewhere": "0864",
    }
    explained = _other_requests_pins(dump, set(dump), "0864", {"c-ours", "t-ours"})
    assert explained == {"db0:celery-task-meta-t-theirs", "db0:callpass:req:t-theirs"}
