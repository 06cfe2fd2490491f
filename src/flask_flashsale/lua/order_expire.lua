-- Expire a batch of one sale's unpaid holds whose pay_by has passed: give
-- their stock and the buyer's count back, mark them expired, exactly once.
--
-- KEYS[1] sale hash   KEYS[2] users hash   KEYS[3] holds (deadline index)
-- KEYS[4] payments counters hash   KEYS[5] orders stream
-- KEYS[6..] ticket hashes
-- ARGV[1] events channel ('' = none)
-- ARGV[2] the ticket id of a token is ARGV[2] .. token (keys.join_ticket_id)
-- ARGV[3] '1': queue a call of the expiry hook for each expired ticket
-- ARGV[4] the event to publish on the channel (the sale's 'changed' message)
-- ARGV[5..] ticket tokens, candidates read from the holds zset (ARGV[i] goes
-- with KEYS[i + 1])
--
-- Each candidate is judged again here, on Redis TIME: only a token still in
-- the holds zset, due, whose ticket is still awaiting_payment expires. The
-- ZREM and the status change happen in this one atomic step, so however many
-- workers pass the same candidates (concurrently, or again after a worker
-- died mid-batch), a hold expires once; paid and cancelled tickets left the
-- index when they were paid or cancelled. A token whose ticket is not awaiting
-- payment any more (or is gone) is dropped from the index; one whose pay_by
-- is still ahead is indexed again under it.
--
-- The hook's call is queued as an entry on the sale's orders stream (fields
-- t u q p a of the order, k = 'expired', d = pay_by), so it is delivered at
-- least once, retried, claimed from a dead worker and dead-lettered exactly
-- like an order's hook.
--
-- Reply: {now ms, token, user, quantity, pay_by ms, token, ...} for the tickets
-- this call expired.
local now = now_ms()
local out = {now}
local ticket_prefix = ARGV[2]
for i = 5, #ARGV do
  local token, key = ARGV[i], KEYS[i + 1]
  local due = tonumber(redis.call('ZSCORE', KEYS[3], token))
  if due and due <= now then
    local t = redis.call('HMGET', key, 's', 'u', 'q', 'a', 'd')
    local by = tonumber(t[5])
    if t[1] == 'awaiting_payment' and by and by > now then
      redis.call('ZADD', KEYS[3], by, token)
    else
      redis.call('ZREM', KEYS[3], token)
      if t[1] == 'awaiting_payment' then
        local user, qty = t[2], tonumber(t[3])
        if redis.call('EXISTS', KEYS[1]) == 1 then
          redis.call('HINCRBY', KEYS[1], 'remaining', qty)
        end
        if redis.call('HINCRBY', KEYS[2], user, -qty) <= 0 then
          redis.call('HDEL', KEYS[2], user)
        end
        redis.call('HSET', key, 's', 'expired')
        redis.call('HINCRBY', KEYS[4], 'expired', 1)
        if ARGV[3] == '1' then
          redis.call('XADD', KEYS[5], '*', 't', ticket_prefix .. token, 'u', user, 'q', qty,
                     'p', '', 'a', t[4] or '0', 'k', 'expired', 'd', t[5] or due)
        end
        out[#out + 1] = token
        out[#out + 1] = user
        out[#out + 1] = qty
        out[#out + 1] = by or due
      end
    end
  end
end
if #out > 1 and ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[4]) end
return out
