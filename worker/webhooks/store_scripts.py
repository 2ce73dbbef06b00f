"""The Lua scripts of the webhook store (:mod:`worker.webhooks.store`), one per transition.

Each runs atomically in Redis, so two workers taking, beginning or finishing the same event
never both succeed. KEYS and ARGV are listed above each script, in the order the store
passes them.
"""

from __future__ import annotations

__all__ = ["ADD", "BEGIN", "EXTEND", "FINISH", "REPLAY", "TAKE_DUE"]

# KEYS[1] event, KEYS[2] due; ARGV: ttl, due_at, event id, then field/value pairs.
# Returns 1 if created, 0 if the id is known (pending, delivered or dead).
ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempt', 0)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS[1] due; ARGV: now, lease_until, limit, event prefix, ttl. Returns {id, attempt, ...}.
TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local taken = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  if redis.call('HGET', key, 'state') == 'pending' then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('EXPIRE', key, ARGV[5])
    table.insert(taken, id)
    table.insert(taken, redis.call('HGET', key, 'attempt'))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return taken
"""

# Push a due event's score to ARGV[n] unless it is later already (no ZADD GT before 6.2).
_RENEW_LEASE = """
local function renew(due, id, lease_until)
  local score = redis.call('ZSCORE', due, id)
  if score and tonumber(score) < tonumber(lease_until) then
    redis.call('ZADD', due, lease_until, id)
  end
end
"""

# KEYS[1] event, KEYS[2] lock, KEYS[3] due; ARGV: attempt, lock ms, owner, lease until, id.
# The event's fields, or {}.
BEGIN = (
    _RENEW_LEASE
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return {} end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return {} end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return {} end
renew(KEYS[3], ARGV[5], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS[1] event, KEYS[2] lock, KEYS[3] due; ARGV: attempt, lease until, id. 1 if the attempt
# is still to be made and nobody is making it (its lease renewed), else 0.
EXTEND = (
    _RENEW_LEASE
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
renew(KEYS[3], ARGV[3], ARGV[2])
return 1
"""
)

# KEYS[1] event, KEYS[2] due, KEYS[3] dead, KEYS[4] lock; ARGV: attempt, state (pending |
# delivered | dead), score (next due or dead-at), ttl, event id, lock owner, then field/value
# pairs. Only the lock's owner finishes an attempt (another sender's lock stays).
FINISH = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'attempt', tonumber(ARGV[1]) + 1, 'state', ARGV[2])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
-- A delivered event stays only as a marker: its body (maybe a pin) goes.
if ARGV[2] == 'delivered' then redis.call('HDEL', KEYS[1], 'body') end
if ARGV[2] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
if ARGV[2] == 'dead' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5]) end
redis.call('DEL', KEYS[4])
return 1
"""

# KEYS[1] event, KEYS[2] due, KEYS[3] dead; ARGV: now, ttl, event id. 1 if replayed.
REPLAY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempt', 0, 'replayed_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
