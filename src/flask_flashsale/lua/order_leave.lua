-- A worker stops: remove its consumer from a sale's group if nothing is
-- pending on it. (Deleting a consumer deletes its pending entries, which
-- would lose them; a consumer still holding some stays for others to claim.)
--
-- KEYS[1] orders stream   ARGV[1] group   ARGV[2] consumer
-- Reply: 1 removed, 0 kept (or no such stream or group).
local mine = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(mine) ~= 'table' or mine.err or mine[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
