"""The tasks' guard against infrastructure failures, driven directly: a step that meets a
dead Redis is sent again, and when even that send fails the message goes back to the queue
instead of ending in a FAILURE that would be stored over another worker's outcome."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from tasks.calls import _guarded


class FakeTask:
    name = "callpass.start_call"

    def __init__(self, headers: dict[str, Any]) -> None:
        self.request = FakeRequest(headers)


class FakeRequest(dict[str, Any]):
    id = "task-1"


def failing_step() -> str:
    raise redis.TimeoutError("Timeout reading from socket")


def test_a_step_that_meets_a_dead_redis_is_sent_again_with_a_backoff() -> None:
    sent: list[tuple[int, float]] = []
    task: Any = FakeTask({"callpass_infra_attempt": 2})
    assert _guarded(task, failing_step, lambda n, delay: sent.append((n, delay))) == "deferred"
    assert sent == [(3, 4.0)]


def test_when_the_resend_fails_too_the_message_is_requeued_not_failed() -> None:
    def broker_down(attempt: int, delay: float) -> None:
        raise OperationalError("Timeout connecting to server")

    task: Any = FakeTask({})
    with pytest.raises(Reject) as caught:
        _guarded(task, failing_step, broker_down)
    assert caught.value.requeue is True


@pytest.mark.parametrize("header", [True, -1, 10**9, "3", None])
def test_a_hostile_infra_attempt_header_counts_as_the_first(header: object) -> None:
    sent: list[tuple[int, float]] = []
    task: Any = FakeTask({"callpass_infra_attempt": header})
    _guarded(task, failing_step, lambda n, delay: sent.append((n, delay)))
    assert sent == [(1, 1.0)]
