-- Define or replace a sale, atomically with admissions.
-- KEYS[1] sale hash
-- ARGV[1] stock  ARGV[2] price ('' = none)  ARGV[3] starts ms ('' = none)
-- ARGV[4] ends ms ('' = none)  ARGV[5] per-user limit  ARGV[6] info JSON
-- ARGV[7..] optional fields as name, value pairs (a value '' is left out):
-- `pay` payment timeout (ms)
-- Replacing keeps what buyers hold: remaining = stock - (old stock - old
-- remaining). It goes below zero when the new stock is smaller than what is
-- held; no order is admitted then until enough units come back (the API shows 0).
-- Reply: remaining after the change.
local old = redis.call('HMGET', KEYS[1], 'stock', 'remaining')
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
for i = 7, #ARGV - 1, 2 do
  if ARGV[i + 1] ~= '' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return remaining
