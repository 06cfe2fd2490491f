-- GCRA token bucket, shared by admission.lua and ratelimit.lua (prepended by
-- scripts.py, since Redis scripts cannot include one another; after clock.lua).
--
-- A bucket is one key holding its "theoretical arrival time" (TAT) in ms. A
-- bucket of `burst` tokens refilling one token every `interval` ms admits a
-- request at `now` when TAT - now <= interval * (burst - 1). The key expires
-- when the bucket would be full again, so idle buckets cost no memory.

-- Returns (ms to wait, TAT); wait == 0 means allowed and TAT is the new one to
-- commit; otherwise TAT is the current one. The wait is rounded up to a whole
-- ms (a script's numbers reach the caller truncated to integers, and a
-- fractional wait must not become 0). Does not write.
local function gcra_check(key, interval, burst, now)
  local tat = tonumber(redis.call('GET', key))
  if not tat or tat < now then tat = now end
  local new_tat = tat + interval
  local wait = new_tat - interval * burst - now
  if wait > 0 then return math.ceil(wait), tat end
  return 0, new_tat
end

local function gcra_commit(key, new_tat, now)
  redis.call('SET', key, new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
end
