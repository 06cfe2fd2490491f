-- Renew a worker's hold on the orders in its hands, so that a hook running
-- longer than the claim idle time is not mistaken for a dead worker's.
--
-- KEYS[1] orders stream   ARGV[1] group   ARGV[2] consumer   ARGV[3..] entry ids
--
-- XCLAIM ... JUSTID resets an entry's idle time without counting a delivery.
-- Only entries still pending on this consumer are touched: a worker never
-- takes back an entry that another worker has claimed from it.
-- Reply: how many entries were renewed.
local renewed = 0
for i = 3, #ARGV do
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if mine[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
