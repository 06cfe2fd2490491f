-- Put a dead letter back on the orders stream (an admin decision), taking its
-- stock and the buyer's count again, atomically with admissions.
--
-- KEYS[1] dead-letter stream   KEYS[2] orders stream   KEYS[3] sale hash
-- KEYS[4] users hash   KEYS[5] ticket hash
-- ARGV[1] dead-letter id   ARGV[2] ticket id   ARGV[3] ticket ttl (s)
-- ARGV[4] events channel ('' = none)
-- ARGV[5] the event to publish there (the sale's 'changed' message)
--
-- The order is queued again under the same ticket id (so the host's hook sees
-- the same order.id). Refused when the sale is gone, the stock or the buyer's
-- limit no longer allows it, or the ticket is not failed (nor expired).
-- Reply: {outcome, new entry id or current status}: 'queued', 'not_found',
-- 'sale_not_found', 'sold_out', 'limit_reached' or 'conflict'.
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if not rows[1] then return {'not_found', ''} end
local f = {}
local fields = rows[1][2]
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
if f['t'] ~= ARGV[2] then return {'not_found', ''} end

local sale = redis.call('HMGET', KEYS[3], 'remaining', 'limit')
if not sale[1] then return {'sale_not_found', ''} end
local status = redis.call('HGET', KEYS[5], 's')
if status and status ~= 'failed' then return {'conflict', status} end
local qty = tonumber(f['q'])
if tonumber(sale[1]) < qty then return {'sold_out', ''} end
local held = tonumber(redis.call('HGET', KEYS[4], f['u']) or '0')
if held + qty > tonumber(sale[2]) then return {'limit_reached', ''} end

redis.call('HINCRBY', KEYS[3], 'remaining', -qty)
redis.call('HINCRBY', KEYS[4], f['u'], qty)
redis.call('HSET', KEYS[5], 'u', f['u'], 'q', qty, 's', 'queued', 'a', f['a'])
redis.call('HDEL', KEYS[5], 'r')
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[3]))
local id = redis.call('XADD', KEYS[2], '*', 't', f['t'], 'u', f['u'], 'q', qty,
                      'p', f['p'] or '', 'a', f['a'])
redis.call('XDEL', KEYS[1], ARGV[1])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {'queued', id}
