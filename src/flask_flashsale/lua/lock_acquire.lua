-- Take a lock and hand out its fencing token, in one atomic step.
--
-- KEYS[1] lock key      KEYS[2] fencing counter (same hash tag, never expires)
-- ARGV[1] holder token (random, proves ownership on release/extend)
-- ARGV[2] lease in ms
--
-- Reply: the new fencing token (1, 2, 3... per lock name) when the lock was
-- free, 0 when someone else holds it. Because SET NX and INCR run in one
-- script, tokens are handed out in the order the lock was acquired: a later
-- holder always carries a larger token than every earlier one.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
