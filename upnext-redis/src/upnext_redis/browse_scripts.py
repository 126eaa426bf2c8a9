"""The Lua script that lists a queue's waiting jobs for `JobBrowser`, read-only.

It runs over one queue key group (keys.py order) after the prelude of
scripts.py, and judges time by Redis ``TIME`` as RECEIVE does.

Ready jobs are listed in the order RECEIVE would hand them out: RECEIVE first
moves due delayed jobs to the tail of the ready list and jobs of expired
leases to its head (one LPUSH of them in deadline order, so the latest
expired comes first), then pops from the head, skipping stale ids (no body,
held, or seen before). So the listing reads three segments, with the same
skips: 0, expired leases, latest deadline first; 1, the ready list from the
head; 2, due delayed jobs, soonest first. Scheduled jobs are the delayed
jobs not yet due, by (due ms, id).
"""

from __future__ import annotations

from upnext_redis.scripts import queue_script

__all__ = ["WAITING"]

# ARGV: mode, limit, then the cursor (see browse.py):
#   'r' (ready): segment, index in it, the last id shown ('' for none);
#   's' (scheduled): the last due ms shown ('' for none), the last id shown.
# Reads up to limit + 1 jobs (the extra one says a next page exists). Returns
# {more (1/0), then the cursor of the next page: three values for 'r' (segment,
# index, id), two for 's' (due ms, id) and a filler, then per job: id, body,
# priority, due ms ('' for ready)}. Stops early after scanning 10 * limit +
# 1000 ids (stale ones make that more than a page), with `more` = 1 and a
# cursor after the last id scanned.
WAITING = queue_script(
    "waiting",
    """
local mode, limit = ARGV[1], tonumber(ARGV[2])
local want, budget = limit + 1, 10 * limit + 1000
local jobs, seen = {}, {}
-- The waiting ones of `ids` (not gone, not under a live lease, not seen), at most `want`.
local function keep(ids, dues, at)
  if #ids == 0 then return end
  local bodies = redis.call('HMGET', k(1, 4), unpack(ids))
  local toks = redis.call('HMGET', k(1, 6), unpack(ids))
  local leases = redis.call('ZMSCORE', k(1, 3), unpack(ids))
  local prios = redis.call('HMGET', k(1, 12), unpack(ids))
  for j, id in ipairs(ids) do
    if #jobs >= want then return end
    local held = toks[j] and not (leases[j] and tonumber(leases[j]) < now)
    if bodies[j] and not held and not seen[id] then
      seen[id] = true
      jobs[#jobs + 1] = {id, bodies[j], tonumber(prios[j]) or 0, dues[j] or '', at(j)}
    end
  end
end
local function reply(more, c1, c2, c3)
  local out = {more, c1, c2, c3}
  for j = 1, math.min(#jobs, limit) do
    local job = jobs[j]
    for f = 1, 4 do out[#out + 1] = job[f] end
  end
  return out
end
if mode == 's' then
  local start = redis.call('ZCOUNT', k(1, 2), '-inf', now)
  if ARGV[3] ~= '' then
    local rank = redis.call('ZRANK', k(1, 2), ARGV[4])
    local score = redis.call('ZSCORE', k(1, 2), ARGV[4])
    local after = (rank and tonumber(score) == tonumber(ARGV[3])) and rank + 1
      or redis.call('ZCOUNT', k(1, 2), '-inf', '(' .. ARGV[3])
    start = math.max(start, after)
  end
  local scanned, done, tail = 0, false, {'', ''}
  while #jobs < want and scanned < budget do
    local n = math.min(want - #jobs, 500)
    local got = redis.call('ZRANGE', k(1, 2), start, start + n - 1, 'WITHSCORES')
    local ids, dues = {}, {}
    for j = 1, #got, 2 do
      ids[#ids + 1] = got[j]
      dues[#dues + 1] = got[j + 1]
    end
    keep(ids, dues, function() return 0 end)
    if #ids > 0 then tail = {dues[#ids], ids[#ids]} end
    scanned, start = scanned + #ids, start + #ids
    if #ids < n then
      done = true
      break
    end
  end
  if #jobs > limit then return reply(1, jobs[limit][4], jobs[limit][1], '') end
  if done then return reply(0, '', '', '') end
  return reply(1, tail[1], tail[2], '')
end
local seg, idx, last = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
-- Find the last job shown where it sits now, so a queue popped meanwhile loses nothing.
if last ~= '' and seg == 0 then
  local rank, score = redis.call('ZREVRANK', k(1, 3), last), redis.call('ZSCORE', k(1, 3), last)
  if rank and tonumber(score) < now then
    idx = rank - redis.call('ZCOUNT', k(1, 3), now, '+inf') + 1
  end
elseif last ~= '' and seg == 1 then
  local pos = redis.call('LPOS', k(1, 1), last, 'MAXLEN', idx + limit)
  if pos then idx = pos + 1 end
elseif last ~= '' then
  local rank, score = redis.call('ZRANK', k(1, 2), last), redis.call('ZSCORE', k(1, 2), last)
  if rank and tonumber(score) <= now then idx = rank + 1 end
end
local function read(s, from, n)
  if s == 0 then
    return redis.call('ZREVRANGEBYSCORE', k(1, 3), '(' .. now, '-inf', 'LIMIT', from, n)
  elseif s == 1 then
    return redis.call('LRANGE', k(1, 1), from, from + n - 1)
  end
  return redis.call('ZRANGEBYSCORE', k(1, 2), '-inf', now, 'LIMIT', from, n)
end
local scanned = 0
while seg <= 2 and #jobs < want and scanned < budget do
  local n = math.min(want - #jobs, 500)
  local ids = read(seg, idx, n)
  local s, base = seg, idx
  keep(ids, {}, function(j) return {s, base + j - 1} end)
  scanned = scanned + #ids
  if #ids < n then seg, idx = seg + 1, 0 else idx = idx + #ids end
end
if #jobs > limit then
  local at = jobs[limit][5]
  return reply(1, at[1], at[2] + 1, jobs[limit][1])
end
if seg <= 2 then return reply(1, seg, idx, '') end
return reply(0, '', '', '')
""",
)
