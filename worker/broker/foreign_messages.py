"""Messages the worker cannot read: answered instead of dropped, and never printed.

Celery drops a message it cannot decode (pickle, YAML, raw bytes, a content type it does not
accept) with no result, so its producer waits forever; it prints the body while doing so; and
some bodies (raw bytes, JSON that is not ``[args, kwargs, embed]``) or headers (``timelimit``)
crash its consumer, and the message, restored on the way out, crashes the next worker too.

:class:`ForeignMessageConsumer` (Celery's ``worker_consumer``) checks each task message before
Celery reads it and answers the ones it refuses: under the message's task id it stores what
the producer waits for (an ``invalid`` outcome naming the field and the rule for
``start_call``), and only then acks the message. The body is never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.utils.saferepr import saferepr
from celery.utils.time import maybe_iso8601, maybe_make_aware, timezone
from celery.worker.consumer import Consumer
from celery.worker.consumer import consumer as celery_consumer
from kombu.asynchronous.timer import to_timestamp
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message
from vine import promise

from callpass_producer.contracts.names import PLACED, POLL_TASK, VERIFY_TASK, WEBHOOK_TASK
from callpass_producer.contracts.outcome import Outcome, OutcomeError
from callpass_producer.contracts.verify import UNKNOWN_REQUEST
from worker.backoff import capped_backoff_s
from worker.ops import metrics
from worker.pipeline.document import build_outcome
from worker.pipeline.store import now

__all__ = ["ForeignMessageConsumer", "Refusal", "answer_for", "read_task_id", "refusal_for"]

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
#: What Celery raises from a header it cannot read (``timelimit: "x"``); anything else is a bug
#: to surface, not a message to answer ``invalid``.
_HEADER_ERRORS = (InvalidTaskError, KeyError, TypeError, ValueError, OverflowError)
PROTOCOL_RULE = "must follow Celery's message protocol 2 ([args, kwargs, embed], JSON)"
#: Internal tasks keep no result: a refused one is acked and logged only.
UNANSWERED_TASKS = frozenset({POLL_TASK, WEBHOOK_TASK})
MAX_TASK_ID_CHARS = 255
#: Backoff while the result backend cannot take the answer (the message stays unacked).
STORE_RETRY_BASE_S = 1.0
STORE_RETRY_CAP_S = 30.0


@dataclass(frozen=True)
class Refusal:
    """Why a message is refused: ``field`` and ``rule`` go to the producer; ``detail`` (an
    exception's type, never a value from the message) only to the log."""

    field: str
    rule: str
    detail: str = ""


def _task_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_TASK_ID_CHARS:
        return value
    return None


def read_task_id(message: Message) -> str | None:
    """The task id (protocol 2: ``headers['id']``, else ``properties['correlation_id']``)."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    properties = message.properties if isinstance(message.properties, dict) else {}
    return _task_id(headers.get("id")) or _task_id(properties.get("correlation_id"))


def _task_name(message: Message) -> str | None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    name = headers.get("task")
    return name if isinstance(name, str) else None


def _shape_refusal(payload: Any) -> Refusal | None:
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return Refusal("body", PROTOCOL_RULE)
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return Refusal("body", "args (the body's first item) must be an array")
    if not isinstance(kwargs, dict):
        return Refusal("body", "kwargs (the body's second item) must be an object")
    if embed is None:
        return None
    if not isinstance(embed, dict):
        return Refusal("body", "embed (the body's third item) must be an object or null")
    for key, kinds in (("callbacks", list), ("errbacks", list), ("chain", list), ("chord", dict)):
        if embed.get(key) is not None and not isinstance(embed[key], kinds):
            return Refusal("body", f"embed.{key} must be {kinds.__name__} or null")
    return None


def refusal_for(message: Message) -> Refusal | None:
    """Why Celery could not run this protocol-2 task message, or ``None`` if it can."""
    if _task_id(message.headers.get("id")) is None:
        # Celery would run it under that value (5, None: one shared "None" request for all)
        # while its producer waits on the correlation id.
        return Refusal("id", f"must be a string of 1-{MAX_TASK_ID_CHARS} characters")
    if message.content_type != JSON_CONTENT_TYPE:
        return Refusal("content_type", f"must be JSON ({JSON_CONTENT_TYPE})")
    if not _eta_convertible(message.headers.get("eta")):
        # Celery's strategy would store FAILURE for a date it cannot turn into a timestamp.
        return Refusal("eta", "must be an ISO 8601 date-time between the years 1 and 9999, or null")
    try:
        payload = message.decode()  # cached: Celery's own read of the body reuses it
    except Exception as exc:  # any decoder failure: the body is not JSON in its encoding
        return Refusal("body", "must be JSON text in its content encoding", type(exc).__name__)
    return _shape_refusal(payload)


def _eta_convertible(eta: object) -> bool:
    """Whether Celery's strategy can schedule ``eta`` (as it converts it, in the same order)."""
    if eta is None:
        return True
    if not isinstance(eta, str):
        return False
    try:
        moment = maybe_iso8601(eta)
        if moment is not None:
            to_timestamp(timezone.to_system(maybe_make_aware(moment)))
    except (AttributeError, OverflowError, OSError, TypeError, ValueError):
        return False
    return True


def refusal_from_error(exc: BaseException) -> Refusal:
    """A refusal for what Celery raised on reading a message."""
    if isinstance(exc, ContentDisallowed):
        return Refusal("content_type", f"must be JSON ({JSON_CONTENT_TYPE})", type(exc).__name__)
    if isinstance(exc, DecodeError):
        return Refusal("body", "must be JSON text in its content encoding", type(exc).__name__)
    text = str(exc)
    for header in ("ETA", "expires"):
        if f"invalid {header} value" in text:
            return Refusal(header.lower(), "must be an ISO 8601 date-time or null", "InvalidTask")
    return Refusal("message", PROTOCOL_RULE, type(exc).__name__)


def body_not_shown(message: Message, body: Any = None) -> str:
    """What Celery's own log lines print instead of a message body."""
    raw = message.body
    return f"(body not shown, {len(raw) if isinstance(raw, bytes | str) else 0} bytes)"


def answer_for(task_name: str | None, task_id: str, refusal: Refusal) -> dict[str, Any] | None:
    """What the producer of a refused message reads under its task id (``None``: nothing,
    for internal tasks)."""
    if task_name in UNANSWERED_TASKS:
        return None
    if task_name == VERIFY_TASK:  # its own answer's shape, as for an unusable request id
        return UNKNOWN_REQUEST.model_dump(mode="json")
    received = now()
    return build_outcome(
        Outcome.INVALID,
        completed_at=received,
        request_id=task_id,
        error=OutcomeError(field=refusal.field, rule=refusal.rule),
        requested_at=received,
    ).model_dump(mode="json")


class ForeignMessageConsumer(Consumer):
    """Celery's consumer, with every unreadable task message answered, acked, and never
    printed (see the module's docstring)."""

    # Set by Celery's Consumer at run time (its type stubs do not declare them).
    strategies: dict[str, Any]
    connection_errors: tuple[type[BaseException], ...]
    channel_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The lines Celery still writes itself ("Received unregistered task …") print the body
        # through this one function: a foreign body may hold a number in a form no masking
        # recognises (pickle protocol 0 writes "V79161234567"), so they show its size only.
        setattr(celery_consumer, "dump_body", body_not_shown)  # noqa: B010 - a module's name

    def create_task_handler(self, promise: Any = promise) -> Any:
        celery_handler = super().create_task_handler(promise)
        names = self.strategies

        def on_task_received(message: Message) -> Any:
            name = _task_name(message)
            if name is not None and name in names:
                refusal = refusal_for(message)
                if refusal is not None:
                    return self._refuse(message, refusal)
            try:
                return celery_handler(message)
            except (*self.connection_errors, *self.channel_errors):
                raise
            except _HEADER_ERRORS as exc:  # a header Celery chokes on: answer, don't crash
                if not message.acknowledged:
                    self._refuse(message, Refusal("headers", PROTOCOL_RULE, type(exc).__name__))
                return None

        return on_task_received

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._refuse(message, refusal_from_error(exc))

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._refuse(message, refusal_from_error(exc))

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._refuse(message, Refusal("headers", "must name the task (headers.task)"))

    def _refuse(self, message: Message, refusal: Refusal) -> None:
        log.warning(
            "refused a message (task %s, id %s, content type %s, %s): %s %s%s",
            saferepr(_task_name(message), maxlen=80),
            saferepr(read_task_id(message), maxlen=80),
            saferepr(message.content_type, maxlen=80),
            body_not_shown(message),
            refusal.field,
            refusal.rule,
            f" ({refusal.detail})" if refusal.detail else "",
        )
        self._answer_then_ack(message, refusal, 0)

    def _answer_then_ack(self, message: Message, refusal: Refusal, attempt: int) -> None:
        """Store the answer, then ack; while the backend fails, the message stays unacked
        (another worker gets it if this one dies) and the store is tried again."""
        task_id = read_task_id(message)
        answer = answer_for(_task_name(message), task_id, refusal) if task_id else None
        if task_id is not None and answer is not None:
            try:
                self._store_once(task_id, answer)
            except Exception as exc:  # the backend is down: try again later, keep the message
                delay = capped_backoff_s(attempt, STORE_RETRY_BASE_S, STORE_RETRY_CAP_S)
                log.warning(
                    "cannot store the answer for %s (%s); again in %.0f s",
                    task_id,
                    type(exc).__name__,
                    delay,
                )
                self.timer.call_after(delay, self._answer_then_ack, (message, refusal, attempt + 1))
                return
            if "outcome" in answer:
                metrics.request_settled(Outcome.INVALID)
        message.ack_log_error(log, (*self.connection_errors, *self.channel_errors))

    def _store_once(self, task_id: str, answer: dict[str, Any]) -> None:
        # A task id that already has a result (a real request, or this message's answer
        # before a redelivery) keeps it: a request settles once.
        meta = self.app.backend.get_task_meta(task_id, cache=False)
        if meta.get("status") in (PLACED, "SUCCESS"):
            return
        self.app.backend.store_result(task_id, answer, "SUCCESS")
