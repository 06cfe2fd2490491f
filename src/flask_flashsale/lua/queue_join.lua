-- Join a sale's waiting room: one atomic step, one round trip.
--
-- KEYS: see queue.lua
-- ARGV[1] user id   ARGV[2] a random seed for the lottery draw
-- ARGV[3] pass lifetime (ms)
-- ARGV[4] the join index of a place the caller found lapsed ('' = none)
--
-- A buyer has one place: joining again returns it, unless its pass lapsed
-- (ready time + pass lifetime passed, or ARGV[4] names it: the web process
-- worked out a lottery place's ready time from the draw); then the buyer
-- takes a new place at the back. The join index comes from one counter
-- (INCR order: Redis decides, not the web servers' clocks). A FIFO place,
-- and any place after a lottery's draw, gets its ready time now (see
-- queue.lua); an early lottery place gets it from the draw.
--
-- Reply: see queue_reply in queue.lua; the outcome is 'queued' (a new place),
-- 'joined' (the same place again), 'sold_out' (no unit left: no new place),
-- 'ended', 'queue_not_open' (before qopen: nothing written), or just
-- {'not_found'} / {'no_queue'}.
local st, err = queue_state(ARGV[2])
if not st then return {err} end
local now = st.now
if st.ends and now >= st.ends then return queue_reply('ended', st, '') end
if st.qopen and now < st.qopen then return queue_reply('queue_not_open', st, '') end

local record = redis.call('HGET', KEYS[3], ARGV[1])
if record then
  local k, ready = string.match(record, '^(%d+) ?(%d*)$')
  local lapsed = k == ARGV[4] or (ready ~= '' and now >= tonumber(ready) + tonumber(ARGV[3]))
  if not lapsed then return queue_reply('joined', st, record) end
end
if st.remaining <= 0 then return queue_reply('sold_out', st, record) end

local k = redis.call('HINCRBY', KEYS[2], 'n', 1)
st.n = k
if st.fair == 'lottery' and not st.early then
  record = tostring(k)
else
  local interval = 1000 / st.rate
  local tau = (queue_burst(st.rate) - 1) * interval
  local j = now
  if st.starts and st.starts > j then j = st.starts end
  st.last = math.ceil(math.max(j, st.tat - tau, st.last))
  st.tat = math.max(st.tat, j) + interval
  redis.call('HSET', KEYS[2], 'tat', fmt(st.tat), 'last', fmt(st.last))
  record = k .. ' ' .. fmt(st.last)
end
redis.call('HSET', KEYS[3], ARGV[1], record)
return queue_reply('queued', st, record)
