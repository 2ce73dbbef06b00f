"""A circuit breaker shared by all workers: when the API is down, stop hammering it.

``threshold`` transport failures within ``window_s`` open the circuit for ``cooldown_s``; while
open, requests fail at once with :class:`~worker.api.errors.ConnectError` (nothing was sent, so a
start may safely be tried again later). After the cool-down the circuit is half-open: one
request, from one worker, probes the API; its success closes the circuit, its failure opens it
again for another cool-down.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from worker.api.errors import ConnectError

__all__ = ["CircuitBreaker"]

log = logging.getLogger(__name__)

#: Longest a process goes between resets of the shared failure count while requests succeed.
RESET_EVERY_S = 0.1

_KEYS = (
    "callpass:breaker:failures",
    "callpass:breaker:open",
    "callpass:breaker:tripped",
    "callpass:breaker:probe",
)

# ARGV: cooldown_ms. Returns 0: hold back; 1: closed, go; 2: go as the one probe.
_ALLOW = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[1]) then return 2 end
  return 0
end
return 1
"""

# ARGV: threshold, window_ms, cooldown_ms. Returns 1 when this failure opened the circuit.
_FAILED = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[3]) * 20)
  redis.call('DEL', KEYS[1], KEYS[4])
  return 1
end
return 0
"""


class CircuitBreaker:
    def __init__(
        self,
        client: redis.Redis,
        threshold: int,
        window_s: float,
        cooldown_s: float,
        reset_every_s: float = RESET_EVERY_S,
    ) -> None:
        self._redis = client
        self._threshold = threshold
        self._window_ms = int(window_s * 1000)
        self._cooldown_ms = int(cooldown_s * 1000)
        self._allow = client.register_script(_ALLOW)
        self._failed = client.register_script(_FAILED)
        # Until this monotonic time the circuit is taken to be closed without asking Redis:
        # one round trip per request saved, at the price of noticing another worker's trip
        # up to a second late.
        self._closed_until = 0.0
        self._closed_for_s = min(1.0, cooldown_s)
        # Which thread holds the half-open probe: its own answer decides, not another thread's.
        self._probe = threading.local()
        self._last_reset = 0.0
        self._reset_every_s = reset_every_s

    def _probing(self) -> bool:
        return bool(getattr(self._probe, "active", False))

    @property
    def enabled(self) -> bool:
        return self._threshold > 0

    def before_request(self) -> None:
        """Raise :class:`ConnectError` (nothing sent) while the circuit is open."""
        if not self.enabled or time.monotonic() < self._closed_until:
            return
        verdict = self._allow(keys=_KEYS, args=[self._cooldown_ms])
        if not verdict:
            raise ConnectError("circuit open: the API failed repeatedly; request not sent")
        if verdict == 2:
            self._probe.active = True
        else:
            self._closed_until = time.monotonic() + self._closed_for_s

    def record(self, ok: bool) -> None:
        """Report how a request went; only transport failures should be reported as not ok."""
        if not self.enabled:
            return
        if ok:
            # An answer resets the failure count (the circuit opens on failures in a row, not
            # on a steady 20% of faults), at most ten times a second per process: one round trip
            # per request would double the breaker's cost for nothing.
            if not self._probing():
                if time.monotonic() - self._last_reset >= self._reset_every_s:
                    self._last_reset = time.monotonic()
                    self._redis.delete(_KEYS[0])
                return
            self._probe.active = False
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(_KEYS[1], _KEYS[2], _KEYS[3])
                pipe.delete(_KEYS[0])
                reopened, _ = pipe.execute()
            if reopened:
                log.info("circuit closed: the API answered again")
            return
        self._closed_until = 0.0
        self._probe.active = False
        if self._failed(keys=_KEYS, args=[self._threshold, self._window_ms, self._cooldown_ms]):
            log.warning(
                "circuit open: API failures reached %d; requests pause for %.1f s",
                self._threshold,
                self._cooldown_ms / 1000,
            )
