-- Add (or, with a negative quantity, withdraw) units, atomically with admissions.
-- KEYS[1] sale hash   ARGV[1] quantity
-- A withdrawal may take more than remains (units buyers hold are not taken
-- from them): remaining then goes below zero and no order is admitted until
-- enough units come back. Only the stock itself may not go below zero.
-- Reply: {'ok', remaining after the change}; {'not_found', 0} if the sale does
-- not exist; {'negative_stock', stock} if the stock would go below zero
-- (nothing is changed then).
local sale = redis.call('HMGET', KEYS[1], 'stock', 'remaining')
if not sale[2] then return {'not_found', 0} end
local q = tonumber(ARGV[1])
if tonumber(sale[1]) + q < 0 then return {'negative_stock', tonumber(sale[1])} end
redis.call('HINCRBY', KEYS[1], 'stock', q)
return {'ok', redis.call('HINCRBY', KEYS[1], 'remaining', q)}
