"""Verifications: one person's number verified across resends, shared by every worker.

One hash per verification (``callpass:ver:<verification_id>``): the number's digest and
prefix, how many calls it had and when the last was admitted, its state (``open`` until a
correct code ends it: ``converted``), the code attempts used (:mod:`worker.pipeline.pins`
counts them and keeps the live calls' pin digests here too), and ``req:<request_id>`` for
each request admitted into it.

A resend is a new request of the same verification, admitted here before it dials: refused
within the cooldown (growing per resend) and past the cap of calls. Admission is counted once
per request id, so a redelivered start is admitted again instead of refused as a resend.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import redis

from worker.pipeline.store import now

__all__ = [
    "STATE_CONVERTED",
    "STATE_OPEN",
    "Decision",
    "Verdict",
    "Verifications",
    "verification_key",
]

KEY_PREFIX = "callpass:ver:"
STATE_OPEN = "open"
STATE_CONVERTED = "converted"


def verification_key(verification_id: str) -> str:
    return KEY_PREFIX + verification_id


class Verdict(IntEnum):
    """What admitting a request into its verification found (the script's answer)."""

    ADMITTED = 0
    #: A new verification's id is in use (by another request): a resend must say so.
    ID_TAKEN = 1
    #: A resend names no verification (never started, or expired).
    UNKNOWN = 2
    #: A resend to another number than the verification's.
    OTHER_NUMBER = 3
    #: A resend of a verification a correct code ended.
    FINISHED = 4
    #: A resend past the cap of calls.
    CAP = 5
    #: A resend within the cooldown: ``retry_at`` says until when.
    COOLDOWN = 6
    #: A resend of a verification whose code attempts are used up: no code could pass.
    LOCKED = 7


# KEYS[1] verification; ARGV: request id, dn digest, prefix, now, resend (1/0), cap, ttl, open
# state, commit (1: record the call; 0: only look), code attempts, then the cooldowns.
# Returns {verdict, retry at ('' unless cooldown)}.
_ADMIT = """
local key, commit = KEYS[1], ARGV[9] == '1'
if redis.call('HEXISTS', key, 'req:' .. ARGV[1]) == 1 then return {0, ''} end
local exists = redis.call('EXISTS', key) == 1
if ARGV[5] == '0' then
  if exists then return {1, ''} end
  if commit then
    redis.call('HSET', key, 'dn_digest', ARGV[2], 'prefix', ARGV[3], 'calls', 1,
               'last_at', ARGV[4], 'state', ARGV[8], 'attempts', 0, 'req:' .. ARGV[1], 1)
    redis.call('EXPIRE', key, ARGV[7])
  end
  return {0, ''}
end
if not exists then return {2, ''} end
if redis.call('HGET', key, 'dn_digest') ~= ARGV[2] then return {3, ''} end
if redis.call('HGET', key, 'state') ~= ARGV[8] then return {4, ''} end
if tonumber(redis.call('HGET', key, 'attempts') or '0') >= tonumber(ARGV[10]) then
  return {7, ''}
end
local calls = tonumber(redis.call('HGET', key, 'calls'))
if calls >= tonumber(ARGV[6]) then return {5, ''} end
local cooldown = tonumber(ARGV[10 + math.min(calls, #ARGV - 10)])
local allowed_at = tonumber(redis.call('HGET', key, 'last_at')) + cooldown
if tonumber(ARGV[4]) < allowed_at then return {6, tostring(allowed_at)} end
if commit then
  redis.call('HSET', key, 'calls', calls + 1, 'last_at', ARGV[4], 'req:' .. ARGV[1], 1)
  redis.call('EXPIRE', key, ARGV[7])
end
return {0, ''}
"""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    #: COOLDOWN only: when the next call of the verification may be asked for (epoch s).
    retry_at: float | None = None


class Verifications:
    """Admits requests into their verifications; the rules every worker applies the same."""

    def __init__(
        self,
        client: redis.Redis,
        cooldowns_s: tuple[float, ...],
        max_calls: int,
        ttl_s: int,
        max_attempts: int = 3,
    ) -> None:
        if not cooldowns_s:
            raise ValueError("cooldowns_s must list one cooldown at least")
        self.cooldowns_s = cooldowns_s
        self.max_calls = max_calls
        self._max_attempts = max_attempts
        self._ttl_s = ttl_s
        self._admit = client.register_script(_ADMIT)

    def admit(
        self,
        verification_id: str,
        request_id: str,
        dn_digest: str,
        prefix: str,
        resend: bool,
        commit: bool = True,
    ) -> Decision:
        """Admit the request into its verification (a new one, or a resend of it); with
        ``commit`` false, only say whether it would be (nothing is recorded)."""
        verdict, retry_at = cast(
            list[bytes | int],
            self._admit(
                keys=[verification_key(verification_id)],
                args=[
                    request_id,
                    dn_digest,
                    prefix,
                    repr(now()),
                    1 if resend else 0,
                    self.max_calls,
                    self._ttl_s,
                    STATE_OPEN,
                    1 if commit else 0,
                    self._max_attempts,
                    *(repr(float(c)) for c in self.cooldowns_s),
                ],
            ),
        )
        raw_retry = retry_at.decode() if isinstance(retry_at, bytes) else str(retry_at)
        return Decision(Verdict(int(verdict)), float(raw_retry) if raw_retry else None)
