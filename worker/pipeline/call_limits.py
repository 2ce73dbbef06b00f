"""Call limits, shared by every worker through Redis, checked before a call is dialed: the
per-number limits and the fraud and spend limits.

* Numbers: ``CALLPASS_DN_LIMITS`` counts calls per number (by its digest) in sliding windows.
* Limit keys: a producer passes ``limit_keys`` (client IP, account id, any named key); each
  name with a limit in ``CALLPASS_KEY_LIMITS`` counts calls in sliding windows. Values are
  kept only as keyed hashes (HMAC-SHA256), in the request record and the windows' keys.
* Prefixes: ``CALLPASS_PREFIX_LIMITS`` counts calls to numbers starting with a prefix.
* Budgets: ``CALLPASS_CALL_BUDGETS`` caps calls per UTC day or month, all numbers or a
  prefix's; once spent, requests settle ``rate_limited`` with ``retry_at`` the next period.

One script checks every limit that applies and counts the request in all of them only when
all admit it (a request one limit refuses uses up none of the others); a request is counted
once, by its id, however often its start is redelivered.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

import redis

from worker.api.limits import Budget, WindowLimit
from worker.pipeline.store import RequestRecord, RequestStore, now

__all__ = ["LIMIT_KEY_LABEL", "CallLimits", "LimitRefusal"]

#: What the limit keys' HMAC key is derived for (worker.pipeline.pins.derive_key).
LIMIT_KEY_LABEL: Final = b"callpass limit key digest v1"

# KEYS: the record, n windows, m budget counters; ARGV: request id, n, m, then n pairs
# (limit, window ms), then m triples (limit, expire-at ms, retry-at epoch s). Returns
# {0} admitted, {1, window index, ms to wait} or {2, budget index}.
_ADMIT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, n, m = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wait, which = 0, 0
for i = 1, n do
  local key, limit, window = KEYS[1 + i], tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if not redis.call('ZSCORE', key, id) and redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait, which = w, i end
  end
end
if wait > 0 then return {1, which, math.max(1, wait)} end
local counted = redis.call('HGET', KEYS[1], 'budgets_counted')
if not counted then
  for j = 1, m do
    local limit = tonumber(ARGV[1 + 2 * n + 3 * j])
    if tonumber(redis.call('GET', KEYS[1 + n + j]) or '0') >= limit then return {2, j, 0} end
  end
end
for i = 1, n do
  local key = KEYS[1 + i]
  if not redis.call('ZSCORE', key, id) then redis.call('ZADD', key, now, id) end
  redis.call('PEXPIRE', key, tonumber(ARGV[3 + 2 * i]))
end
if not counted then
  for j = 1, m do
    redis.call('INCR', KEYS[1 + n + j])
    redis.call('PEXPIREAT', KEYS[1 + n + j], tonumber(ARGV[2 + 2 * n + 3 * j]))
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'budgets_counted', 1) end
end
return {0, 0, 0}
"""


@dataclass(frozen=True)
class LimitRefusal:
    #: The metric label: ``key:<name>``, ``prefix_window`` or ``budget_<period>``.
    limit: str
    #: Names the limit and its setting, never a key's value.
    message: str
    retry_at: float


@dataclass(frozen=True)
class _Window:
    key: str
    limit: WindowLimit
    label: str
    message: str


class CallLimits:
    KEY_PREFIX = "callpass:limit:"
    #: The per-number windows' keys: an earlier version's DestinationLimiter kept the same.
    DN_PREFIX = "callpass:dnlimit:"

    def __init__(
        self,
        client: redis.Redis,
        hash_key: bytes,
        dn_limits: tuple[WindowLimit, ...] = (),
        key_limits: tuple[tuple[str, WindowLimit], ...] = (),
        prefix_limits: tuple[tuple[str, WindowLimit], ...] = (),
        budgets: tuple[Budget, ...] = (),
    ) -> None:
        self._hash_key = hash_key
        self._dn_limits = dn_limits
        self._key_limits = key_limits
        self._prefix_limits = prefix_limits
        self._budgets = budgets
        self._admit = client.register_script(_ADMIT)

    def digests(self, limit_keys: dict[str, str] | None) -> str:
        """What a request record keeps of its ``limit_keys``: names and keyed hashes (JSON)."""
        hashed = {
            name: hmac.new(
                self._hash_key, f"{name}\x00{value}".encode(), hashlib.sha256
            ).hexdigest()[:32]
            for name, value in (limit_keys or {}).items()
        }
        return json.dumps(hashed, sort_keys=True) if hashed else ""

    def refusal(self, record: RequestRecord, dn: str) -> LimitRefusal | None:
        """Count the request in every limit that applies; the refusal if one is reached."""
        windows = self._windows(record, dn)
        budgets = [b for b in self._budgets if dn.startswith(b.prefix)]
        if not windows and not budgets:
            return None
        at = now()
        args: list[str | int] = [record.request_id, len(windows), len(budgets)]
        for window in windows:
            args += [window.limit.calls, window.limit.window_s * 1000]
        for budget in budgets:
            ends = _period_end(budget.period, at)
            args += [budget.calls, int((ends + 86_400) * 1000), repr(ends)]
        keys = [RequestStore.key(record.request_id)]
        keys += [w.key for w in windows] + [self._budget_key(b, at) for b in budgets]
        verdict, index, wait_ms = cast(list[int], self._admit(keys=keys, args=args))
        if verdict == 1:
            window = windows[int(index) - 1]
            return LimitRefusal(window.label, window.message, at + int(wait_ms) / 1000)
        if verdict == 2:
            budget = budgets[int(index) - 1]
            scope = f"numbers starting with {budget.prefix}" if budget.prefix else "all numbers"
            message = f"the {budget.period}'s call budget for {scope} is spent"
            return LimitRefusal(
                f"budget_{budget.period}",
                f"{message} (CALLPASS_CALL_BUDGETS)",
                _period_end(budget.period, at),
            )
        return None

    def _windows(self, record: RequestRecord, dn: str) -> list[_Window]:
        raw = record.get("limit_keys")
        hashed: dict[str, str] = json.loads(raw) if raw else {}
        windows = [
            _Window(
                f"{self.DN_PREFIX}{record.get('dn_digest')}:{limit.window_s}",
                limit,
                "destination",
                "too many calls to this number (CALLPASS_DN_LIMITS)",
            )
            for limit in self._dn_limits
        ]
        windows += [
            _Window(
                f"{self.KEY_PREFIX}key:{name}:{hashed[name]}:{limit.window_s}",
                limit,
                f"key:{name}",
                f"too many calls for limit key {name!r} (CALLPASS_KEY_LIMITS)",
            )
            for name, limit in self._key_limits
            if name in hashed
        ]
        windows += [
            _Window(
                f"{self.KEY_PREFIX}prefix:{prefix}:{limit.window_s}",
                limit,
                "prefix_window",
                f"too many calls to numbers starting with {prefix} (CALLPASS_PREFIX_LIMITS)",
            )
            for prefix, limit in self._prefix_limits
            if dn.startswith(prefix)
        ]
        return windows

    def _budget_key(self, budget: Budget, at: float) -> str:
        stamp = datetime.fromtimestamp(at, UTC)
        period = stamp.strftime("%Y-%m-%d" if budget.period == "day" else "%Y-%m")
        return f"{self.KEY_PREFIX}budget:{budget.prefix or 'all'}:{period}"


def _period_end(period: str, at: float) -> float:
    """When the UTC day or month holding ``at`` ends (epoch s)."""
    stamp = datetime.fromtimestamp(at, UTC)
    if period == "day":
        start = datetime(stamp.year, stamp.month, stamp.day, tzinfo=UTC).timestamp()
        return start + 86_400
    days = calendar.monthrange(stamp.year, stamp.month)[1]
    return datetime(stamp.year, stamp.month, 1, tzinfo=UTC).timestamp() + days * 86_400
