-- Take the orders of one sale that this consumer should (re)process now.
--
-- KEYS[1] orders stream   KEYS[2] retry schedule (zset: entry id -> due ms)
-- KEYS[3] attempts hash (<entry>:f hook failures, <entry>:d worker deaths)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] claim idle ms   ARGV[4] count
-- ARGV[5] prune ms (0: skip step 3)   ARGV[6] XAUTOCLAIM cursor ('0-0': from the start)
--
-- 1. Retries that are due (a hook failed and its backoff has passed): XCLAIM
--    them from whichever consumer holds them.
-- 2. Orders pending on any consumer for longer than the claim idle time (a
--    worker died mid-order): XAUTOCLAIM. A live worker renews the orders in its
--    hands (order_touch.lua), so those never look idle. The scan resumes
--    where the previous one stopped (XAUTOCLAIM looks at COUNT * 10 entries at
--    most), so a long list of live orders cannot hide a dead worker's one.
-- Both steps take what they claim off the retry schedule inside this one
-- atomic script, so the two paths never hand one entry to two consumers.
-- Every claim increments the entry's delivery count in Redis; the reply
-- carries it, and the order's recorded hook failures and worker deaths (the
-- worker gives an order up on those, never on the delivery count: a claim
-- counts a delivery against orders that were never started).
-- 3. Consumers with nothing pending and idle for longer than ARGV[5] ms are
--    removed (a killed worker leaves its name in the group; pending entries
--    are never dropped, since only empty consumers are deleted).
--
-- Reply: {next cursor, {id, {field, value, ...}, deliveries, failures, deaths, id, ...}}
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[4])
local out = {}

local function take(entry)
  if type(entry) ~= 'table' or not entry[2] then return end  -- deleted meanwhile
  redis.call('ZREM', KEYS[2], entry[1])
  local pending = redis.call('XPENDING', KEYS[1], group, entry[1], entry[1], 1)
  local seen = redis.call('HMGET', KEYS[3], entry[1] .. ':f', entry[1] .. ':d')
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2]
  out[#out + 1] = pending[1][4]
  out[#out + 1] = tonumber(seen[1] or '0')
  out[#out + 1] = tonumber(seen[2] or '0')
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms(), 'LIMIT', 0, count)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local claimed = redis.call('XCLAIM', KEYS[1], group, consumer, 0, id)
  take(claimed[1])
end

local cursor = ARGV[6]
local room = count - #out / 5
if room > 0 then
  local auto = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[3], cursor,
                          'COUNT', room)
  cursor = auto[1]
  for _, entry in ipairs(auto[2]) do take(entry) end
end

local prune = tonumber(ARGV[5])
if prune > 0 then
  for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], group)) do
    local info = {}
    for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
    if info['pending'] == 0 and info['idle'] > prune and info['name'] ~= consumer then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, info['name'])
    end
  end
end
return {cursor, out}
