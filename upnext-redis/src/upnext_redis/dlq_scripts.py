"""The Lua scripts of dead-letter admin: list, delete, replay and purge.

They run over the same queue key groups as scripts.py (keys 9-11 of a group
are its dead-letter index, records and functions; the functions hash also maps
NUL + job id to the job's entry ids, NUL-separated) and start with its prelude.
Settle writes the entries; these list and remove them, and replay puts one's
job back on its queue in the same script.
"""

from __future__ import annotations

from upnext_redis.scripts import queue_script

__all__ = ["DLQ_DELETE", "DLQ_LIST", "DLQ_PURGE", "DLQ_REPLAY", "DLQ_SCRIPTS"]

# ARGV: limit, cursor failed_at ('' for none), cursor id, function ('' for any:
# else the dotted name or a dotted suffix of it). Up to limit packed records,
# newest first by (failed_at, id). Ids of equal failed_at compare bytewise, as
# Redis orders them (Lua's `<` uses the locale).
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
local dotted = '.' .. fn
local function named(f)
  return f == fn or (f and #f > #dotted and string.sub(f, -#dotted) == dotted)
end
local function add(eid)
  if fn == '' or named(redis.call('HGET', k(1, 11), eid)) then
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

# unfile(eid): removes entry `eid` of group 1, and its id from its job's list;
# false if there is none. Shared by delete and replay.
_UNFILE = """
local function unfile(eid)
  local rec = redis.call('HGET', k(1, 10), eid)
  if not rec then return false end
  local header = string.sub(rec, 1, (string.find(rec, '\\n', 1, true) or 0) - 1)
  local job = '\\0' .. cjson.decode(header)[2]
  local ids, keep = redis.call('HGET', k(1, 11), job), {}
  for other in string.gmatch(ids or '', '[^%z]+') do
    if other ~= eid then keep[#keep + 1] = other end
  end
  if #keep > 0 then
    redis.call('HSET', k(1, 11), job, table.concat(keep, '\\0'))
  else
    redis.call('HDEL', k(1, 11), job)
  end
  redis.call('HDEL', k(1, 10), eid)
  redis.call('ZREM', k(1, 9), eid)
  redis.call('HDEL', k(1, 11), eid)
  return true
end
"""

# ARGV: entry id. 1 if removed.
DLQ_DELETE = queue_script(
    "dlq_delete",
    _UNFILE
    + """
if not unfile(ARGV[1]) then return 0 end
return 1
""",
)

# Group 1 holds the entry, group 2 receives the job. ARGV: entry id, job id,
# body, delay ms, priority. 1 if replayed; 0 if the entry is gone (another
# replay won).
DLQ_REPLAY = queue_script(
    "dlq_replay",
    _UNFILE
    + """
if not unfile(ARGV[1]) then return 0 end
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
