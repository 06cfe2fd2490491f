-- Repair one sale's counts after reconciliation, atomically with admissions.
--
-- KEYS[1] sale hash   KEYS[2] users hash   KEYS[3] the sale lock
-- KEYS[4 .. 3+s]   tickets to mark failed (if still confirmed, awaiting_payment or paid)
-- KEYS[4+s ..]     tickets to restore as 'confirmed' (if they do not exist)
-- ARGV[1] holder token of the sale lock (the repair is refused without it)
-- ARGV[2] change to 'remaining'   ARGV[3] reason written on marked tickets
-- ARGV[4] s, the number of tickets to mark   ARGV[5] ticket ttl (s)
-- ARGV[6] p, the number of buyers whose units change
-- ARGV[7 .. 6+2p] pairs: user id, change to the units the user holds
-- ARGV[7+2p ..] pairs, one per ticket to restore: user id, units
--
-- Changes are relative (HINCRBY), so they commute with admissions that run
-- meanwhile. 'remaining' keeps the books (stock - units held) even when that
-- is below zero: clamping it would let units come back that were never free.
-- A restored ticket takes no stock itself: its buyer's units come back with
-- the pairs. One that exists by now (the buyer retried) is left as it is.
-- Reply: {'fixed', remaining after, units held beyond the stock};
-- {'gone', 0, 0} if the sale is gone; an error if the lock is no longer held
-- (nothing is changed then).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the sale lock was not held')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone', 0, 0} end
local marked, ttl, pairs = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 7, 6 + 2 * pairs, 2 do
  local held = redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1]))
  if held <= 0 then redis.call('HDEL', KEYS[2], ARGV[i]) end
end
local settled = {confirmed = true, awaiting_payment = true, paid = true}
for i = 4, 3 + marked do
  if settled[redis.call('HGET', KEYS[i], 's')] then
    -- (an awaiting_payment one stays in the holds index until the worker drops it)
    redis.call('HSET', KEYS[i], 's', 'failed', 'r', ARGV[3])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local arg = 7 + 2 * pairs
for i = 4 + marked, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'u', ARGV[arg], 'q', ARGV[arg + 1], 's', 'confirmed', 'a', now)
    redis.call('EXPIRE', KEYS[i], ttl)
  end
  arg = arg + 2
end
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', tonumber(ARGV[2]))
return {'fixed', remaining, math.max(-remaining, 0)}
