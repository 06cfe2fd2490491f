-- An order failed for good: give its stock back, fail its ticket, acknowledge
-- it and move it to the dead-letter stream, in one atomic step.
--
-- KEYS[1] orders stream   KEYS[2] ticket hash   KEYS[3] sale hash
-- KEYS[4] users hash      KEYS[5] dead-letter stream   KEYS[6] retry schedule
-- KEYS[7] attempts hash
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id   ARGV[4] reason
-- ARGV[5] attempts   ARGV[6] events channel ('' = none)
-- ARGV[7] the event to publish there (the sale's 'changed' message)
-- ARGV[8] dead-letter stream max length (approximate)
-- ARGV[9] the buyer-facing reason code written on the ticket (ARGV[4], the
-- exception text, goes to the dead letter only: operators see it, buyers don't)
-- ARGV[10..] the entry's own fields (t u q p a), copied into the dead letter
--
-- Only the consumer holding the entry may compensate it, and the XACK inside
-- this script happens once, so stock and the buyer's count come back exactly
-- once, however many workers try. A ticket that is no longer queued gives
-- nothing back: a cancelled one already did (it is acknowledged and dropped,
-- nothing was lost), and an expired one cannot tell, so it is dead-lettered
-- with its stock left taken (reconcile finds it).
--
-- Reply: 'failed' (compensated and dead-lettered), 'settled' (the ticket was
-- cancelled: acknowledged only) or 'stale' (not held by this consumer).
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not mine[1] then return 'stale' end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[6], ARGV[3])
redis.call('HDEL', KEYS[7], ARGV[3] .. ':f', ARGV[3] .. ':d')

local ticket = redis.call('HMGET', KEYS[2], 's', 'u', 'q')
if ticket[1] == 'cancelled' then return 'settled' end

local now = now_ms()
if ticket[1] == 'queued' then
  local user, qty = ticket[2], tonumber(ticket[3])
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HINCRBY', KEYS[3], 'remaining', qty)
  end
  if redis.call('HINCRBY', KEYS[4], user, -qty) <= 0 then redis.call('HDEL', KEYS[4], user) end
  redis.call('HSET', KEYS[2], 's', 'failed', 'r', ARGV[9])
  if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
end

local letter = {}
for i = 10, #ARGV do letter[#letter + 1] = ARGV[i] end
for _, v in ipairs({'r', ARGV[4], 'n', ARGV[5], 'f', now, 'o', ARGV[3]}) do
  letter[#letter + 1] = v
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', unpack(letter))
return 'failed'
