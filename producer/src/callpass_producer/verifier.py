"""A verification as a Python service sees it: start, pin, resend, check the code, outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from callpass_producer.arguments import check_start_arguments
from callpass_producer.contracts.names import DEFAULT_QUEUE
from callpass_producer.outbox import OutboxNotes, lost_after_s
from callpass_producer.sending import enqueue_call, verify_code, wait_for_pin

__all__ = ["Verification", "Verifier"]


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
    outbox note that guards against a lost message goes there too. Where the workers split
    them (``CALLPASS_BROKER_URL``, ``CALLPASS_RESULT_BACKEND``): ``redis_url`` is the broker,
    ``result_backend`` the backend, and ``records_url`` the workers' ``CALLPASS_REDIS_URL``,
    which the sweeper reads the notes from.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        queue: str = DEFAULT_QUEUE,
        result_backend: str | None = None,
        records_url: str | None = None,
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
        self._redis = redis.Redis.from_url(records_url or redis_url)
        self._outbox = OutboxNotes(self._redis, grace_s=lost_after_s(visibility_timeout_s))

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
        """Start a verification with its first call; raises
        :class:`~callpass_producer.InvalidArguments` (field and rule) on bad input.
        ``verification_id``, ``fallback_task`` or ``limit_keys`` make its outcome a
        version-2 document; the verification's id is the request id unless
        ``verification_id`` names one."""
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
        check_start_arguments((), fields)
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
