"""``callpass.start_call`` and ``callpass.poll_status``: stable names foreign services use.

Both tasks keep no result of their own (``ignore_result``): the pipeline writes what the
producer reads under the *start_call* task id (state ``PLACED`` with callid and pin, then
``SUCCESS`` with the outcome document). What they return is a one-word summary for Flower and
the logs, without number or pin.

When Redis or the broker fails mid-task, the task sends itself again with a backoff instead of
failing: a failed task is acked, and its request would never settle. (Celery's own
``self.retry`` would store a RETRY state over the producer's PLACED one, and rebuild the
unmasked argument reprs.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from callpass_producer.contracts.names import POLL_TASK, START_TASK, VERIFY_TASK
from callpass_producer.contracts.verify import UNKNOWN_REQUEST
from worker.backoff import capped_backoff_s
from worker.masking import MaskedRequest
from worker.process.parts import WorkerParts
from worker.sane_values import sane_count, sane_time

__all__ = ["register_call_tasks"]

log = logging.getLogger(__name__)

#: Failures of our own infrastructure (not of the API): worth waiting out.
INFRA_ERRORS = (redis.RedisError, OperationalError, ConnectionError)
#: Backoff for re-sending a task after an infrastructure failure, in seconds.
INFRA_RETRY_BASE_S = 1.0
INFRA_RETRY_CAP_S = 30.0
#: Headers count attempts; a value above these is not one of ours and counts as 0.
MAX_ATTEMPT_HEADER = 1_000


class CallpassTask(Task):  # type: ignore[type-arg]
    """Celery's Task with a positional-only ``self`` in ``__call__``.

    Celery calls a task as ``task(*args, **kwargs)``; a foreign producer's keyword argument
    named ``self`` would collide with the method's own and crash the task before our
    validation could answer it. (The tracer has pushed the request context already.)
    """

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)


class PipelineRequest(MaskedRequest):
    """The request of a pipeline task: masked reprs, and no expiry of Celery's.

    Celery revokes a message past its ``expires`` header and stores ``REVOKED`` under its task
    id, over the ``PLACED`` state or the outcome a redelivered start already has (and a first
    delivery would have no outcome at all). Lateness is the placement deadline's to judge: a
    start past it settles ``expired``, like every other request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expires = None


def _declare_pipeline_task(
    app: Celery, name: str, run: Callable[..., str], send_events: bool = True
) -> None:
    app.task(
        name=name,
        # This app's own: a shared task would be copied into every app created after it.
        shared=False,
        base=CallpassTask,
        bind=True,
        ignore_result=True,
        # A bug (FAILURE) is still recorded, so a producer's get() raises instead of hanging.
        store_errors_even_if_ignored=True,
        Request=PipelineRequest,
        acks_late=True,
        # Flower's events (received, started, succeeded) cost a broker publish each.
        send_events=send_events,
    )(run)


def _infra_delay(task: Task[Any, str]) -> tuple[int, float]:
    attempt = sane_count(task.request.get("callpass_infra_attempt"), MAX_ATTEMPT_HEADER)
    return attempt + 1, capped_backoff_s(attempt, INFRA_RETRY_BASE_S, INFRA_RETRY_CAP_S)


def _guarded(
    task: Task[Any, str], run: Callable[[], str], resend: Callable[[int, float], None]
) -> str:
    try:
        return run()
    except INFRA_ERRORS as exc:
        attempt, delay = _infra_delay(task)
        log.warning(
            "%s[%s]: infrastructure error (%s); sent again in %.0fs",
            task.name,
            task.request.id,
            type(exc).__name__,
            delay,
        )
        try:
            resend(attempt, delay)
        except INFRA_ERRORS as send_exc:
            # Neither went through: hand the message back (requeued now, or restored after the
            # visibility time-out if even that fails). A task FAILURE instead would be stored
            # over the outcome another worker may write for the same task id meanwhile.
            log.warning(
                "%s[%s]: could not be sent again (%s); back to the queue",
                task.name,
                task.request.id,
                type(send_exc).__name__,
            )
            raise Reject(send_exc, requeue=True) from send_exc
        return "deferred"


def register_call_tasks(app: Celery, parts: WorkerParts) -> None:
    """Declare ``start_call``, ``poll_status`` and ``verify_code`` on ``app``; their pipeline
    is ``parts``' (built once in each worker process)."""
    _declare_pipeline_task(app, START_TASK, _start_call(parts))
    _declare_pipeline_task(
        app, POLL_TASK, _poll_status(parts), send_events=parts.settings.poll_task_events
    )
    app.task(
        name=VERIFY_TASK,
        shared=False,
        base=CallpassTask,
        Request=CodeMaskedRequest,
        acks_late=True,
    )(_verify_code(parts))


def _start_call(parts: WorkerParts) -> Callable[..., str]:
    def start_call(self: Task[Any, str], /, *args: Any, **kwargs: Any) -> str:
        """Validate, claim the request id, place the call with async v2.0, hand over to polls.

        Keyword arguments: ``dn`` (str), ``timeout`` (int seconds, 2-99), ``webhook_url`` and
        ``request_id`` (both optional). Anything else settles as ``invalid``.
        """
        pipeline = parts.pipeline()
        # Headers are a producer's word: a time that is not sane (NaN, ahead of our clock,
        # before the epoch) would move or switch off the placement deadline: it counts as absent.
        requested_at = sane_time(
            self.request.get("callpass_requested_at"),
            pipeline.now(),
            source="header callpass_requested_at",
        )
        attempt = sane_count(self.request.get("callpass_attempt"), MAX_ATTEMPT_HEADER)
        task_id = str(self.request.id)

        def resend(infra_attempt: int, delay: float) -> None:
            pipeline.dispatcher.resend_start(
                task_id,
                kwargs,
                requested_at or pipeline.now(),
                attempt,
                delay,
                extra_headers={"callpass_infra_attempt": infra_attempt},
            )

        with parts.starts:
            return _guarded(
                self,
                lambda: pipeline.start(
                    task_id, args, kwargs, requested_at=requested_at, attempt=attempt
                ),
                resend,
            )

    return start_call


class CodeMaskedRequest(MaskedRequest):
    """``verify_code``'s arguments show the request id only: a code is a pin guess."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr, self._kwargsrepr = "(request_id, <code>)", "{}"


def _verify_code(parts: WorkerParts) -> Callable[[object, object], dict[str, Any]]:
    def verify_code(request_id: object, code: object) -> dict[str, Any]:
        """Check a code the user typed: a ``CodeCheck`` (contracts.verify) as JSON."""
        pins = parts.pipeline().pins  # the process's one vault: key derived, scripts loaded once
        if not isinstance(request_id, str) or not request_id or pins is None:
            return UNKNOWN_REQUEST.model_dump(mode="json")
        return pins.verify(request_id, code).model_dump(mode="json")

    return verify_code


def _poll_status(parts: WorkerParts) -> Callable[..., str]:
    def poll_status(self: Task[Any, str], /, request_id: str, token: str) -> str:
        """Ask for the call's status once; settle, or schedule the next poll of the chain."""
        pipeline = parts.pipeline()

        def resend(_infra_attempt: int, delay: float) -> None:
            # Into the due set: its runner backs off a failing poll itself, so the attempt
            # count a message header carried is not needed.
            pipeline.dispatcher.send_poll(request_id, token, delay)

        return _guarded(self, lambda: pipeline.poll(request_id, token), resend)

    return poll_status
