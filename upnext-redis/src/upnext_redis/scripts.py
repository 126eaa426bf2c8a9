"""The Lua scripts behind every state change, each atomic on the server.

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
    "DLQ_DELETE",
    "DLQ_LIST",
    "DLQ_PURGE",
    "DLQ_REPLAY",
    "ENQUEUE",
    "EXTEND",
    "PURGE",
    "RECEIVE",
    "SCRIPTS",
    "SETTLE",
    "STATS",
    "Script",
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


def _script(name: str, body: str) -> Script:
    return Script(name, _PRELUDE + body)


# ARGV: (queue index, id, body, delay ms) per envelope.
ENQUEUE = _script(
    "enqueue",
    """
local woke = {}
for i = 1, #ARGV, 4 do
  local q, id = tonumber(ARGV[i]), ARGV[i + 1]
  redis.call('HSET', k(q, 4), id, ARGV[i + 2])
  redis.call('HDEL', k(q, 5), id)
  place(q, id, tonumber(ARGV[i + 3]))
  woke[q] = true
end
for q in pairs(woke) do wake(q) end
return #ARGV / 4
""",
)

# ARGV: limit, lease ms, number of queues. Returns
# {now, next event ms or -1, wake stream id per queue..., then per delivery:
#  queue index, id, body, hand-out count, receipt}.
RECEIVE = _script(
    "receive",
    """
local limit, lease, nq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local deadline = now + lease
local out, n = {}, 0
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
local function take(q)
  local head = redis.call('ZRANGE', k(q, 3), 0, 0, 'WITHSCORES')
  local taken = 0
  while n < limit do
    local ids = redis.call('LPOP', k(q, 1), limit - n)
    if not ids then break end
    local tok0 = redis.call('INCRBY', k(q, 7), #ids) - #ids
    for j, id in ipairs(ids) do
      local body = redis.call('HGET', k(q, 4), id)
      -- Skip stale ids: a cancelled job, or a duplicate of a job held now.
      if body and redis.call('HEXISTS', k(q, 6), id) == 0 then
        local c = redis.call('HINCRBY', k(q, 5), id, 1)
        local tok = tostring(tok0 + j)
        redis.call('HSET', k(q, 6), id, tok)
        redis.call('ZADD', k(q, 3), deadline, id)
        out[#out + 1] = q
        out[#out + 1] = id
        out[#out + 1] = body
        out[#out + 1] = c
        out[#out + 1] = tok
        n = n + 1
        taken = taken + 1
      end
    end
  end
  -- A lease earlier than any before: blocked receivers must shorten their wait.
  if taken > 0 and (#head == 0 or deadline < tonumber(head[2])) then wake(q) end
end
for q = 1, nq do
  promote(q)
  if n < limit then take(q) end
end
local header = {now, -1}
if n == 0 then
  local nxt = -1
  for q = 1, nq do
    local d = redis.call('ZRANGE', k(q, 2), 0, 0, 'WITHSCORES')
    if #d > 0 and (nxt < 0 or tonumber(d[2]) < nxt) then nxt = tonumber(d[2]) end
    local l = redis.call('ZRANGE', k(q, 3), 0, 0, 'WITHSCORES')
    if #l > 0 and (nxt < 0 or tonumber(l[2]) + 1 < nxt) then nxt = tonumber(l[2]) + 1 end
    local w = redis.call('XREVRANGE', k(q, 8), '+', '-', 'COUNT', 1)
    header[q + 2] = (#w > 0) and w[1][1] or '0-0'
  end
  header[2] = nxt
else
  for q = 1, nq do header[q + 2] = '' end
end
for _, v in ipairs(out) do header[#header + 1] = v end
return header
""",
)

# ARGV per item: op, queue index, id, receipt, argument count, arguments...
#   A (ack):         [result key, data, ttl ms, channel]            (result optional)
#   D (dead-letter): dlq queue index, entry id, failed_at, function, record,
#                    then [result key, data, ttl ms, channel]       (result optional)
#   R (retry):       body, delay ms
#   L (release):     nothing
# Returns 1 (done) or 0 (lease lost) per item.
SETTLE = _script(
    "settle",
    """
local res, woke = {}, {}
local i = 1
while i <= #ARGV do
  local op, q, id, tok = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local a = i + 5
  i = a + tonumber(ARGV[i + 4])
  local sc = redis.call('ZSCORE', k(q, 3), id)
  if redis.call('HGET', k(q, 6), id) ~= tok or not sc or tonumber(sc) < now then
    res[#res + 1] = 0
  else
    res[#res + 1] = 1
    redis.call('ZREM', k(q, 3), id)
    redis.call('HDEL', k(q, 6), id)
    if op == 'A' or op == 'D' then
      redis.call('HDEL', k(q, 4), id)
      redis.call('HDEL', k(q, 5), id)
      local r = a
      if op == 'D' then
        local d = tonumber(ARGV[a])
        redis.call('ZADD', k(d, 9), ARGV[a + 2], ARGV[a + 1])
        redis.call('HSET', k(d, 10), ARGV[a + 1], ARGV[a + 4])
        redis.call('HSET', k(d, 11), ARGV[a + 1], ARGV[a + 3])
        r = a + 5
      end
      if r < i then
        redis.call('SET', ARGV[r], ARGV[r + 1], 'PX', ARGV[r + 2])
        redis.call('PUBLISH', ARGV[r + 3], '1')
      end
    elseif op == 'R' then
      redis.call('HSET', k(q, 4), id, ARGV[a])
      redis.call('HDEL', k(q, 5), id)
      place(q, id, tonumber(ARGV[a + 1]))
      woke[q] = true
    else
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
EXTEND = _script(
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
CANCEL = _script(
    "cancel",
    """
local id = ARGV[1]
if redis.call('HEXISTS', k(1, 6), id) == 1 or redis.call('HEXISTS', k(1, 4), id) == 0 then
  return 0
end
redis.call('HDEL', k(1, 4), id)
redis.call('HDEL', k(1, 5), id)
redis.call('ZREM', k(1, 2), id)
redis.call('LREM', k(1, 1), 0, id)
return 1
""",
)

# Drops ready and scheduled jobs that nobody holds; returns how many.
PURGE = _script(
    "purge",
    """
local seen, n = {}, 0
local function drop(id)
  if not seen[id] and redis.call('HEXISTS', k(1, 6), id) == 0 then
    seen[id] = true
    n = n + redis.call('HDEL', k(1, 4), id)
    redis.call('HDEL', k(1, 5), id)
  end
end
for _, id in ipairs(redis.call('LRANGE', k(1, 1), 0, -1)) do drop(id) end
for _, id in ipairs(redis.call('ZRANGE', k(1, 2), 0, -1)) do drop(id) end
redis.call('DEL', k(1, 1), k(1, 2))
return n
""",
)

# {ready, scheduled, in flight, dead}; an expired lease counts as ready.
STATS = _script(
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

# ARGV: limit, cursor failed_at ('' for none), cursor id, function ('' for any).
# Up to limit + 1 packed records, newest first by (failed_at, id). Ids of equal
# failed_at compare bytewise, as Redis orders them (Lua's `<` uses the locale).
DLQ_LIST = _script(
    "dlq_list",
    """
local limit, cs, cid, fn = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local out = {}
local function before(a, b)
  for p = 1, math.min(#a, #b) do
    local x, y = string.byte(a, p), string.byte(b, p)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function add(eid)
  if fn == '' or redis.call('HGET', k(1, 11), eid) == fn then
    local rec = redis.call('HGET', k(1, 10), eid)
    if rec then out[#out + 1] = rec end
  end
end
local max = '+inf'
if cs ~= '' then
  for _, eid in ipairs(redis.call('ZREVRANGEBYSCORE', k(1, 9), cs, cs)) do
    if #out > limit then break end
    if before(eid, cid) then add(eid) end
  end
  max = '(' .. cs
end
local offset = 0
while #out <= limit do
  local ids = redis.call('ZREVRANGEBYSCORE', k(1, 9), max, '-inf', 'LIMIT', offset, 256)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, eid in ipairs(ids) do
    if #out > limit then break end
    add(eid)
  end
end
return out
""",
)

# ARGV: entry id. 1 if removed.
DLQ_DELETE = _script(
    "dlq_delete",
    """
if redis.call('HDEL', k(1, 10), ARGV[1]) == 0 then return 0 end
redis.call('ZREM', k(1, 9), ARGV[1])
redis.call('HDEL', k(1, 11), ARGV[1])
return 1
""",
)

# Group 1 holds the entry, group 2 receives the job. ARGV: entry id, job id,
# body, delay ms. 1 if replayed; 0 if the entry is gone (another replay won).
DLQ_REPLAY = _script(
    "dlq_replay",
    """
if redis.call('HDEL', k(1, 10), ARGV[1]) == 0 then return 0 end
redis.call('ZREM', k(1, 9), ARGV[1])
redis.call('HDEL', k(1, 11), ARGV[1])
redis.call('HSET', k(2, 4), ARGV[2], ARGV[3])
redis.call('HDEL', k(2, 5), ARGV[2])
place(2, ARGV[2], tonumber(ARGV[4]))
wake(2)
return 1
""",
)

DLQ_PURGE = _script(
    "dlq_purge",
    """
local n = redis.call('ZCARD', k(1, 9))
redis.call('DEL', k(1, 9), k(1, 10), k(1, 11))
return n
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
    DLQ_LIST,
    DLQ_DELETE,
    DLQ_REPLAY,
    DLQ_PURGE,
)
