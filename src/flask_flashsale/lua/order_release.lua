-- A stopping worker hands back orders it read but did not start.
--
-- KEYS[1] orders stream   KEYS[2] retry schedule
-- ARGV[1] group   ARGV[2] consumer   ARGV[3..] entry ids
--
-- Only entries still pending on this consumer are handed back. One delivered
-- once (read, never handed to the hook) goes back to the queue undelivered:
-- acknowledged, deleted and added again with the same fields (same ticket,
-- same order id), at the end of the stream, so a restart never counts a
-- delivery against it. One delivered before (a retry, or claimed from a dead
-- worker) keeps its delivery count: it is scheduled as a retry due at once,
-- for whichever worker claims next.
-- Reply: how many entries were handed back.
local released = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if mine[1] then
    if tonumber(mine[1][4]) <= 1 then
      local rows = redis.call('XRANGE', KEYS[1], id, id)
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      if rows[1] then redis.call('XADD', KEYS[1], '*', unpack(rows[1][2])) end
    else
      redis.call('ZADD', KEYS[2], now_ms(), id)
    end
    released = released + 1
  end
end
return released
