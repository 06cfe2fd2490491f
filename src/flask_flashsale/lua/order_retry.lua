-- A hook failed: record the failure and schedule the entry's next delivery.
-- It stays pending (on this consumer) until order_claim.lua hands it out
-- again, so it cannot be lost meanwhile.
--
-- KEYS[1] orders stream   KEYS[2] retry schedule   KEYS[3] attempts hash
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id   ARGV[4] delay ms
-- ARGV[5] '1' when the attempt was started with order_start.lua (its death
-- mark is taken back: the worker lived to report the outcome)
--
-- Only the consumer holding the entry schedules it (another worker may have
-- claimed it meanwhile). Reply: the order's hook failures so far, 0 when the
-- entry is not held by this consumer (nothing is recorded then).
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not mine[1] then return 0 end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[3])
if ARGV[5] == '1' then
  if redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':d', -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[3] .. ':d')
  end
end
return redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':f', 1)
