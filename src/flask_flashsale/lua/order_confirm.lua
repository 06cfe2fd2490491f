-- The host's hook succeeded: acknowledge orders and confirm their tickets, atomically.
--
-- KEYS[1] orders stream   KEYS[2] retry schedule   KEYS[3] attempts hash
-- KEYS[4] sale hash   KEYS[5] holds (deadline index of tickets awaiting payment)
-- KEYS[6..] ticket hashes
-- ARGV[1] group   ARGV[2] ticket ttl (s)   ARGV[3..] entry ids (ARGV[i] goes with KEYS[i + 3])
--
-- One call settles a worker's batch of one sale (FLASHSALE_WORKER_BATCH), or
-- a single order; each entry is settled on its own, exactly as if alone.
--
-- XACK decides: only the first worker to settle an entry gets 1, so the
-- ticket is confirmed (and order_confirmed sent) once. The ticket only moves
-- queued -> confirmed: one cancelled meanwhile stays cancelled (its stock is
-- already back), so a late hook result never resurrects it.
--
-- Payment timeout: on a sale whose hash has `pay` (ms), a queued ticket
-- becomes awaiting_payment instead, with `d` = admission time + pay (its
-- pay_by), indexed in the holds zset (the worker expires it from there), and
-- its TTL is pushed to ttl seconds after pay_by. A ticket paid while still
-- queued (the payment webhook beat the worker) stays paid.
--
-- Trimming: the entry is deleted (XDEL) right after its XACK, here. That
-- removes exactly the entry just settled and nothing else, so an undelivered
-- or still-pending entry is never trimmed, whatever the number of workers and
-- the order in which they finish. (XTRIM MAXLEN could drop unprocessed
-- entries; XTRIM MINID would need the oldest id that is pending on any
-- consumer or not yet delivered, which cannot be read atomically with the
-- trim outside a script and costs a scan inside one.) So the stream holds
-- exactly the orders not yet settled (XLEN - pending is the backlog), and
-- Redis frees each stream node once all its entries are gone.
--
-- Reply: one outcome per entry, in order: 'confirmed' when this call
-- confirmed the ticket ('awaiting_payment' with a payment timeout, 'paid'
-- when it was paid while queued); 'settled' when the entry was acknowledged but the
-- ticket was no longer queued (cancelled, failed, expired); 'stale' when the
-- entry was not pending any more (another worker settled it, or the sale was
-- deleted).
local out = {}
local pay = tonumber(redis.call('HGET', KEYS[4], 'pay') or '')
local now
for i = 3, #ARGV do
  local id, ticket = ARGV[i], KEYS[i + 3]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 0 then
    out[#out + 1] = 'stale'
  else
    redis.call('XDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id .. ':f', id .. ':d')
    local t = redis.call('HMGET', ticket, 's', 'a')
    if t[1] == 'queued' and pay then
      if not now then
        local time = redis.call('TIME')
        now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
      end
      local by = (tonumber(t[2]) or now) + pay
      redis.call('HSET', ticket, 's', 'awaiting_payment', 'd', by)
      redis.call('EXPIRE', ticket, math.ceil(math.max(by - now, 0) / 1000) + tonumber(ARGV[2]))
      redis.call('ZADD', KEYS[5], by, ticket:match(':t:([^:]+)$'))
      out[#out + 1] = 'awaiting_payment'
    elseif t[1] == 'queued' then
      redis.call('HSET', ticket, 's', 'confirmed')
      out[#out + 1] = 'confirmed'
    elseif t[1] == 'paid' then
      out[#out + 1] = 'paid'
    else
      out[#out + 1] = 'settled'
    end
  end
end
return out
