"""The Lua scripts of the state store, each atomic on the server.

A script works on one or more state groups (keys.py): each group's keys are
in one slot, and a script touches several groups only on standalone Redis.
Times are microseconds from Redis ``TIME``, never the client's clock. A
version is ``max(the group's highest version + 1, now)``: it rises across a
delete and a restart of the server (the group's ``ver`` string is kept with
the data), and it stays exact in Lua's doubles (< 2^53) until the year 2255.
Versions are written and compared as decimal strings, never as Lua numbers.
"""

from __future__ import annotations

from upnext_redis.scripts import Script

__all__ = ["STATE_PUT", "STATE_SCAN", "STATE_SCRIPTS", "STATE_SLOTS"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: per group idx, ttl, ver (3 each), then the entry of each write.
# ARGV: number of groups, then the base of each group, then per write:
# group, key, expect ('*' any, '-' absent, else a version), ttl ms (0: none),
# op ('S' set, 'D' delete), value. Returns 1 or 0 per write.
STATE_PUT = Script(
    "state_put",
    _NOW
    + """
local ng = tonumber(ARGV[1])
local function meta(g, n) return KEYS[(g - 1) * 3 + n] end
-- Up to 32 expired keys per group leave its indexes per call: they are never
-- listed anyway (a scan checks the entry), this only bounds the indexes' size.
local function reap(g)
  local base = ARGV[1 + g]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', meta(g, 2), '-inf', now, 'LIMIT', 0, 32)) do
    local left = redis.call('PTTL', base .. 'e:' .. m)
    if left > 0 then
      redis.call('ZADD', meta(g, 2), now + left * 1000, m)
    else
      -- -1: the entry lives without a ttl (made so by hand): keep it listed.
      if left == -2 then redis.call('ZREM', meta(g, 1), m) end
      redis.call('ZREM', meta(g, 2), m)
    end
  end
end
local function version(g)
  local v = math.max((tonumber(redis.call('GET', meta(g, 3))) or 0) + 1, now)
  local s = string.format('%.0f', v)
  redis.call('SET', meta(g, 3), s)
  return s
end
local reaped, out, a0 = {}, {}, 1 + ng
for i = 1, (#ARGV - a0) / 6 do
  local a = a0 + (i - 1) * 6
  local g, m, expect, ttl = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  if not reaped[g] then reap(g); reaped[g] = true end
  local e = KEYS[3 * ng + i]
  local cur = redis.call('HGET', e, 'ver')
  local ok = expect == '*' or (expect == '-' and not cur) or cur == expect
  if ok and ARGV[a + 5] == 'D' then
    redis.call('DEL', e)
    redis.call('ZREM', meta(g, 1), m)
    redis.call('ZREM', meta(g, 2), m)
  elseif ok then
    redis.call('HSET', e, 'v', ARGV[a + 6], 'ver', version(g))
    redis.call('ZADD', meta(g, 1), 0, m)
    if ttl > 0 then
      redis.call('PEXPIRE', e, ttl)
      redis.call('ZADD', meta(g, 2), now + ttl * 1000, m)
    else
      redis.call('PERSIST', e)
      redis.call('ZREM', meta(g, 2), m)
    end
  end
  out[i] = ok and 1 or 0
end
return out
""",
)

# KEYS: the idx of each group. ARGV: limit, low and high ZRANGEBYLEX bounds,
# then the base of each group. Returns up to limit + 1 live entries in key
# order (bytewise, as Redis orders members), flat: key, value, version. The
# groups' indexes are merged lazily, so only the keys returned (and stale
# ones, removed on the way) have their entry read.
STATE_SCAN = Script(
    "state_scan",
    """
local limit, lo, hi = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local batch = math.min(limit + 1, 256)
local function before(a, b)
  for p = 1, math.min(#a, #b) do
    local x, y = string.byte(a, p), string.byte(b, p)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local buf, pos, from = {}, {}, {}
for g = 1, #KEYS do buf[g], pos[g], from[g] = {}, 1, lo end
local function head(g)
  if pos[g] > #buf[g] then
    if not from[g] then return nil end
    buf[g], pos[g] = redis.call('ZRANGEBYLEX', KEYS[g], from[g], hi, 'LIMIT', 0, batch), 1
    from[g] = #buf[g] == batch and '(' .. buf[g][batch] or nil
  end
  return buf[g][pos[g]]
end
local out, n = {}, 0
while n <= limit do
  local best, g = nil, nil
  for h = 1, #KEYS do
    local m = head(h)
    if m and (not best or before(m, best)) then best, g = m, h end
  end
  if not best then break end
  pos[g] = pos[g] + 1
  local base = ARGV[3 + g]
  local e = redis.call('HMGET', base .. 'e:' .. best, 'v', 'ver')
  if e[2] then
    out[#out + 1], out[#out + 2], out[#out + 3] = best, e[1], e[2]
    n = n + 1
  else
    redis.call('ZREM', KEYS[g], best)
    redis.call('ZREM', base .. 'ttl', best)
  end
end
return out
""",
)

# KEYS[1]: the slot set. ARGV: member, limit ('' for none), ttl us.
# Returns {acquired 1/0, live count, us until the earliest member expires}.
STATE_SLOTS = Script(
    "state_slots",
    _NOW
    + """
local key, member, limit, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local count = redis.call('ZCARD', key)
if limit and count >= limit and not redis.call('ZSCORE', key, member) then
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, count, math.max((tonumber(first[2]) or now) - now, 0)}
end
redis.call('ZADD', key, now + ttl, member)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, math.ceil((tonumber(last[2]) - now) / 1000) + 1)
return {1, redis.call('ZCARD', key), 0}
""",
)

STATE_SCRIPTS = (STATE_PUT, STATE_SCAN, STATE_SLOTS)
