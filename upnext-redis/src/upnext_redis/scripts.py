"""The Lua scripts behind every change to a queue's jobs, each atomic on the server.

Dead-letter admin has its own in dlq_scripts.py, the state store in
state_scripts.py; all three are loaded together on connect.

KEYS is always a run of queue key groups (keys.py order, `GROUP_SIZE` keys
each); ``k(q, n)`` is key `n` of group `q`. Times are integer milliseconds
from Redis ``TIME``, never the client's clock. A lease is live while its
deadline is >= now. Results of scripts that hand out or settle are flat
arrays so one reply carries a whole batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from upnext_redis.keys import GROUP_SIZE

__all__ = [
    "CANCEL",
    "ENQUEUE",
    "EXTEND",
    "PURGE",
    "RECEIVE",
    "SCRIPTS",
    "SETTLE",
    "STATS",
    "Script",
    "queue_script",
]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua source and its SHA1, for EVALSHA with a load on NOSCRIPT."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_PRELUDE = f"""
local G = {GROUP_SIZE}
local function k(q, n) return KEYS[(q - 1) * G + n] end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function wake(q) redis.call('XADD', k(q, 8), 'MAXLEN', '1', '*', 'w', '1') end
local function place(q, id, delay_ms)
  if delay_ms > 0 then
    redis.call('ZADD', k(q, 2), now + delay_ms, id)
  else
    redis.call('ZREM', k(q, 2), id)
    redis.call('RPUSH', k(q, 1), id)
  end
end
"""


def queue_script(name: str, body: str) -> Script:
    """A script over queue key groups: `body` after the prelude (k, now, wake, place)."""
    return Script(name, _PRELUDE + body)


# ARGV: (queue index, id, body, delay ms, priority) per envelope. An id whose
# body is stored (queued, scheduled or held: not yet settled) is left as it is.
# A priority is stored only when not 0; every script that deletes a body
# deletes its priority too. Returns how many envelopes were new.
ENQUEUE = queue_script(
    "enqueue",
    """
local woke, added = {}, 0
for i = 1, #ARGV, 5 do
  local q, id = tonumber(ARGV[i]), ARGV[i + 1]
  if redis.call('HSETNX', k(q, 4), id, ARGV[i + 2]) == 1 then
    redis.call('HDEL', k(q, 5), id)
    if ARGV[i + 4] ~= '0' then redis.call('HSET', k(q, 12), id, ARGV[i + 4]) end
    place(q, id, tonumber(ARGV[i + 3]))
    woke[q] = true
    added = added + 1
  end
end
for q in pairs(woke) do wake(q) end
return added
""",
)

# ARGV: limit, lease ms, number of queues. Returns {now, next event ms or -1,
# then per queue: wake stream id, receipt, number of deliveries; then per
# delivery, queue by queue: id, body, hand-out count, priority}. One receipt per queue
# per call suffices: two hand-outs of one job never share a call.
RECEIVE = queue_script(
    "receive",
    """
local limit, lease, nq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local deadline = now + lease
local out, n = {}, 0
local header = {now, -1}
local function promote(q)
  local due = redis.call('ZRANGEBYSCORE', k(q, 2), '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', k(q, 2), unpack(due))
    redis.call('RPUSH', k(q, 1), unpack(due))
  end
  -- Stalled leases: ready again at the head, their hand-out count kept.
  local lost = redis.call('ZRANGEBYSCORE', k(q, 3), '-inf', '(' .. now, 'LIMIT', 0, 1000)
  if #lost > 0 then
    redis.call('ZREM', k(q, 3), unpack(lost))
    redis.call('HDEL', k(q, 6), unpack(lost))
    redis.call('LPUSH', k(q, 1), unpack(lost))
  end
end
local function take(q, tok)
  local head = redis.call('ZRANGE', k(q, 3), 0, 0, 'WITHSCORES')
  local taken, seen = 0, {}
  while n < limit do
    local ids = redis.call('LPOP', k(q, 1), math.min(limit - n, 1000))
    if not ids then break end
    local bodies = redis.call('HMGET', k(q, 4), unpack(ids))
    local held = redis.call('HMGET', k(q, 6), unpack(ids))
    local counts = redis.call('HMGET', k(q, 5), unpack(ids))
    local prios = redis.call('HMGET', k(q, 12), unpack(ids))
    local toks, cs, zs = {}, {}, {}
    for j, id in ipairs(ids) do
      -- Skip stale ids: a cancelled job, or a duplicate of a job held now.
      if bodies[j] and not held[j] and not seen[id] then
        seen[id] = true
        local c = (tonumber(counts[j]) or 0) + 1
        toks[#toks + 1] = id
        toks[#toks + 1] = tok
        cs[#cs + 1] = id
        cs[#cs + 1] = c
        zs[#zs + 1] = deadline
        zs[#zs + 1] = id
        out[#out + 1] = id
        out[#out + 1] = bodies[j]
        out[#out + 1] = c
        out[#out + 1] = tonumber(prios[j]) or 0
        n = n + 1
        taken = taken + 1
      end
    end
    if #toks > 0 then
      redis.call('HSET', k(q, 6), unpack(toks))
      redis.call('HSET', k(q, 5), unpack(cs))
      redis.call('ZADD', k(q, 3), unpack(zs))
    end
  end
  -- A lease earlier than any before: blocked receivers must shorten their wait.
  if taken > 0 and (#head == 0 or deadline < tonumber(head[2])) then wake(q) end
  return taken
end
for q = 1, nq do
  promote(q)
  local tok, taken = '', 0
  if n < limit and redis.call('EXISTS', k(q, 1)) == 1 then
    tok = tostring(redis.call('INCR', k(q, 7)))
    taken = take(q, tok)
  end
  header[#header + 1] = ''
  header[#header + 1] = tok
  header[#header + 1] = taken
end
if n == 0 then
  local nxt = -1
  for q = 1, nq do
    local d = redis.call('ZRANGE', k(q, 2), 0, 0, 'WITHSCORES')
    if #d > 0 and (nxt < 0 or tonumber(d[2]) < nxt) then nxt = tonumber(d[2]) end
    local l = redis.call('ZRANGE', k(q, 3), 0, 0, 'WITHSCORES')
    if #l > 0 and (nxt < 0 or tonumber(l[2]) + 1 < nxt) then nxt = tonumber(l[2]) + 1 end
    local w = redis.call('XREVRANGE', k(q, 8), '+', '-', 'COUNT', 1)
    header[3 * q] = (#w > 0) and w[1][1] or '0-0'
  end
  header[2] = nxt
end
for _, v in ipairs(out) do header[#header + 1] = v end
return header
""",
)

# ARGV per item: op, queue index, id, receipt, then by op (fixed arity):
#   A ack                  -
#   a ack + result         result key, data, ttl ms, channel
#   D dead-letter          dlq queue index, entry id, failed_at, function, record
#   d dead-letter + result the five of D, then the four of a
#   R retry                body, delay ms
#   L release              -
# Every number is checked before the first write (a script that fails half-way
# stays half-applied): a bad one fails the whole call and changes nothing.
# Leases are checked for the whole batch first (ZMSCORE, HMGET), then each
# item applies; a job named twice in one batch is held only by the first.
# Returns 1 (done) or 0 (lease lost) per item.
SETTLE = queue_script(
    "settle",
    """
local arity = {A = 0, a = 4, D = 5, d = 9, R = 2, L = 0}
-- ARGV offsets (from the item's first operand) of its numbers, and their least value
local numbers = {a = {{2, 1}}, D = {{2, -math.huge}}, d = {{2, -math.huge}, {7, 1}}, R = {{1, 0}}}
local function whole(v, least)
  local n = tonumber(v)
  return n and n == n and n >= least and n <= 9007199254740991 and (least < 0 or n % 1 == 0)
end
local items, byq = {}, {}
local i = 1
while i <= #ARGV do
  local it = {op = ARGV[i], q = tonumber(ARGV[i + 1]), id = ARGV[i + 2], tok = ARGV[i + 3]}
  if not arity[it.op] then return redis.error_reply('ERR upnext settle: unknown op') end
  it.a = i + 4
  for _, c in ipairs(numbers[it.op] or {}) do
    if not whole(ARGV[it.a + c[1]], c[2]) then
      return redis.error_reply('ERR upnext settle: job ' .. it.id .. ' has an out-of-range '
        .. 'ttl, delay or time (' .. tostring(ARGV[it.a + c[1]]) .. '); nothing applied')
    end
  end
  i = i + 4 + arity[it.op]
  items[#items + 1] = it
  byq[it.q] = byq[it.q] or {}
  table.insert(byq[it.q], it)
end
local gone = {}
for q, its in pairs(byq) do
  local ids = {}
  for j, it in ipairs(its) do ids[j] = it.id end
  local scores = redis.call('ZMSCORE', k(q, 3), unpack(ids))
  local toks = redis.call('HMGET', k(q, 6), unpack(ids))
  local seen, live, done = {}, {}, {}
  for j, it in ipairs(its) do
    it.ok = toks[j] == it.tok and scores[j] and tonumber(scores[j]) >= now and not seen[it.id]
    seen[it.id] = true
    if it.ok then
      live[#live + 1] = it.id
      if it.op ~= 'R' and it.op ~= 'L' then done[#done + 1] = it.id end
    end
  end
  if #live > 0 then
    redis.call('ZREM', k(q, 3), unpack(live))
    redis.call('HDEL', k(q, 6), unpack(live))
  end
  if #done > 0 then
    redis.call('HDEL', k(q, 4), unpack(done))
    redis.call('HDEL', k(q, 5), unpack(done))
    redis.call('HDEL', k(q, 12), unpack(done))
  end
end
local res, woke = {}, {}
for _, it in ipairs(items) do
  local q, id, a = it.q, it.id, it.a
  if not it.ok then
    res[#res + 1] = 0
  else
    res[#res + 1] = 1
    if it.op == 'D' or it.op == 'd' then
      local d = tonumber(ARGV[a])
      redis.call('ZADD', k(d, 9), ARGV[a + 2], ARGV[a + 1])
      redis.call('HSET', k(d, 10), ARGV[a + 1], ARGV[a + 4])
      -- NUL + job id -> its entry ids, NUL-separated (a job id may die more than once).
      local job, eid = '\\0' .. id, ARGV[a + 1]
      local had = redis.call('HGET', k(d, 11), job)
      redis.call('HSET', k(d, 11), eid, ARGV[a + 3], job, had and (had .. '\\0' .. eid) or eid)
      a = a + 5
    end
    if it.op == 'a' or it.op == 'd' then
      redis.call('SET', ARGV[a], ARGV[a + 1], 'PX', ARGV[a + 2])
      redis.call('PUBLISH', ARGV[a + 3], '1')
    elseif it.op == 'R' then
      redis.call('HSET', k(q, 4), id, ARGV[a])
      redis.call('HDEL', k(q, 5), id)
      place(q, id, tonumber(ARGV[a + 1]))
      woke[q] = true
    elseif it.op == 'L' then
      -- Release: back at the head, and this hand-out does not count.
      redis.call('HINCRBY', k(q, 5), id, -1)
      redis.call('LPUSH', k(q, 1), id)
      woke[q] = true
    end
  end
end
for q in pairs(woke) do wake(q) end
return res
""",
)

# ARGV: lease ms, then (queue index, id, receipt) per delivery. 1 or 0 each.
EXTEND = queue_script(
    "extend",
    """
local deadline = now + tonumber(ARGV[1])
local res = {}
for i = 2, #ARGV, 3 do
  local q, id = tonumber(ARGV[i]), ARGV[i + 1]
  local sc = redis.call('ZSCORE', k(q, 3), id)
  if redis.call('HGET', k(q, 6), id) == ARGV[i + 2] and sc and tonumber(sc) >= now then
    redis.call('ZADD', k(q, 3), deadline, id)
    res[#res + 1] = 1
  else
    res[#res + 1] = 0
  end
end
return res
""",
)

# ARGV: job id. 1 if it was queued or scheduled and not held.
CANCEL = queue_script(
    "cancel",
    """
local id = ARGV[1]
if redis.call('HEXISTS', k(1, 6), id) == 1 or redis.call('HEXISTS', k(1, 4), id) == 0 then
  return 0
end
redis.call('HDEL', k(1, 4), id)
redis.call('HDEL', k(1, 5), id)
redis.call('HDEL', k(1, 12), id)
redis.call('ZREM', k(1, 2), id)
redis.call('LREM', k(1, 1), 0, id)
return 1
""",
)

# Drops ready and scheduled jobs that nobody holds; returns how many.
PURGE = queue_script(
    "purge",
    """
local seen, n = {}, 0
local function drop(id)
  if not seen[id] and redis.call('HEXISTS', k(1, 6), id) == 0 then
    seen[id] = true
    n = n + redis.call('HDEL', k(1, 4), id)
    redis.call('HDEL', k(1, 5), id)
    redis.call('HDEL', k(1, 12), id)
  end
end
for _, id in ipairs(redis.call('LRANGE', k(1, 1), 0, -1)) do drop(id) end
for _, id in ipairs(redis.call('ZRANGE', k(1, 2), 0, -1)) do drop(id) end
redis.call('DEL', k(1, 1), k(1, 2))
return n
""",
)

# {ready, scheduled, in flight, dead}; an expired lease counts as ready.
STATS = queue_script(
    "stats",
    """
return {
  redis.call('LLEN', k(1, 1)) + redis.call('ZCOUNT', k(1, 2), '-inf', now)
    + redis.call('ZCOUNT', k(1, 3), '-inf', '(' .. now),
  redis.call('ZCOUNT', k(1, 2), '(' .. now, '+inf'),
  redis.call('ZCOUNT', k(1, 3), now, '+inf'),
  redis.call('ZCARD', k(1, 9)),
}
""",
)

SCRIPTS = (
    ENQUEUE,
    RECEIVE,
    SETTLE,
    EXTEND,
    CANCEL,
    PURGE,
    STATS,
)
