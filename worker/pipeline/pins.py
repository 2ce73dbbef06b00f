"""Checking the code a user typed, without keeping the pin.

The pin is stored only as an HMAC-SHA256 under a server-side key, for ``ttl_s`` seconds (10
minutes by default), and compared in constant time. Attempts are capped (3 by default): the
caller-ID pool gives only 853 possible pins, so unlimited guesses would open any account. A
correct code is consumed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import cast

import redis

from worker.contracts.verify import CodeCheck, CodeReason

__all__ = ["PinVault", "derive_key"]

_CODE_RE = re.compile(r"[0-9]{4,6}", re.ASCII)

# KEYS[1] pin hash. Counts the attempt; returns {attempts, digest} or {-1} when there is none.
_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {n, redis.call('HGET', KEYS[1], 'digest')}
"""

# KEYS[1] pin hash; ARGV[1] digest that matched. Consumes it; 0 if someone else did first.
_CONSUME = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class PinVault:
    PIN = "callpass:pin:"
    SEEN = "callpass:pinseen:"

    def __init__(
        self, client: redis.Redis, key: bytes, ttl_s: int, max_attempts: int, seen_ttl_s: int
    ) -> None:
        self._redis = client
        self._key = key
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        self._seen_ttl_s = seen_ttl_s
        self._attempt = client.register_script(_ATTEMPT)
        self._consume = client.register_script(_CONSUME)

    def _digest(self, request_id: str, pin: str) -> str:
        # The request id is in the MAC too: a digest copied to another request is useless.
        return hmac.new(self._key, f"{request_id}\x00{pin}".encode(), hashlib.sha256).hexdigest()

    def store(self, request_id: str, pin: str) -> bool:
        with self._redis.pipeline() as pipe:
            pipe.delete(self.PIN + request_id)
            pipe.hset(
                self.PIN + request_id,
                mapping={"digest": self._digest(request_id, pin), "attempts": 0},
            )
            pipe.expire(self.PIN + request_id, self._ttl_s)
            pipe.set(self.SEEN + request_id, "1", ex=self._seen_ttl_s)
            pipe.execute()
        return True

    def verify(self, request_id: str, code: object) -> CodeCheck:
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            return self._answer(False, CodeReason.MALFORMED_CODE, self._left(request_id))
        attempts, digest = cast(list[object], self._attempt(keys=[self.PIN + request_id]))
        if int(cast(int, attempts)) < 0:
            known = self._redis.exists(self.SEEN + request_id)
            return self._answer(
                False, CodeReason.EXPIRED if known else CodeReason.UNKNOWN_REQUEST, 0
            )
        used = int(cast(int, attempts))
        if used > self._max_attempts:
            return self._answer(False, CodeReason.TOO_MANY_ATTEMPTS, 0)
        stored = digest.decode() if isinstance(digest, bytes) else str(digest)
        if hmac.compare_digest(self._digest(request_id, code), stored):
            if self._consume(keys=[self.PIN + request_id], args=[stored]):
                return self._answer(True, CodeReason.OK, self._max_attempts - used)
            return self._answer(False, CodeReason.EXPIRED, 0)  # consumed by a concurrent check
        return self._answer(False, CodeReason.MISMATCH, self._max_attempts - used)

    def _left(self, request_id: str) -> int:
        raw = self._redis.hget(self.PIN + request_id, "attempts")
        return max(0, self._max_attempts - int(cast(bytes, raw))) if raw is not None else 0

    @staticmethod
    def _answer(valid: bool, reason: CodeReason, attempts_left: int) -> CodeCheck:
        return CodeCheck(valid=valid, reason=reason, attempts_left=max(0, attempts_left))


def derive_key(secret: str) -> bytes:
    """The HMAC key, derived from a deployment secret every worker shares."""
    return hmac.new(secret.encode(), b"callpass pin digest key v1", hashlib.sha256).digest()
