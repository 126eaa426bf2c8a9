"""The Lua scripts of dead-letter admin: list, delete, replay and purge.

They run over the same queue key groups as scripts.py (keys 9-11 of a group
are its dead-letter index, records and functions) and start with its prelude.
Settle writes the entries; these list and remove them, and replay puts one's
job back on its queue in the same script.
"""

from __future__ import annotations

from upnext_redis.scripts import queue_script

__all__ = ["DLQ_DELETE", "DLQ_LIST", "DLQ_PURGE", "DLQ_REPLAY", "DLQ_SCRIPTS"]

# ARGV: limit, cursor failed_at ('' for none), cursor id, function ('' for any).
# Up to limit + 1 packed records, newest first by (failed_at, id). Ids of equal
# failed_at compare bytewise, as Redis orders them (Lua's `<` uses the locale).
DLQ_LIST = queue_script(
    "dlq_records",
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
    if #out >= limit then break end
    if before(eid, cid) then add(eid) end
  end
  max = '(' .. cs
end
local offset = 0
while #out < limit do
  local ids = redis.call('ZREVRANGEBYSCORE', k(1, 9), max, '-inf', 'LIMIT', offset, 256)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, eid in ipairs(ids) do
    if #out >= limit then break end
    add(eid)
  end
end
return out
""",
)

# ARGV: entry id. 1 if removed.
DLQ_DELETE = queue_script(
    "dlq_delete",
    """
if redis.call('HDEL', k(1, 10), ARGV[1]) == 0 then return 0 end
redis.call('ZREM', k(1, 9), ARGV[1])
redis.call('HDEL', k(1, 11), ARGV[1])
return 1
""",
)

# Group 1 holds the entry, group 2 receives the job. ARGV: entry id, job id,
# body, delay ms, priority. 1 if replayed; 0 if the entry is gone (another
# replay won).
DLQ_REPLAY = queue_script(
    "dlq_replay",
    """
if redis.call('HDEL', k(1, 10), ARGV[1]) == 0 then return 0 end
redis.call('ZREM', k(1, 9), ARGV[1])
redis.call('HDEL', k(1, 11), ARGV[1])
redis.call('HSET', k(2, 4), ARGV[2], ARGV[3])
redis.call('HDEL', k(2, 5), ARGV[2])
if ARGV[5] ~= '0' then
  redis.call('HSET', k(2, 12), ARGV[2], ARGV[5])
else
  redis.call('HDEL', k(2, 12), ARGV[2])
end
place(2, ARGV[2], tonumber(ARGV[4]))
wake(2)
return 1
""",
)

DLQ_PURGE = queue_script(
    "dlq_purge",
    """
local n = redis.call('ZCARD', k(1, 9))
redis.call('DEL', k(1, 9), k(1, 10), k(1, 11))
return n
""",
)

DLQ_SCRIPTS = (DLQ_LIST, DLQ_DELETE, DLQ_REPLAY, DLQ_PURGE)
