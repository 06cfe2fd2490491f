-- Repair one sale's counts after reconciliation, atomically with admissions.
--
-- KEYS[1] sale hash   KEYS[2] users hash   KEYS[3] the sale lock
-- KEYS[4..] tickets to mark failed (if still 'confirmed')
-- ARGV[1] holder token of the sale lock (the repair is refused without it)
-- ARGV[2] change to 'remaining'   ARGV[3] reason written on marked tickets
-- ARGV[4..] pairs: user id, change to the units the user holds
--
-- Changes are relative (HINCRBY), so they commute with admissions that run
-- meanwhile. 'remaining' keeps the books (stock - units held) even when that
-- is below zero: clamping it would let units come back that were never free.
-- Reply: {'fixed', remaining after, units held beyond the stock};
-- {'gone', 0, 0} if the sale is gone; an error if the lock is no longer held
-- (nothing is changed then).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the sale lock was not held')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone', 0, 0} end
for i = 4, #ARGV, 2 do
  local held = redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1]))
  if held <= 0 then redis.call('HDEL', KEYS[2], ARGV[i]) end
end
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], 's') == 'confirmed' then
    redis.call('HSET', KEYS[i], 's', 'failed', 'r', ARGV[3])
  end
end
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', tonumber(ARGV[2]))
return {'fixed', remaining, math.max(-remaining, 0)}
