"""Request records in Redis: the memory that makes a call happen at most once.

One hash per request id (``callpass:req:<request_id>``) holds the request's state machine
(:class:`~worker.pipeline.states.RequestState`; the scripts receive its values as arguments):

* ``claim`` creates the record atomically; a redelivered or repeated ``start_call`` finds it
  and resumes instead of dialing again.
* Only the delivery that moves ``claimed → dialing`` (compare-and-set) sends a start request.
  A record left in ``dialing`` by a killed worker means the API may have placed the call: it
  settles as ``unknown`` and is never dialed again.
* The outcome is written once (``HSETNX``); whoever settles later reads the first one back.
* ``poll_token`` names the one live chain of polls: a poll whose token is
  not the record's drops itself, so duplicates die out instead of multiplying.

A set ``callpass:req:<request_id>:tasks`` lists the task ids whose result must receive the
outcome (a producer may enqueue the same request id twice).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, cast

import redis

from callpass_producer.contracts.outcome import OutcomeDocument
from worker.pipeline.document import parse_outcome
from worker.pipeline.states import RequestState
from worker.sane_values import sane_float

__all__ = ["INFLIGHT_KEY", "RequestRecord", "RequestStore", "Settled", "dn_digest", "now"]

KEY_PREFIX = "callpass:req:"

# KEYS[1] record, KEYS[2] task set, KEYS[3] in-flight set; ARGV: ttl, task_id, dn_digest,
# request id, progress-by (for a new record), the call's place in its verification ('' for
# none), then field/value pairs.
# Returns {1 created | 0 existing | -1 another number | -2 another call, fields}.
_CLAIM = """
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local fields = {'dn_digest', ARGV[3], 'call_of', ARGV[6]}
  for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  created = 1
elseif redis.call('HGET', KEYS[1], 'dn_digest') ~= ARGV[3] then
  return {-1, {}}
elseif (redis.call('HGET', KEYS[1], 'call_of') or '') ~= ARGV[6] then
  return {-2, {}}
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {created, redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] record; ARGV: field, expected, new value, writer token ('' for none), then extra
# field/value pairs. A writer that retries after a lost reply passes the same token: if its
# first run did land, the retry says so (1) instead of "changed meanwhile" (0).
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then
  if ARGV[4] ~= '' and current == ARGV[3]
     and redis.call('HGET', KEYS[1], 'cas_token') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'cas_token', ARGV[4]) end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS[1] record, KEYS[2] in-flight set, KEYS[3] task set; ARGV: outcome JSON, key prefix, when
# the sweeper should look again ('' for never), the settled state. Returns {the outcome that
# stands, the task ids to publish it to...}.
_SETTLE = """
local id = string.sub(KEYS[1], string.len(ARGV[2]) + 1)
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], id)
else
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], id)
end
local standing = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1])
  redis.call('HSET', KEYS[1], 'state', ARGV[4])
  standing = redis.call('HGET', KEYS[1], 'outcome')
end
local result = redis.call('SMEMBERS', KEYS[3])
table.insert(result, 1, standing)
return result
"""

# KEYS[1] record; ARGV[1] the poll's token. Counts the status request the poll is about to
# make only when it will make one (live chain, no outcome). Returns the record's fields.
_BEGIN_POLL = """
if redis.call('HGET', KEYS[1], 'poll_token') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  redis.call('HINCRBY', KEYS[1], 'status_requests', 1)
end
return redis.call('HGETALL', KEYS[1])
"""

#: Sorted set of unsettled request ids, scored by when they must next show progress.
INFLIGHT_KEY = "callpass:inflight"


def dn_digest(dn: str) -> str:
    """A stable fingerprint of the number, so the record never holds it in clear."""
    return hashlib.sha256(dn.encode()).hexdigest()[:32]


class Settled(NamedTuple):
    #: The outcome that stands (maybe an earlier settle's).
    outcome: OutcomeDocument
    #: Every task id subscribed to the request, read in the same step.
    task_ids: list[str]


@dataclass(frozen=True)
class RequestRecord:
    """A snapshot of one request's hash."""

    request_id: str
    fields: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    def number(self, name: str) -> float | None:
        """The field as a finite number (``None``: missing or not one; never raises)."""
        return sane_float(self.fields.get(name)) if self.fields.get(name) else None

    def integer(self, name: str, default: int) -> int:
        """The field as an int (``default``: missing or not one; never raises)."""
        value = self.number(name)
        return int(value) if value is not None and value.is_integer() else default

    def seconds_dialing(self) -> float:
        """Seconds since a dialer took the request (a record without that time: very long)."""
        return now() - (self.number("dialing_at") or 0)

    def seconds_since_placed(self) -> float:
        """Seconds since the call was placed (0 for a record without a placement time)."""
        placed_at = self.number("placed_at")
        return now() - placed_at if placed_at is not None else 0.0

    @property
    def state(self) -> str:
        return self.get("state")

    @property
    def task_id(self) -> str:
        """The task id of the delivery that created the record (where PLACED info is read)."""
        return self.get("task_id")

    @property
    def outcome(self) -> OutcomeDocument | None:
        raw = self.fields.get("outcome")
        return parse_outcome(json.loads(raw)) if raw else None


class RequestStore:
    """Atomic operations on request records."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._cas = client.register_script(_COMPARE_AND_SET)
        self._settle = client.register_script(_SETTLE)
        self._begin_poll = client.register_script(_BEGIN_POLL)

    @staticmethod
    def key(request_id: str) -> str:
        return KEY_PREFIX + request_id

    @classmethod
    def _tasks_key(cls, request_id: str) -> str:
        return cls.key(request_id) + ":tasks"

    def claim(
        self,
        request_id: str,
        task_id: str,
        digest: str,
        initial: dict[str, str],
        progress_by: float,
        call_of: str = "",
    ) -> tuple[int, RequestRecord]:
        """Create the record (``initial`` fields) unless it exists, and subscribe ``task_id``;
        a new record must show progress by ``progress_by`` (see :meth:`expect_progress`).
        ``call_of``: the call's place in its verification (a first call or a resend of it).

        Returns 1 (created), 0 (it existed), -1 or -2 (it exists for another number, or
        another call): then nothing is subscribed, so its pin never reaches this task.
        """
        pairs: list[str] = ["state", RequestState.CLAIMED]
        for name, value in initial.items():
            pairs += [name, value]
        key = self.key(request_id)
        status, flat = self._claim(
            keys=[key, self._tasks_key(request_id), INFLIGHT_KEY],
            args=[self._ttl_s, task_id, digest, request_id, repr(progress_by), call_of, *pairs],
        )
        return int(status), RequestRecord(request_id, _pairs_to_dict(flat))

    def load(self, request_id: str) -> RequestRecord | None:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(self.key(request_id)))
        if not raw:
            return None
        return RequestRecord(request_id, {k.decode(): v.decode() for k, v in raw.items()})

    def begin_poll(self, request_id: str, token: str) -> RequestRecord | None:
        """Load the record for a poll of chain ``token``, counting its status request if
        the chain is live (one round trip)."""
        flat = cast(list[bytes], self._begin_poll(keys=[self.key(request_id)], args=[token]))
        return RequestRecord(request_id, _pairs_to_dict(flat)) if flat else None

    def task_ids(self, request_id: str) -> list[str]:
        return _task_ids(cast(set[bytes], self._redis.smembers(self._tasks_key(request_id))))

    def compare_and_set(
        self,
        request_id: str,
        name: str,
        expected: str,
        new: str,
        *,
        writer_token: str = "",
        **extra: str,
    ) -> bool:
        """Set ``name`` to ``new`` (and ``extra`` fields) only if it still holds ``expected``.

        Retrying after a lost reply is safe only with a ``writer_token`` (the same on every
        try): a landed first try then answers ``True`` again, not ``False``."""
        args: list[str] = [name, expected, new, writer_token]
        for field_name, value in extra.items():
            args += [field_name, value]
        return bool(self._cas(keys=[self.key(request_id)], args=args))

    def expect_progress(self, request_id: str, by: float) -> None:
        """The request must show progress by ``by`` (epoch s), or the sweeper looks at it."""
        self._redis.zadd(INFLIGHT_KEY, {request_id: by})

    def overdue(self, at: float, limit: int = 200) -> list[str]:
        """Request ids whose expected progress is older than ``at``."""
        ids = cast(list[bytes], self._redis.zrangebyscore(INFLIGHT_KEY, "-inf", at, 0, limit))
        return [i.decode() for i in ids]

    def forget(self, request_id: str) -> None:
        self._redis.zrem(INFLIGHT_KEY, request_id)

    def try_lock(self, name: str, ttl_s: float) -> bool:
        """A short lease so that one process at a time does ``name``."""
        return bool(self._redis.set(f"callpass:lock:{name}", "1", nx=True, px=int(ttl_s * 1000)))

    def settle(
        self, request_id: str, outcome: OutcomeDocument, recheck_at: float | None = None
    ) -> Settled:
        """Write the outcome once; return the one that stands (maybe an earlier one), with the
        task ids it goes to.

        The record keeps the outcome without the pin: the pin lives only in what the producer
        reads (see :class:`~worker.pipeline.publisher.Publisher`). With ``recheck_at`` the
        request stays in-flight until :meth:`forget`, so the sweeper finishes publishing after
        a crash.
        """
        raw = cast(
            list[bytes],
            self._settle(
                keys=[self.key(request_id), INFLIGHT_KEY, self._tasks_key(request_id)],
                args=[
                    json.dumps({**outcome.model_dump(mode="json"), "pin": None}),
                    KEY_PREFIX,
                    "" if recheck_at is None else repr(recheck_at),
                    RequestState.SETTLED,
                ],
            ),
        )
        standing = parse_outcome(json.loads(raw[0].decode()))
        return Settled(standing, _task_ids(raw[1:]))


def _task_ids(members: Iterable[bytes]) -> list[str]:
    return sorted(m.decode() for m in members)


def _pairs_to_dict(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def now() -> float:
    """Wall-clock seconds; records are shared between hosts, so monotonic time will not do."""
    return time.time()
