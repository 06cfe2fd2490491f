-- Mark a ticket paid (flashsale.mark_paid), atomically with the worker's
-- expiry and with cancel: exactly one of paid / expired / cancelled wins.
--
-- KEYS[1] ticket hash   KEYS[2] sale hash   KEYS[3] holds (deadline index)
-- KEYS[4] payments counters hash
-- ARGV[1] the ticket's token (its member in the holds zset)
--
-- The deadline is the ticket's pay_by (`d`, written when the worker made it
-- awaiting_payment); a ticket still queued (the payment webhook beat the
-- worker) has none yet, so it is worked out the same way: admission time +
-- the sale's payment timeout (`pay`, ms). Judged on Redis TIME: once pay_by
-- has passed, paying fails even if no worker has expired the hold yet.
-- A ticket without a deadline (a sale without a payment timeout) can be
-- paid at any time. A paid ticket leaves the deadline index, so no worker
-- expires it; the worker that later confirms a ticket paid while queued
-- leaves it paid.
--
-- Reply: {outcome, status, user, quantity, pay_by ms or '', reason or ''}:
-- outcome 'paid' (this call or an earlier one paid it), 'too_late' (expired,
-- or pay_by has passed), 'refused' (cancelled or failed), 'not_found'.
local t = redis.call('HMGET', KEYS[1], 's', 'u', 'q', 'a', 'd', 'r')
local status = t[1]
if not status then return {'not_found', '', '', 0, '', ''} end
local function reply(outcome, s, by)
  return {outcome, s, t[2], tonumber(t[3]), by or '', t[6] or ''}
end
local by = tonumber(t[5])
if status == 'paid' then return reply('paid', status, by) end
if status == 'expired' then return reply('too_late', status, by) end
if status ~= 'queued' and status ~= 'confirmed' and status ~= 'awaiting_payment' then
  return reply('refused', status, by)
end
if not by and status == 'queued' then
  local pay = tonumber(redis.call('HGET', KEYS[2], 'pay') or '')
  if pay then by = (tonumber(t[4]) or 0) + pay end
end
if by and now_ms() >= by then return reply('too_late', status, by) end
redis.call('HSET', KEYS[1], 's', 'paid')
if by then redis.call('HSET', KEYS[1], 'd', by) end
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then  -- (no counter left behind by a deleted sale)
  redis.call('HINCRBY', KEYS[4], 'paid', 1)
end
return reply('paid', 'paid', by)
