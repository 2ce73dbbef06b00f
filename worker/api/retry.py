"""How the API client retries an exchange (tenacity): the API's ``Retry-After`` when it gave
one, else jittered exponential backoff; a long ``Retry-After`` goes back to the caller."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from worker.api.errors import RateLimitedError

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "MAX_INLINE_WAIT_S", "retrying"]

#: Longest Retry-After honoured inside one HTTP exchange, in seconds. Longer waits go back to
#: the caller: a task re-schedules itself instead of holding a worker slot.
MAX_INLINE_WAIT_S = 5.0

#: Backoff between attempts: random in [0, min(cap, base * 2**n)] seconds ("full jitter").
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 2.0


def retrying(attempts: int, retry_if: Callable[[BaseException], bool]) -> Retrying:
    """At most ``attempts`` tries of what ``retry_if`` accepts; the last error is re-raised."""
    return Retrying(
        stop=stop_any(stop_after_attempt(attempts), _StopOnLongRetryAfter()),
        wait=_wait_retry_after_or_backoff,
        retry=retry_if_exception(retry_if),
        reraise=True,
    )


_backoff = wait_random_exponential(multiplier=BACKOFF_BASE_S, max=BACKOFF_CAP_S)


def _retry_after(state: RetryCallState) -> float | None:
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    return exc.retry_after if isinstance(exc, RateLimitedError) else None


def _wait_retry_after_or_backoff(state: RetryCallState) -> float:
    """The API's Retry-After when it gave one, else jittered exponential backoff."""
    retry_after = _retry_after(state)
    return retry_after if retry_after is not None else _backoff(state)


class _StopOnLongRetryAfter(stop_base):
    """Stop when the API asks for a longer pause than a worker slot should sleep."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        retry_after = _retry_after(retry_state)
        return retry_after is not None and retry_after > MAX_INLINE_WAIT_S
