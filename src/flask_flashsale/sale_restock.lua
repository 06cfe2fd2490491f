-- Add (or, with a negative quantity, withdraw) units, atomically with admissions.
-- KEYS[1] sale hash   ARGV[1] quantity
-- Reply: remaining after the change; -1 if the sale does not exist; -2 if a
-- withdrawal would take remaining below zero (nothing is changed then).
local remaining = redis.call('HGET', KEYS[1], 'remaining')
if not remaining then return -1 end
local q = tonumber(ARGV[1])
if tonumber(remaining) + q < 0 then return -2 end
redis.call('HINCRBY', KEYS[1], 'stock', q)
return redis.call('HINCRBY', KEYS[1], 'remaining', q)
