-- Read a sale's waiting room (one round trip), bringing it up to date first
-- (see queue.lua: a new epoch resets it, a lottery past its start is drawn).
-- Web processes run it at most every ~100 ms per sale, and once for a buyer
-- who polls without a place token.
--
-- KEYS: see queue.lua
-- ARGV[1] user id whose place to read ('' = none)  ARGV[2] a random seed for the draw
--
-- Reply: see queue_reply in queue.lua (outcome 'ok'), or {'not_found'} /
-- {'no_queue'}.
local st, err = queue_state(ARGV[2])
if not st then return {err} end
local record = ''
if ARGV[1] ~= '' then record = redis.call('HGET', KEYS[3], ARGV[1]) or '' end
return queue_reply('ok', st, record)
