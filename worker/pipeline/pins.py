"""Checking the code a user typed against the live calls of a verification, keeping no pin.

Each placed call's pin is kept only as an HMAC-SHA256 under a server-side key, for ``ttl_s``
seconds (10 minutes by default), in its verification's hash (:mod:`worker.pipeline.
verifications`); the latest ``live_calls`` calls' pins all check, since a user may read the
caller ID of an earlier call. Attempts are capped per *verification* (3 by default), not per
call: the caller-ID pool gives only 853 possible pins, and a resend must not buy more guesses.
A correct code ends the verification. A request without a verification is a verification of
one, under its request id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import cast

import redis

from callpass_producer.contracts.verify import CodeCheck, CodeReason
from worker.ops import metrics
from worker.pipeline.store import RequestRecord, now
from worker.pipeline.verifications import STATE_CONVERTED, STATE_OPEN, verification_key

__all__ = ["LEGACY_PIN_PREFIX", "PinVault", "VerificationCall", "derive_key"]

log = logging.getLogger(__name__)

_CODE_RE = re.compile(r"[0-9]{4,6}", re.ASCII)

#: Where an earlier version kept one request's pin (``{digest, attempts}``): still checked,
#: so a code of a call placed before an upgrade is not refused during it.
LEGACY_PIN_PREFIX = "callpass:pin:"

# KEYS[1] verification; ARGV: request id, digest, expires at, live calls, ttl, dn digest,
# prefix, now, open and converted states. Creates a verification of one for a request that
# has none. Returns 1 when this is the verification's first pin (it started), 0 otherwise,
# -1 when the verification is another's (a request id that is some verification's id).
_STORE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'dn_digest', ARGV[6], 'prefix', ARGV[7], 'calls', 1,
             'last_at', ARGV[8], 'state', ARGV[9], 'attempts', 0, 'req:' .. ARGV[1], 1)
elseif redis.call('HEXISTS', KEYS[1], 'req:' .. ARGV[1]) == 0 then
  return -1
end
if redis.call('HGET', KEYS[1], 'state') == ARGV[10] then return 0 end
local pins = cjson.decode(redis.call('HGET', KEYS[1], 'pins') or '[]')
local kept = {}
for _, pin in ipairs(pins) do
  if pin[1] ~= ARGV[1] then kept[#kept + 1] = pin end
end
kept[#kept + 1] = {ARGV[1], ARGV[2], tonumber(ARGV[3])}
while #kept > tonumber(ARGV[4]) do table.remove(kept, 1) end
redis.call('HSET', KEYS[1], 'pins', cjson.encode(kept))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return redis.call('HSETNX', KEYS[1], 'started_at', ARGV[8])
"""

# KEYS[1] verification, KEYS[2] legacy pin; ARGV: now, open state, the id. Counts the attempt when a
# live pin can match. Returns {attempts, request id, digest, ...}; {-1} unknown, {-2} expired
# or ended, {-3} a verification whose call is not placed yet.
_CHECK = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
  local n = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  return {n, ARGV[3], redis.call('HGET', KEYS[2], 'digest')}
end
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[2] then return {-2} end
local raw = redis.call('HGET', KEYS[1], 'pins')
if not raw then return {-3} end
local live = {}
for _, pin in ipairs(cjson.decode(raw)) do
  if pin[3] > tonumber(ARGV[1]) then
    live[#live + 1] = pin[1]
    live[#live + 1] = pin[2]
  end
end
if #live == 0 then return {-2} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
table.insert(live, 1, n)
return live
"""

# KEYS[1] verification, KEYS[2] legacy pin; ARGV: the digest that matched, open and converted
# states. Ends the verification; returns its prefix, or false if a concurrent check did first.
_CONSUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('HGET', KEYS[2], 'digest') ~= ARGV[1] then return false end
  redis.call('DEL', KEYS[2])
  return ''
end
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[2] then return false end
local raw = redis.call('HGET', KEYS[1], 'pins') or '[]'
for _, pin in ipairs(cjson.decode(raw)) do
  if pin[2] == ARGV[1] then
    redis.call('HSET', KEYS[1], 'state', ARGV[3])
    redis.call('HDEL', KEYS[1], 'pins')
    return redis.call('HGET', KEYS[1], 'prefix') or ''
  end
end
return false
"""


@dataclass(frozen=True)
class VerificationCall:
    """A placed call, as its verification keeps it: no number, no pin in clear."""

    verification_id: str
    request_id: str
    dn_digest: str
    #: The number's first digits, for the conversion metrics (never the whole number).
    prefix: str

    @classmethod
    def of(cls, record: RequestRecord) -> VerificationCall:
        """The request's call (one without a verification: a verification of one)."""
        return cls(
            verification_id=record.get("verification_id") or record.request_id,
            request_id=record.request_id,
            dn_digest=record.get("dn_digest"),
            prefix=record.get("dn_prefix"),
        )


class PinVault:
    def __init__(
        self,
        client: redis.Redis,
        key: bytes,
        ttl_s: int,
        max_attempts: int,
        verification_ttl_s: int,
        live_calls: int = 2,
    ) -> None:
        self._redis = client
        self._key = key
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        self._verification_ttl_s = verification_ttl_s
        self._live_calls = live_calls
        self._store = client.register_script(_STORE)
        self._check = client.register_script(_CHECK)
        self._consume = client.register_script(_CONSUME)

    def _digest(self, request_id: str, pin: str) -> str:
        # The request id is in the MAC too: a digest copied to another request is useless.
        return hmac.new(self._key, f"{request_id}\x00{pin}".encode(), hashlib.sha256).hexdigest()

    def store(self, call: VerificationCall, pin: str) -> bool:
        """Keep the call's pin (as a digest) among its verification's live ones."""
        at = now()
        started = self._store(
            keys=[verification_key(call.verification_id)],
            args=[
                call.request_id,
                self._digest(call.request_id, pin),
                repr(at + self._ttl_s),
                self._live_calls,
                self._verification_ttl_s,
                call.dn_digest,
                call.prefix,
                repr(at),
                STATE_OPEN,
                STATE_CONVERTED,
            ],
        )
        if started == -1:
            # Its code must never pass for that verification (another number's, maybe).
            log.warning(
                "request %s: its verification id names another verification; its code "
                "cannot be checked",
                call.request_id,
            )
        elif started:
            metrics.verification_started(call.prefix)
        return True

    def verify(self, verification_id: str, code: object) -> CodeCheck:
        """Check ``code`` against the verification's live pins (a request id names the
        verification of one it started, when it gave none)."""
        check = self._verify(verification_id, code)
        metrics.code_checked(check.reason)
        return check

    def _verify(self, verification_id: str, code: object) -> CodeCheck:
        keys = [verification_key(verification_id), LEGACY_PIN_PREFIX + verification_id]
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            return _answer(False, CodeReason.MALFORMED_CODE, self._left(keys[0]))
        found = cast(
            list[object], self._check(keys=keys, args=[repr(now()), STATE_OPEN, verification_id])
        )
        used = int(cast(int, found[0]))
        if used < 0:
            reason = CodeReason.EXPIRED if used == -2 else CodeReason.UNKNOWN_REQUEST
            return _answer(False, reason, 0)
        if used > self._max_attempts:
            return _answer(False, CodeReason.TOO_MANY_ATTEMPTS, 0)
        matched = self._matching_digest(code, [_text(v) for v in found[1:]])
        if matched is None:
            return _answer(False, CodeReason.MISMATCH, self._max_attempts - used)
        prefix = self._consume(keys=keys, args=[matched, STATE_OPEN, STATE_CONVERTED])
        if prefix is None:  # consumed by a concurrent check
            return _answer(False, CodeReason.EXPIRED, 0)
        metrics.verification_converted(_text(prefix))
        return _answer(True, CodeReason.OK, self._max_attempts - used)

    def _matching_digest(self, code: str, pairs: list[str]) -> str | None:
        """The stored digest ``code`` matches, comparing with every live pin (no early exit)."""
        matched = None
        for request_id, stored in zip(pairs[::2], pairs[1::2], strict=True):
            if hmac.compare_digest(self._digest(request_id, code), stored):
                matched = stored
        return matched

    def _left(self, key: str) -> int:
        raw = self._redis.hget(key, "attempts")
        return max(0, self._max_attempts - int(cast(bytes, raw))) if raw is not None else 0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _answer(valid: bool, reason: CodeReason, attempts_left: int) -> CodeCheck:
    return CodeCheck(valid=valid, reason=reason, attempts_left=max(0, attempts_left))


def derive_key(secret: str, label: bytes = b"callpass pin digest key v1") -> bytes:
    """An HMAC key for ``label``'s use (pins by default), derived from a deployment secret
    every worker shares."""
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()
