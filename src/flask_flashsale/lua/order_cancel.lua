-- Cancel an order (payment timeout, refund): give its stock and the buyer's
-- count back, exactly once, atomically with admissions and the worker.
--
-- KEYS[1] ticket hash   KEYS[2] sale hash   KEYS[3] users hash
-- KEYS[4] holds (deadline index of tickets awaiting payment)
-- ARGV[1] reason   ARGV[2] events channel ('' = none)
-- ARGV[3] the event to publish there (the sale's 'changed' message)
-- ARGV[4] the ticket's token (its member in the holds zset)
--
-- Only a live ticket (queued, confirmed, awaiting_payment, paid: a refund)
-- gives anything back; a cancelled one already did, and so did a failed one
-- (compensation) and an expired one (the worker's expiry). The ticket keeps
-- its TTL. The worker never turns a cancelled ticket back into a confirmed one.
-- Reply: {outcome, status}: {'cancelled', 'cancelled'} when this call
-- cancelled it, {'unchanged', current status}, or {'not_found', ''}.
local ticket = redis.call('HMGET', KEYS[1], 's', 'u', 'q')
if not ticket[1] then return {'not_found', ''} end
local live = {queued = true, confirmed = true, awaiting_payment = true, paid = true}
if not live[ticket[1]] then return {'unchanged', ticket[1]} end
local user, qty = ticket[2], tonumber(ticket[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'remaining', qty)
end
if redis.call('HINCRBY', KEYS[3], user, -qty) <= 0 then redis.call('HDEL', KEYS[3], user) end
redis.call('HSET', KEYS[1], 's', 'cancelled', 'r', ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[4])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return {'cancelled', 'cancelled'}
