-- A hook failed, or a stopping worker hands back an order it has not started:
-- schedule the entry's next delivery. It stays pending (on this consumer)
-- until order_claim.lua hands it out again, so it cannot be lost meanwhile.
--
-- KEYS[1] orders stream   KEYS[2] retry schedule
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] entry id   ARGV[4] delay ms
--
-- Only the consumer holding the entry schedules it (another worker may have
-- claimed it meanwhile). Reply: 1 scheduled, 0 not held by this consumer.
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not mine[1] then return 0 end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[4]), ARGV[3])
return 1
