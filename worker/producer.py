"""Enqueue a verification and read it back, as a producing service does.

A service needs nothing of this project to produce (see the README: ``send_task`` by name);
this module is the same thing with masked reprs and the enqueue-time header, for our CLI,
demo and tests.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from worker.contracts.names import CODE_QUEUE_SUFFIX, PLACED, START_TASK, VERIFY_TASK
from worker.contracts.outcome import TIMEOUT_MIN_S
from worker.masking import masked_reprs
from worker.pipeline.outbox import Outbox, lost_after_s
from worker.settings import load_settings
from worker.validation import parse_start_request

__all__ = [
    "Verification",
    "Verifier",
    "default_outbox",
    "enqueue_call",
    "verify_code",
    "wait_for_pin",
]

#: How often ``wait_for_pin`` looks at the result backend, in seconds.
PIN_POLL_INTERVAL_S = 0.02


def enqueue_call(
    app: Celery,
    dn: str,
    timeout: int | None = None,
    *,
    request_id: str | None = None,
    webhook_url: str | None = None,
    queue: str | None = None,
    task_id: str | None = None,
    outbox: Outbox | None = None,
    **version_2: str | bool | dict[str, str] | None,
) -> AsyncResult[Any]:
    """Send ``callpass.start_call``; the returned result resolves to the outcome document.

    With ``outbox`` (the workers' Redis), the request is noted before it is published, so a
    message the broker loses on its way to a worker is published again (see worker.pipeline.outbox).
    ``version_2``: ``verification_id``, ``resend``, ``fallback_task``, ``fallback_queue``,
    ``limit_keys`` (any of them makes the outcome a version-2 document).
    """
    given = {"timeout": timeout, "request_id": request_id, "webhook_url": webhook_url}
    kwargs: dict[str, Any] = {"dn": dn}
    kwargs.update((k, v) for k, v in {**given, **version_2}.items() if v is not None)
    argsrepr, kwargsrepr = masked_reprs((), kwargs)
    task_id = task_id or str(uuid.uuid4())
    requested_at = time.time()
    if outbox is not None:
        outbox.note(task_id, kwargs, requested_at)
    return app.send_task(
        START_TASK,
        kwargs=kwargs,
        queue=queue or app.conf.task_default_queue,
        task_id=task_id,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
        headers={"callpass_requested_at": requested_at},
    )


def verify_code(
    app: Celery, verification_id: str, code: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Check a code the user typed: ``{valid, reason, attempts_left}``, the JSON of a
    :class:`worker.contracts.verify.CodeCheck` as the task answers it.

    ``verification_id``: the verification (a request that named none: its request id).
    ``reason`` is one of ok, mismatch, expired, too_many_attempts, unknown_request,
    malformed_code. A correct code ends the verification; attempts are capped per
    verification, across its calls.
    """
    result = app.send_task(
        VERIFY_TASK,
        args=[verification_id, code],
        # Its own queue, which workers take from first: not behind a burst of starts.
        queue=app.conf.task_default_queue + CODE_QUEUE_SUFFIX,
        argsrepr="(request_id, <code>)",
    )
    return cast(dict[str, Any], result.get(timeout=timeout_s))


def default_outbox() -> Outbox:
    """The outbox in the workers' Redis, as configured by the ``CALLPASS_*`` settings."""
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    return Outbox(client, grace_s=lost_after_s(settings.visibility_timeout_s))


def wait_for_pin(result: AsyncResult[Any], timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Wait until the call is placed; return ``{callid, pin, …}``.

    Returns ``None`` when the request settled without placing a call (read ``result.get()``
    for why); raises ``TimeoutError`` past ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state: str = result.state  # celery-types knows only Celery's own states
        if state == PLACED:
            return dict(result.info)
        if state == "SUCCESS":
            doc = cast(dict[str, Any], result.result)
            return {k: doc[k] for k in ("request_id", "callid", "pin")} if doc.get("pin") else None
        if state == "FAILURE":
            return None
        time.sleep(PIN_POLL_INTERVAL_S)
    raise TimeoutError(f"no pin for task {result.id} within {timeout_s:g} s")


@dataclass(frozen=True)
class Verification:
    """A started call of a verification: keep ``task_id`` to read it back later, from any
    process, and ``verification_id`` to resend and to check codes."""

    task_id: str
    request_id: str
    #: The verification the call belongs to (its request id when it named none).
    verification_id: str = ""


class Verifier:
    """What a Python service does with callpass, with no Celery in sight.

    ::

        verifier = Verifier("redis://redis:6379/0")
        v = verifier.start("79991234567", timeout=20, request_id="signup-42")
        placed = verifier.pin(v)          # {"callid", "pin", ...}; None if no call was placed
        doc = verifier.outcome(v)         # the outcome document (schemas/outcome.v1.json)
        check = verifier.check_code(v.verification_id, "0446")  # {"valid", "reason", ...}
        again = verifier.resend(v, "79991234567")  # another call; codes of both then check

    ``redis_url`` is the broker and result backend (the workers' ``CALLPASS_REDIS_URL``); the
    outbox note that guards against a lost message goes there too.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        queue: str = "callpass",
        result_backend: str | None = None,
        visibility_timeout_s: int = 300,
    ) -> None:
        self._app = Celery("callpass-producer", set_as_current=False)
        self._app.conf.update(
            broker_url=redis_url,
            result_backend=result_backend or redis_url,
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            task_default_queue=queue,
            broker_transport_options={"visibility_timeout": visibility_timeout_s},
        )
        self._redis = redis.Redis.from_url(redis_url)
        self._outbox = Outbox(self._redis, grace_s=lost_after_s(visibility_timeout_s))

    @classmethod
    def from_settings(cls) -> Verifier:
        """Configured like the workers, from the ``CALLPASS_*`` environment."""
        s = load_settings()
        return cls(
            s.effective_broker_url,
            queue=s.queue,
            result_backend=s.effective_result_backend,
            visibility_timeout_s=s.visibility_timeout_s,
        )

    def start(
        self,
        dn: str,
        *,
        timeout: int | None = None,
        request_id: str | None = None,
        webhook_url: str | None = None,
        verification_id: str | None = None,
        fallback_task: str | None = None,
        fallback_queue: str | None = None,
        limit_keys: dict[str, str] | None = None,
    ) -> Verification:
        """Start a verification with its first call; raises ``InvalidRequestError`` (field
        and rule) on bad input. ``verification_id``, ``fallback_task`` or ``limit_keys``
        make its outcome a version-2 document; the verification's id is the request id
        unless ``verification_id`` names one."""
        return self._send(
            dn=dn,
            timeout=timeout,
            request_id=request_id,
            webhook_url=webhook_url,
            verification_id=verification_id,
            fallback_task=fallback_task,
            fallback_queue=fallback_queue,
            limit_keys=limit_keys,
        )

    def resend(
        self,
        verification: Verification,
        dn: str,
        *,
        timeout: int | None = None,
        request_id: str | None = None,
        fallback_task: str | None = None,
        fallback_queue: str | None = None,
        limit_keys: dict[str, str] | None = None,
    ) -> Verification:
        """Ask for another call in ``verification`` (the same number: the worker keeps only
        its digest). The worker refuses it within the cooldown (``rate_limited``, with
        ``retry_at``) and past the cap of calls; a code of any live call then checks."""
        return self._send(
            dn=dn,
            timeout=timeout,
            request_id=request_id,
            verification_id=verification.verification_id or verification.request_id,
            resend=True,
            fallback_task=fallback_task,
            fallback_queue=fallback_queue,
            limit_keys=limit_keys,
        )

    def _send(self, **fields: Any) -> Verification:
        # The worker's own rules, so a refusal here reads as the worker's would.
        parse_start_request((), fields, default_timeout=TIMEOUT_MIN_S)
        result = enqueue_call(self._app, outbox=self._outbox, **fields)
        request_id = fields.get("request_id") or str(result.id)
        return Verification(
            task_id=str(result.id),
            request_id=request_id,
            verification_id=fields.get("verification_id") or request_id,
        )

    def pin(
        self, verification: Verification | str, timeout_s: float = 30.0
    ) -> dict[str, Any] | None:
        """``{request_id, callid, pin, ...}`` once the call rings; ``None`` if the request
        settled without a call (see :meth:`outcome`); ``TimeoutError`` past ``timeout_s``."""
        return wait_for_pin(self._result(verification), timeout_s)

    def outcome(self, verification: Verification | str, timeout_s: float = 180.0) -> dict[str, Any]:
        """The outcome document, waiting up to ``timeout_s`` (``TimeoutError`` past it)."""
        result = self._result(verification)
        try:
            return dict(result.get(timeout=timeout_s))
        except CeleryTimeoutError:
            # Unsubscribe now: the traceback keeps this result alive, and its __del__ would
            # unsubscribe whenever it is collected, maybe once Redis is gone (a noisy error).
            backend: Any = self._app.backend  # the Redis backend's async API is untyped
            backend.remove_pending_result(result)
            result.backend = None  # type: ignore[assignment]  # __del__ skips a None backend
            raise TimeoutError(f"no outcome for task {result.id} within {timeout_s:g} s") from None

    def check_code(
        self, verification: Verification | str, code: str, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """``{valid, reason, attempts_left}`` for the code the user typed (``verification``:
        a started one, or its id)."""
        verification_id = (
            verification
            if isinstance(verification, str)
            else verification.verification_id or verification.request_id
        )
        return verify_code(self._app, verification_id, code, timeout_s)

    def close(self) -> None:
        self._redis.close()

    def _result(self, verification: Verification | str) -> AsyncResult[Any]:
        task_id = verification if isinstance(verification, str) else verification.task_id
        return AsyncResult(task_id, app=self._app)
