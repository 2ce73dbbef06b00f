"""What runs around every API request: the shared circuit breaker and rate limit."""

from __future__ import annotations

from typing import Protocol

from worker.api.breaker import CircuitBreaker
from worker.api.errors import CallPassError, PermanentError, RateLimitedError
from worker.api.limits import GlobalRateLimiter
from worker.ops import metrics

__all__ = ["ApiGuard", "RequestGuard"]


class RequestGuard(Protocol):
    def before_request(self) -> None:
        """Raise a :class:`~worker.api.errors.TransientError` that says "not sent" to hold back."""

    def after_request(self, error: CallPassError | None) -> None:
        """Learn how the request went (``None``: the API answered)."""


class ApiGuard:
    """Breaker first (no slot is spent while the API is down), then the shared rate limit."""

    def __init__(self, breaker: CircuitBreaker, limiter: GlobalRateLimiter | None) -> None:
        self._breaker = breaker
        self._limiter = limiter

    def before_request(self) -> None:
        try:
            self._breaker.before_request()
        except CallPassError:
            metrics.limit_refused("breaker")
            raise
        if self._limiter is not None:
            try:
                self._limiter.acquire()
            except RateLimitedError:
                metrics.limit_refused("api_rate")
                raise

    def after_request(self, error: CallPassError | None) -> None:
        # An answer from the API, even a refusal or a 429, means it is up.
        api_answered = error is None or isinstance(error, PermanentError | RateLimitedError)
        self._breaker.record(api_answered)
