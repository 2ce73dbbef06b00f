"""Polls waiting for their time, in Redis: the sorted set ``callpass:poll:due:<queue>``.

Each member is one poll of one chain (``<token>:<request_id>``), scored by when it is due. A
runner in every worker (:mod:`worker.process.poll_runner`) takes due members under a lease: it
pushes their score to the lease's end, runs the poll, and removes the member. A runner that
dies mid-poll leaves the member to fall due again when its lease ends, so a poll is never lost
and never waits for a broker's visibility time-out. Nothing of a poll lives in a worker's memory,
and a due time is kept to the millisecond on any broker (RabbitMQ's delayed delivery rounds to
whole seconds).

A poll that carries the chain on does it in one script (:meth:`DuePolls.hand_on`): the next
poll added, the record's token moved to it, its own member removed, at once.

A member taken twice (a lease that ran out mid-poll) does no harm: the chain's token lets one
poll carry the chain on and drops the other (see :mod:`worker.pipeline.poller`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, cast

import redis

from worker.pipeline.store import INFLIGHT_KEY, RequestStore

__all__ = ["DuePoll", "DuePolls", "TakenPolls", "due_polls_key"]


def due_polls_key(queue: str) -> str:
    """The due set of the calls started on ``queue``: only its workers run them (another
    deployment on this Redis may reach another API)."""
    return f"callpass:poll:due:{queue}"


# KEYS[1] the due set, then the lists of messages to yield to (start queues on this Redis);
# ARGV: now, lease until, limit, the latest due time taken while yielding, yield (1: the caller
# must yield whatever the lists hold). Returns {next due score or '', members taken...}.
_TAKE = """
local cutoff = ARGV[1]
local yielding = ARGV[5] == '1'
for i = 2, #KEYS do
  if yielding then break end
  yielding = redis.call('LLEN', KEYS[i]) > 0
end
if yielding then cutoff = ARGV[4] end
local taken = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, ARGV[3])
for _, member in ipairs(taken) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local result = {first[2] or ''}
-- Polls due now but held back: the caller looks again soon. Nothing due: it sleeps until the
-- first one is, as when no start waits.
local first_due = tonumber(first[2] or '')
if yielding and first_due ~= nil and first_due <= tonumber(ARGV[1]) then
  result[1] = 'yielding'
end
for _, member in ipairs(taken) do result[#result + 1] = member end
return result
"""


# KEYS[1] record, KEYS[2] in-flight set, KEYS[3] the due set; ARGV: the poll's token, the next
# poll's, progress-by, request id, the next poll's due time, the poll's member, the next poll's
# member. The poll is spent either way: its member goes. Returns 1, or 0 (nothing added) when
# the chain is no longer the poll's or the request was settled meanwhile (another poll, the
# sweeper).
_HAND_ON = """
redis.call('ZREM', KEYS[3], ARGV[6])
if (redis.call('HGET', KEYS[1], 'poll_token') or '') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'outcome') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'poll_token', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[7])
return 1
"""


class DuePoll(NamedTuple):
    request_id: str
    token: str

    @property
    def member(self) -> str:
        # Tokens are ours (hex); a request id may hold any character, so it goes last.
        return f"{self.token}:{self.request_id}"

    @classmethod
    def parse(cls, member: str) -> DuePoll:
        token, _, request_id = member.partition(":")
        return cls(request_id, token)


class TakenPolls(NamedTuple):
    polls: list[DuePoll]
    #: When the earliest poll left in the set is due (epoch s); ``None``: the set is empty.
    next_due: float | None
    #: Starts are waiting: due polls were left for later.
    yielding: bool


class DuePolls:
    """The due set, on the records Redis."""

    def __init__(self, client: redis.Redis, key: str, yield_to: tuple[str, ...] = ()) -> None:
        """``yield_to``: lists on this Redis (start and code-check queues) whose messages go
        before due polls."""
        self._redis = client
        self.key = key
        self._yield_to = yield_to
        self._take = client.register_script(_TAKE)
        self._hand_on = client.register_script(_HAND_ON)
        self._listeners: list[Callable[[float], None]] = []

    def on_add(self, listener: Callable[[float], None]) -> None:
        """Call ``listener`` with the due time of every poll added through this object."""
        self._listeners.append(listener)

    def add(self, poll: DuePoll, due_at: float) -> None:
        self._redis.zadd(self.key, {poll.member: due_at})
        self._announce(due_at)

    def _announce(self, due_at: float) -> None:
        for listener in self._listeners:
            listener(due_at)

    def hand_on(self, poll: DuePoll, next_token: str, due_at: float, progress_by: float) -> bool:
        """``poll`` ran and the chain goes on: its next poll (``next_token``, due at ``due_at``)
        takes the chain over and ``poll`` leaves the set, in one round trip; the request must
        show progress by ``progress_by``. ``False``: the chain was not ``poll``'s, or the
        request is settled (``poll`` only left the set)."""
        request_id = poll.request_id
        handed_on = bool(
            self._hand_on(
                keys=[RequestStore.key(request_id), INFLIGHT_KEY, self.key],
                args=[
                    *(poll.token, next_token, repr(progress_by), request_id, repr(due_at)),
                    *(poll.member, DuePoll(request_id, next_token).member),
                ],
            )
        )
        if handed_on:
            self._announce(due_at)
        return handed_on

    def take(
        self,
        at: float,
        lease_until: float,
        limit: int,
        *,
        yield_until: float,
        must_yield: bool = False,
    ) -> TakenPolls:
        """Lease up to ``limit`` polls due by ``at``; while starts wait (in ``yield_to``, or
        ``must_yield``), only those due by ``yield_until`` (long overdue)."""
        raw = cast(
            list[bytes],
            self._take(
                keys=[self.key, *self._yield_to],
                args=[repr(at), repr(lease_until), limit, repr(yield_until), int(must_yield)],
            ),
        )
        head = raw[0].decode()
        polls = [DuePoll.parse(m.decode()) for m in raw[1:]]
        if head == "yielding":
            return TakenPolls(polls, None, True)
        return TakenPolls(polls, float(head) if head else None, False)

    def done(self, poll: DuePoll) -> None:
        """The poll ran and did not hand the chain on: it leaves the set."""
        self._redis.zrem(self.key, poll.member)

    def count(self) -> int:
        """Polls waiting or running, for metrics and tests."""
        return int(self._redis.zcard(self.key))
