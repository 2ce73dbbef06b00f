"""Limits that protect the account and the people called, shared by all workers via Redis.

* :class:`GlobalRateLimiter`: at most ``rate`` API requests in any one-second window, across
  every worker on every host (Celery's ``rate_limit`` is per worker). A sliding-window log in a
  sorted set, timed by the Redis server's clock so hosts with skewed clocks agree.
* :class:`WindowLimit` and :class:`Budget`: the shapes of the per-number, fraud and spend
  limits that :class:`worker.pipeline.call_limits.CallLimits` applies.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from worker.api.errors import RateLimitedError

__all__ = [
    "Budget",
    "GlobalRateLimiter",
    "WindowLimit",
    "parse_window_limits",
]

# KEYS[1] zset; ARGV: limit, window_us, member. Returns 0 (granted) or µs until a slot frees.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

#: The window is longer than a second: a granted request still takes up to a few hundred ms
#: to reach the API (threads, connections), and a burst granted over 1.2 s must not land within
#: one of the API's seconds. The sustained rate is therefore ``rate / 1.2`` per second.
RATE_WINDOW_US = 1_200_000


class GlobalRateLimiter:
    """At most ``rate_per_s`` requests in any one-second window, shared through Redis."""

    KEY = "callpass:ratelimit:api"

    def __init__(self, client: redis.Redis, rate_per_s: int, max_wait_s: float = 2.0) -> None:
        self._rate = rate_per_s
        self._max_wait_s = max_wait_s
        self._script = client.register_script(_SLIDING_WINDOW)

    def acquire(self) -> None:
        """Wait (up to ``max_wait_s``) for a slot; raise :class:`RateLimitedError` past that."""
        deadline = time.monotonic() + self._max_wait_s
        member = uuid.uuid4().hex
        while True:
            wait_us = int(self._script(keys=[self.KEY], args=[self._rate, RATE_WINDOW_US, member]))
            if wait_us == 0:
                return
            wait_s = wait_us / 1_000_000
            if time.monotonic() + wait_s > deadline:
                raise RateLimitedError(
                    "the worker's shared API rate limit is reached", None, wait_s
                )
            time.sleep(wait_s)


@dataclass(frozen=True)
class WindowLimit:
    calls: int
    window_s: int


@dataclass(frozen=True)
class Budget:
    """At most ``calls`` calls per UTC ``period`` (day or month), to numbers starting with
    ``prefix`` ('' for every number)."""

    prefix: str
    period: str
    calls: int


def parse_window_limits(text: str) -> tuple[WindowLimit, ...]:
    """``"3/600,10/86400"`` → 3 calls per 600 s and 10 per 86,400 s; empty → no limits."""
    limits = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        calls, _, window = part.partition("/")
        if not (calls.isdigit() and window.isdigit() and int(calls) > 0 and int(window) > 0):
            raise ValueError(f"{part!r} is not CALLS/SECONDS with whole numbers above 0")
        limits.append(WindowLimit(int(calls), int(window)))
    return tuple(limits)
