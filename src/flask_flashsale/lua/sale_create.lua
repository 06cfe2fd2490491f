-- Define or replace a sale, atomically with admissions.
-- KEYS[1] sale hash
-- ARGV[1] stock  ARGV[2] price ('' = none)  ARGV[3] starts ms ('' = none)
-- ARGV[4] ends ms ('' = none)  ARGV[5] per-user limit  ARGV[6] info JSON
-- ARGV[7] waiting room: 'fifo' or 'lottery' ('' = none)  ARGV[8] admit rate (per second)
-- ARGV[9] queue opens ms ('' = at once)  ARGV[10] a fresh queue epoch
-- ARGV[11..] optional fields as name, value pairs (a value '' is left out):
-- `pay` payment timeout (ms)
-- Replacing keeps what buyers hold: remaining = stock - (old stock - old
-- remaining). It goes below zero when the new stock is smaller than what is
-- held; no order is admitted then until enough units come back (the API shows 0).
-- Replacing a sale with a waiting room keeps its queue (its epoch) when the
-- fairness mode stays the same; another mode starts a new queue (a new epoch:
-- the queue scripts reset the places, and earlier passes are refused).
-- Reply: remaining after the change.
local old = redis.call('HMGET', KEYS[1], 'stock', 'remaining')
local old_queue = redis.call('HMGET', KEYS[1], 'fair', 'queue')
local stock = tonumber(ARGV[1])
local remaining = stock
if old[1] then
  remaining = stock - (tonumber(old[1]) - tonumber(old[2]))
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'stock', stock, 'remaining', remaining, 'limit', ARGV[5],
           'info', ARGV[6])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'price', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'starts', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'ends', ARGV[4]) end
for i = 11, #ARGV - 1, 2 do
  if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if ARGV[7] ~= '' then
  local epoch = ARGV[10]
  if old_queue[1] == ARGV[7] and old_queue[2] then epoch = old_queue[2] end
  redis.call('HSET', KEYS[1], 'fair', ARGV[7], 'rate', ARGV[8], 'queue', epoch)
  if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'qopen', ARGV[9]) end
end
return remaining
