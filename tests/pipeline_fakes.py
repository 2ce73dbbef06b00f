"""Fakes and helpers for the in-process pipeline tests (tests/test_pipeline_core*.py and
tests/test_pipeline_parts.py).

The pipeline runs against the suite's real Redis; fakes stand in only for what it reaches
through its protocols (dispatcher, result sink, API client, webhooks). Time is controlled
through record fields (``requested_at``, ``dialing_at``, ``placed_at`` in the past), never by
sleeping.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import pytest
import redis

from worker.api.client import CallStatus, StartedCall
from worker.masking import mask_dn
from worker.pipeline.call_limits import CallLimits, LimitRefusal
from worker.pipeline.core import Pipeline
from worker.pipeline.due_polls import DuePoll, DuePolls, due_polls_key
from worker.pipeline.outbox import Outbox
from worker.pipeline.schedule import PollSchedule
from worker.pipeline.store import INFLIGHT_KEY, RequestRecord, RequestStore, dn_digest, now
from worker.sane_values import iso

DN = "79161234567"
#: make_pipeline's timings: a request must be placed within PLACE_DEADLINE_S of its request
#: time; a record in ``dialing`` for MAX_START_S belongs to a dead worker.
PLACE_DEADLINE_S = 30.0
MAX_START_S = 50.0
PROGRESS_SLACK_S = 315.0  # Pipeline's default
TIMEOUT_S = 10
FAKE_PIN = "4321"

# -- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeSink:
    """What producers would read, in the order it was written."""

    writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: Runs as each outcome is published (to look at Redis at that moment).
    on_outcome: Callable[[dict[str, Any]], None] = lambda doc: None

    def publish_placed(self, task_id: str, meta: dict[str, Any]) -> None:
        # As the real sink: PLACED info never replaces an outcome.
        if self.count(task_id, "SUCCESS") == 0:
            self.writes.append((task_id, "PLACED", meta))

    def publish_outcome(self, task_id: str, doc: dict[str, Any]) -> None:
        # Every publication is kept, so tests see the pipeline republish; the real sink (and
        # Celery's store_result) keeps the first outcome a producer could read.
        self.writes.append((task_id, "SUCCESS", doc))
        self.on_outcome(doc)

    def read_placed(self, task_id: str) -> dict[str, Any] | None:
        placed = [meta for to, state, meta in self.writes if to == task_id and state == "PLACED"]
        return placed[-1] if placed else None

    def last(self, task_id: str) -> tuple[str, dict[str, Any]]:
        state, doc = [(s, d) for t, s, d in self.writes if t == task_id][-1]
        return state, doc

    def count(self, task_id: str, state: str) -> int:
        return sum(1 for t, s, _ in self.writes if t == task_id and s == state)


class Resent(NamedTuple):
    task_id: str
    attempt: int
    countdown_s: float
    requested_at: float


@dataclass
class FakeDispatcher:
    """Records the polls and starts it is given; hands a chain on with the real script, on
    the suite's Redis (a due set of its own), so the record moves as it would."""

    records: redis.Redis
    polls: list[tuple[str, str, float]] = field(default_factory=list)
    starts: list[Resent] = field(default_factory=list)

    def send_poll(self, request_id: str, token: str, countdown_s: float) -> None:
        self.polls.append((request_id, token, countdown_s))

    def hand_on_poll(
        self, request_id: str, token: str, next_token: str, countdown_s: float, progress_by: float
    ) -> bool:
        due = DuePolls(self.records, due_polls_key("fake-dispatcher"))
        due_at = now() + max(countdown_s, 0.0)
        handed_on = due.hand_on(DuePoll(request_id, token), next_token, due_at, progress_by)
        self.records.expire(due.key, 600)  # nothing runs these: let the suite's Redis drop them
        if not handed_on:
            return False
        self.polls.append((request_id, next_token, countdown_s))
        return True

    def resend_start(
        self,
        task_id: str,
        kwargs: dict[str, Any],
        requested_at: float,
        attempt: int,
        countdown_s: float,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        self.starts.append(Resent(task_id, attempt, countdown_s, requested_at))


class FakeClient:
    """Answers starts with a fresh call (or raises ``start_error``); ``during_start`` runs
    while the start is in flight. Status requests answer ``statuses`` in turn (an exception
    is raised), then "in progress"."""

    def __init__(
        self,
        during_start: Callable[[], None] = lambda: None,
        start_error: Exception | None = None,
        statuses: Sequence[CallStatus | Exception] = (),
    ) -> None:
        self.during_start = during_start
        self.start_error = start_error
        self.statuses = list(statuses)
        self.starts = 0
        self.status_requests: list[str] = []

    def start_call_async(
        self,
        dn: str,
        timeout: int,
        request_id: str | None = None,
        send_by: float | None = None,
    ) -> StartedCall:
        self.starts += 1
        self.during_start()
        if self.start_error is not None:
            raise self.start_error
        return StartedCall(callid="c-" + uuid.uuid4().hex[:8], pin=FAKE_PIN, raw_result="null")

    def get_status(self, callid: str) -> CallStatus:
        self.status_requests.append(callid)
        answer = self.statuses.pop(0) if self.statuses else CallStatus(callid, None, None)
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class FakeWebhooks:
    """Stands in for WebhookEvents: accepts any URL and records the events stored."""

    enabled: bool = True
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, url, request id

    def url_for(self, requested: str | None) -> str:
        return requested or ""

    def emit(
        self, event_type: str, url: str, request_id: str, task_id: str, data: dict[str, Any]
    ) -> str:
        self.events.append((event_type, url, request_id))
        return "msg_" + request_id


# -- helpers ---------------------------------------------------------------------------------


class HookedLimits(CallLimits):
    """Call limits (none configured) whose check first runs ``hook(digest, request_id)``:
    between the claim and the dial, where a test changes the record. A positive answer
    refuses the call for that many seconds, as a per-number limit would."""

    def __init__(self, records: redis.Redis, hook: Callable[[str, str], float]) -> None:
        super().__init__(records, b"k" * 32)
        self._hook = hook

    def refusal(self, record: RequestRecord, dn: str) -> LimitRefusal | None:
        wait_s = self._hook(record.get("dn_digest"), record.request_id)
        if wait_s > 0:
            message = "too many calls to this number (CALLPASS_DN_LIMITS)"
            return LimitRefusal("destination", message, now() + wait_s)
        return super().refusal(record, dn)


def make_pipeline(records: redis.Redis, client: FakeClient, **overrides: Any) -> Pipeline:
    options: dict[str, Any] = {
        "client": lambda: client,
        "store": RequestStore(records, ttl_s=600),
        "sink": FakeSink(),
        "dispatcher": FakeDispatcher(records),
        "schedule": PollSchedule(),
        "default_timeout_s": TIMEOUT_S,
        "place_deadline_s": PLACE_DEADLINE_S,
        "max_start_s": MAX_START_S,
        "outbox": Outbox(records, grace_s=60.0),
    }
    options.update(overrides)
    return Pipeline(**options)


def unique_request() -> tuple[str, str]:
    return "t-" + uuid.uuid4().hex, "r-" + uuid.uuid4().hex


def sink_of(pipeline: Pipeline) -> FakeSink:
    assert isinstance(pipeline.sink, FakeSink)
    return pipeline.sink


def dispatcher_of(pipeline: Pipeline) -> FakeDispatcher:
    assert isinstance(pipeline.dispatcher, FakeDispatcher)
    return pipeline.dispatcher


def record_of(pipeline: Pipeline, request_id: str) -> RequestRecord:
    record = pipeline.store.load(request_id)
    assert record is not None
    return record


def outcome_of(pipeline: Pipeline, task_id: str) -> dict[str, Any]:
    """The outcome the producer of ``task_id`` reads last (fails if PLACED was last)."""
    state, doc = sink_of(pipeline).last(task_id)
    assert state == "SUCCESS"
    return doc


def start_new(
    pipeline: Pipeline, requested_at: float | None = None, attempt: int = 0, **kwargs: Any
) -> tuple[str, str, str]:
    """Deliver a fresh request; return its task id, request id and the start's summary."""
    task_id, request_id = unique_request()
    args = {"dn": DN, "request_id": request_id, **kwargs}
    summary = pipeline.start(task_id, (), args, requested_at=requested_at, attempt=attempt)
    return task_id, request_id, summary


def redeliver(pipeline: Pipeline, task_id: str, request_id: str, attempt: int = 0) -> str:
    return pipeline.start(task_id, (), {"dn": DN, "request_id": request_id}, attempt=attempt)


def seed(records: redis.Redis, pipeline: Pipeline, state: str, **fields: str) -> tuple[str, str]:
    """A record as a delivery left it in ``state`` (its process gone); return its ids."""
    task_id, request_id = unique_request()
    initial = {
        "task_id": task_id,
        "dn_masked": mask_dn(DN),
        "timeout": str(TIMEOUT_S),
        "requested_at": repr(now()),
        "poll_token": "",
        "status_requests": "0",
        "webhook_url": "",
    }
    pipeline.store.claim(request_id, task_id, dn_digest(DN), initial, now() + 600)
    for name, value in {"state": state, **fields}.items():
        records.hset(RequestStore.key(request_id), name, value)
    return task_id, request_id


def placed_info(callid: str, placed_at: float) -> dict[str, Any]:
    """PLACED info as a dialer publishes it."""
    return {
        "callid": callid,
        "pin": "1111",
        "placed_at": iso(placed_at),
        "timeout": TIMEOUT_S,
    }


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def within(expected: float, seconds: float = 5.0) -> Any:
    """Equal to ``expected`` give or take ``seconds`` (an epoch time: no relative slack)."""
    return pytest.approx(expected, rel=0, abs=seconds)


def assert_next_poll_due(delay: float, elapsed_s: float) -> None:
    """``delay`` is the schedule's next poll for a call placed ``elapsed_s`` ago (a little
    less: time passes between placing the record in the past and the poll)."""
    expected = PollSchedule().next_delay(elapsed_s, TIMEOUT_S)
    assert expected is not None
    assert expected - 1.5 < delay <= expected + 0.01


def progress_due(records: redis.Redis, request_id: str) -> float | None:
    """When the sweeper expects the request to show progress (None: not in flight)."""
    score = records.zscore(INFLIGHT_KEY, request_id)
    return None if score is None else float(score)
